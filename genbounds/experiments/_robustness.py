"""`genbounds robustness`: attacks beside certified radii on a Lipschitz-margin-trained MLP.

    genbounds robustness [--out DIR] [--lipschitz-margin 0.5] [--norm l2] ...

Trains an MLP on digits (inputs in [0, 1]) with Lipschitz-margin training (Tsuzuku et al. 2018),
then measures on the test set, against the radius: clean accuracy, FGSM and PGD robust
accuracy (upper bounds on the robust accuracy) and certified accuracy (a lower bound, from the
network's certified Lipschitz bound). Writes DIR/results.json and DIR/robustness.png.
Registered in `genbounds.experiments.cli`; see docs/robustness.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from genbounds.experiments._common import (
    UserError,
    box_of,
    console,
    lock,
    number_list,
    prepare_out,
    run_header,
)
from genbounds.files import atomic_write, save_figure


def _grid(text: str) -> list[float]:
    """The radii of ``--eps``, sorted."""
    return sorted(number_list(text, flag="--eps", what=">= 0",
                              valid=lambda v: v >= 0.0 and math.isfinite(v)))


def add_parser(sub: Any) -> None:
    """Registers the subcommand on the CLI's subparsers."""
    p = sub.add_parser("robustness", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="PGD / FGSM robust accuracy beside certified accuracy "
                                          "of a Lipschitz-margin-trained MLP (< 3 min)")
    p.add_argument("--out", default="genbounds-robustness",
                   help="directory for results.json and robustness.png")
    p.add_argument("--dataset", default="digits", choices=("digits", "mnist1d", "synthetic",
                                                           "mnist"))
    p.add_argument("--n", type=int, default=None, help="training examples (default: all)")
    p.add_argument("--depth", type=int, default=1, help="hidden layers of the MLP (default 1)")
    p.add_argument("--width", type=int, default=256, help="hidden width (default 256)")
    p.add_argument("--lipschitz-margin", type=float, default=0.5,
                   help="c of Lipschitz-margin training (0: plain cross-entropy; default 0.5)")
    p.add_argument("--max-epochs", type=int, default=60, help="training epochs (default 60)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size (default 64)")
    p.add_argument("--norm", default="l2", choices=("l2", "linf"), help="attack norm")
    p.add_argument("--eps", type=_grid, default=None,
                   help="comma-separated radii (default: 0 to 2 in steps of 0.1 for l2, 0 to "
                        "0.25 for linf)")
    p.add_argument("--steps", type=int, default=40, help="PGD steps (default 40)")
    p.add_argument("--restarts", type=int, default=2, help="PGD random restarts (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a reduced run (fewer epochs and radii)")
    p.add_argument("--delta", type=float, default=0.05, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_robustness)


def _save_plot(curve: Any, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.3))
    curve.plot(ax)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def crossing(curve: Any, params: Any, apply_fn: Any, X: Any, y: Any, box: Any,
             level: float = 0.5) -> dict:
    """At the radius where PGD robust accuracy reaches `level` (interpolated on the grid):
    PGD robust accuracy (re-run there) and certified accuracy (exact, from the radii)."""
    import jax

    from genbounds import pgd

    e = curve.eps_at(level)
    if not math.isfinite(e):
        return {"eps": None}
    r = pgd(params, X=X, y=y, apply_fn=apply_fn, eps=e, norm=curve.norm, steps=curve.settings["steps"],
            restarts=curve.settings["restarts"], box=box, key=jax.random.key(99))
    cert = float(curve.radii.accuracy([e])[0])
    return {"eps": e, "pgd_accuracy": r.robust_accuracy, "certified_accuracy": cert,
            "ratio": cert / r.robust_accuracy if r.robust_accuracy > 0 else None}


def cmd_robustness(args: argparse.Namespace) -> int:
    from rich.table import Table

    from genbounds import robustness
    from genbounds.data import load
    from genbounds.train import train

    con = console(min_width=100)
    if args.lipschitz_margin < 0 or not math.isfinite(args.lipschitz_margin):
        raise UserError(f"--lipschitz-margin must be a number >= 0, got {args.lipschitz_margin}")
    out = prepare_out(args.out)
    lock(out)  # two runs into one directory: the second is refused, no result is lost
    (out / "results.json").unlink(missing_ok=True)
    if args.quick:
        args.max_epochs = min(args.max_epochs, 15)
    eps = args.eps
    if eps is None:
        top, num = (2.0, 21) if args.norm == "l2" else (0.25, 11)
        if args.quick:
            num = (num + 1) // 2
        eps = np.linspace(0.0, top, num).tolist()
    start = time.perf_counter()
    dataset = load(args.dataset, seed=args.seed, n=args.n)
    spec = {"kind": "mlp", "depth": args.depth, "width": args.width}
    with con.status("training (Lipschitz-margin)"):
        result = train(spec, dataset, optimizer="adam", lr=args.lr, batch_size=args.batch_size,
                       max_epochs=args.max_epochs, stop=None, seed=args.seed,
                       lipschitz_margin=args.lipschitz_margin)
    train_s = time.perf_counter() - start
    box = box_of(dataset)
    X, y = dataset.X_test, dataset.y_test
    with con.status("attacks and certificates"):
        curve = robustness(result.params, apply_fn=result.apply_fn, X=X, y=y, eps=eps,
                           norm=args.norm, steps=args.steps, restarts=args.restarts, box=box)
        cross = crossing(curve, result.params, result.apply_fn, X, y, box)
    table = Table(title=f"genbounds robustness: {args.dataset}, MLP {args.depth}x{args.width}, "
                        f"Lipschitz margin c = {args.lipschitz_margin:g} ({args.norm}, test set)")
    for col in ("eps", "PGD robust acc", "FGSM robust acc", "certified acc"):
        table.add_column(col, justify="right")
    for i, e in enumerate(curve.eps):
        table.add_row(f"{e:.3g}", f"{curve.pgd_accuracy[i]:.3f}",
                      f"{curve.fgsm_accuracy[i]:.3f}", f"{curve.certified_accuracy[i]:.3f}")
    elapsed = time.perf_counter() - start
    payload = {
        **run_header(args),
        "model": spec, "train_accuracy": result.train_acc, "test_accuracy": result.test_acc,
        "train_seconds": train_s, "seconds": elapsed, "curve": curve.to_dict(),
        "at_pgd_50": cross, "box": None if box is None else list(box),
    }
    _save_plot(curve, out / "robustness.png",
               f"{args.dataset} MLP {args.depth}x{args.width}, LMT c={args.lipschitz_margin:g}: "
               f"certified vs PGD ({args.norm})")
    atomic_write(out / "results.json", json.dumps(payload, indent=2).encode())
    con.print(table)
    lt = curve.radii.lipschitz_tight
    con.print(
        f"clean test accuracy {curve.clean_accuracy:.3f}; certified Lipschitz bound of the "
        f"logits {curve.radii.lipschitz:.4g} (tight: {lt:.4g}); "
        f"{curve.violations} certified examples broken by PGD (must be 0).")
    if cross["eps"] is not None:
        con.print(
            f"At eps = {cross['eps']:.3g}, where PGD robust accuracy reaches 50%: PGD "
            f"{cross['pgd_accuracy']:.3f}, certified {cross['certified_accuracy']:.3f} "
            f"(ratio {cross['ratio']:.2f}).")
    con.print(f"Took {elapsed:.1f} s. Wrote {out / 'results.json'} and "
                  f"{out / 'robustness.png'}")
    return 0
