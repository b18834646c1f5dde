"""`genbounds demo` and `genbounds sweep`: every bound against the fraction of random labels.

For each label-noise level one MLP is trained to 100% training accuracy (Zhang et al. 2017:
a net fits random labels as well as true ones), every bound of `genbounds.report` is computed,
and the bounds are shown beside the measured test error in a table and a plot
(``OUT/bounds.png``), and written to ``OUT/results.json``. `demo` is the sweep over true,
half-random and random labels on digits.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from genbounds.experiments._common import (
    console,
    input_bound,
    lock,
    num,
    number_list,
    prepare_out,
    rademacher_estimate,
    run_header,
    train_one,
)
from genbounds.experiments._progress import Progress
from genbounds.files import atomic_write, save_figure

_DEMO_NOISE = (0.0, 0.5, 1.0)
_SHOWN = ("dziugaite_roy", "vc", "spectral", "pac_bayes", "golowich", "golowich_l1inf",
          "spectral_init", "pac_bayes_init")
_SHORT = {"dziugaite_roy": "D&R", "vc": "VC", "spectral": "BFT", "pac_bayes": "PAC-Bayes",
          "golowich": "Golowich", "golowich_l1inf": "Gol. l1inf", "spectral_init": "BFT (init)",
          "pac_bayes_init": "PB (init)"}


def noise_levels(text: str) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0], each in [0, 1] (the type of ``--label-noise``)."""
    return number_list(text, flag="--label-noise", what="in [0, 1]",
                       valid=lambda p: 0.0 <= p <= 1.0)


def record(dataset: Any, noise: float, result: Any, rep: Any, seconds: float) -> dict:
    """One net's record for results.json."""
    return {
        "dataset": dataset.name,
        "label_noise": noise,
        "n_train": int(len(dataset.y_train)),
        "n_test": int(len(dataset.y_test)),
        "train_error": rep.train_error,
        "test_error": rep.test_error,
        "epochs": int(result.epochs),
        "reached": bool(result.reached),
        "train_seconds": seconds,
        "bounds": [
            {"name": b.name, "value": float(b.value), "complexity": num(b.complexity),
             "vacuous": bool(b.vacuous), "estimated": bool(b.estimated), "delta": b.delta,
             "n": b.n, "reference": b.reference, "notes": list(b.notes)}
            for b in rep.ranked()
        ],
        "measures": [{"name": m.name, "complexity": num(m.complexity), "estimated": m.estimated,
                      "notes": list(m.notes)} for m in rep.measures],
        "skipped": [{"name": name, "reason": why} for name, why in rep.skipped],
        "seconds": dict(rep.seconds),
    }


def _report_for(dataset: Any, result: Any, args: argparse.Namespace, estimate: Any = None):
    from genbounds import report

    dr = {"steps": 3000, "num_mc_samples": 1000} if getattr(args, "pac_bayes", False) else None
    return report(result.params, X=dataset.X_train, y=dataset.y_train,
                  apply_fn=result.apply_fn, init_params=result.init_params, delta=args.delta,
                  X_test=dataset.X_test, y_test=dataset.y_test, rademacher_estimate=estimate,
                  input_bound=input_bound(dataset), flatness=getattr(args, "flatness", True),
                  dziugaite_roy_options=dr)


def _shown(records: list[dict]) -> list[str]:
    """The bounds of `_SHOWN` that some record has, in that order."""
    return [n for n in _SHOWN if any(b["name"] == n for r in records for b in r["bounds"])]


def sweep_table(records: list[dict], title: str):
    """The rich table of a sweep: one row per label-noise level, one column per bound."""
    from rich.table import Table

    names = _shown(records)
    table = Table(title=title)
    for col in ("label noise", "train error", "test error", "epochs", "Rad (MC)",
                *(_SHORT.get(n, n) for n in names)):
        table.add_column(col, justify="right")
    for r in records:
        values = {b["name"]: b["value"] for b in r["bounds"]}
        rad = next((m["complexity"] for m in r["measures"] if m["name"] == "rademacher"), None)
        cells = [f"{r['label_noise']:.2f}", f"{r['train_error']:.3f}", f"{r['test_error']:.3f}",
                 str(r["epochs"]), "-" if rad is None else f"{rad:.3f}"]
        cells += [f"{values[n]:.3g}" if n in values else "-" for n in names]
        table.add_row(*cells)
    return table


def sweep_figure(records: list[dict]):
    """The bounds-vs-label-noise figure; its series carry the table's column names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    noise = [r["label_noise"] for r in records]
    for name in _shown(records):
        vals = [next((b["value"] for b in r["bounds"] if b["name"] == name), np.nan)
                for r in records]
        ax.plot(noise, vals, marker="o", label=_SHORT.get(name, name))
    ax.plot(noise, [max(r["test_error"], 1e-3) for r in records], "k-s", lw=2.5,
            label="test error")
    ax.plot(noise, [max(r["train_error"], 1e-3) for r in records], "k:", label="train error")
    ax.axhline(1.0, color="gray", ls="--", lw=1, label="vacuous (1)")
    ax.set_yscale("log")
    ax.set_xlabel("fraction of training labels randomised")
    ax.set_ylabel("bound on the 0-1 test error (errors of 0 drawn at 1e-3)")
    ax.set_title(f"genbounds: bounds vs label noise ({records[0]['dataset']})")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def run_sweep(args: argparse.Namespace, levels: Sequence[float], title: str) -> int:
    """Trains and reports one net per level; writes OUT/results.json and OUT/bounds.png."""
    con = console()
    out = prepare_out(args.out)
    lock(out)
    # A run that fails half-way must not leave an older, complete-looking results.json beside a
    # new plot: the old one goes first, the new one is written last, atomically.
    (out / "results.json").unlink(missing_ok=True)
    start = time.perf_counter()
    records = []
    estimate = None
    with Progress(f"genbounds {args.command}", console=con) as progress:
        for noise in levels:
            bar = progress.bar(f"training, label noise {noise:.2f}", total=args.max_epochs)

            def on_epoch(d, bar=bar):
                bar.update(d["epoch"], f"train acc {d['train_acc']:.3f}")

            dataset, _, result, seconds = train_one(args, noise, on_epoch)
            bar.close(f"{result.epochs} epochs, train acc {result.train_acc:.3f}")
            if estimate is None or estimate.n != len(dataset.X_train):
                with progress.phase("Rademacher complexity (Monte Carlo)"):
                    estimate = rademacher_estimate(dataset, args)  # labels do not enter it
            with progress.phase(f"bounds, label noise {noise:.2f}"):
                rep = _report_for(dataset, result, args, estimate)
            records.append(record(dataset, noise, result, rep, seconds))
    payload = {**run_header(args), "delta": args.delta, "records": records}
    save_figure(sweep_figure(records), out / "bounds.png")
    atomic_write(out / "results.json", json.dumps(payload, indent=2).encode())
    con.print(sweep_table(records, title))
    con.print(
        f"Each value is an upper bound on the test error holding with probability >= "
        f"{1 - args.delta:g} (>= 1 is vacuous). 'Rad (MC)' is the Monte-Carlo Rademacher "
        f"complexity of the architecture (a lower estimate; about 1: it fits random signs, "
        f"Zhang et al. 2017). Took {time.perf_counter() - start:.1f} s."
    )
    con.print(f"Wrote {out / 'results.json'} and {out / 'bounds.png'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.quick:
        args.n, args.max_epochs, args.width = 300, 400, 128
        args.rademacher_draws, args.rademacher_steps = 2, 100
    return run_sweep(args, _DEMO_NOISE,
                     "genbounds demo: digits, true / half-random / random labels")


def cmd_sweep(args: argparse.Namespace) -> int:
    return run_sweep(args, args.label_noise, f"genbounds sweep: {args.dataset}")

