"""The `genbounds` command line: demo, train, report, sweep.

    genbounds demo [--out DIR]          the main job: true / noisy / random labels on digits
    genbounds train --out RUN_DIR ...   train one net and keep it
    genbounds report RUN_DIR            every bound for a trained net
    genbounds sweep --label-noise 0,0.2,0.5,1 --out DIR
    genbounds reproduce dziugaite-roy [--dataset digits|synthetic|mnist1d|mnist]

Built on genbounds.data and genbounds.train (the harness); the bound code never imports this.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genbounds._files import (
    CorruptFile,
    DirectoryBusy,
    DirectoryLock,
    atomic_write,
    read_checked,
    read_json_checked,
    write_checked,
    write_json_checked,
)

PARAMS_MAGIC = b"GENBOUNDS-PARAMS-1\n"

_DEMO_NOISE = (0.0, 0.5, 1.0)
_SHOWN = ("dziugaite_roy", "vc", "spectral", "pac_bayes", "golowich", "golowich_l1inf",
          "spectral_init", "pac_bayes_init")


_SHORT = {"dziugaite_roy": "D&R", "vc": "VC", "spectral": "BFT", "pac_bayes": "PAC-Bayes",
          "golowich": "Golowich", "golowich_l1inf": "Gol. l1inf", "spectral_init": "BFT (init)",
          "pac_bayes_init": "PB (init)"}


def _console():
    from rich.console import Console

    return Console(width=max(Console().width, 132))


def _prepare_out(path: str | os.PathLike) -> Path:
    """Creates the output directory and checks it is writable, before any work is done."""
    out = Path(path).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".genbounds-write-test-"):
            pass
    except OSError as e:
        raise SystemExit(
            f"genbounds: cannot write to the output directory {str(out)!r}: {e}") from None
    return out


_LOCKS: list[DirectoryLock] = []  # released by `main` when the command returns


def _lock(out: Path) -> None:
    """Takes the output directory's lock, held until the command returns (or the process
    dies): a second run on the same directory is refused instead of clobbering this one."""
    try:
        _LOCKS.append(DirectoryLock(out).acquire())
    except DirectoryBusy as e:
        raise SystemExit(f"genbounds: {e}") from None


def _noise_levels(text: str) -> list[float]:
    try:
        levels = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--label-noise must be comma-separated numbers in [0, 1], got {text!r}"
        ) from None
    if not levels or any(not (0.0 <= p <= 1.0) for p in levels):
        raise argparse.ArgumentTypeError(
            f"--label-noise must be comma-separated numbers in [0, 1], got {text!r}"
        )
    return levels


def _record(dataset: Any, noise: float, result: Any, rep: Any, seconds: float) -> dict:
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
            {"name": b.name, "value": float(b.value), "complexity": _num(b.complexity),
             "vacuous": bool(b.vacuous), "estimated": bool(b.estimated), "delta": b.delta,
             "n": b.n, "reference": b.reference, "notes": list(b.notes)}
            for b in rep.ranked()
        ],
        "measures": [{"name": m.name, "complexity": _num(m.complexity), "estimated": m.estimated,
                      "notes": list(m.notes)} for m in rep.measures],
        "skipped": [{"name": name, "reason": why} for name, why in rep.skipped],
        "seconds": dict(rep.seconds),
    }


def _num(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _train_one(args: argparse.Namespace, noise: float, progress: Any = None):
    from genbounds.data import load
    from genbounds.train import train

    corruption = "random_labels" if noise == 1.0 else None
    dataset = load(args.dataset, seed=args.seed, n=args.n, label_noise=0.0 if corruption else noise,
                   corruption=corruption)
    spec = {"kind": "mlp", "depth": args.depth, "width": args.width}
    start = time.perf_counter()
    result = train(spec, dataset, optimizer="adam", lr=args.lr, batch_size=args.batch_size,
                   max_epochs=args.max_epochs, stop="fit", seed=args.seed, progress=progress,
                   checkpoint_dir=getattr(args, "checkpoint_dir", None))
    return dataset, spec, result, time.perf_counter() - start


def _rademacher_estimate(dataset: Any, args: argparse.Namespace):
    """Monte-Carlo Rademacher complexity of the architecture (one output) on the inputs."""
    import jax

    from genbounds import NetworkClass, rademacher
    from genbounds.train import MLP

    if not args.rademacher_draws:
        return None
    # The same architecture with one output: Zhang et al.'s class that fits random signs.
    rclass = NetworkClass(MLP(features=(args.width,) * args.depth, num_classes=1),
                          steps=args.rademacher_steps)
    X = np.asarray(dataset.X_train, np.float64).reshape(len(dataset.X_train), -1)
    return rademacher(rclass, X, num_draws=args.rademacher_draws,
                      key=jax.random.key(args.seed))


def _report_for(dataset: Any, result: Any, args: argparse.Namespace, estimate: Any = None):
    from genbounds import report

    dr = {"steps": 3000, "num_mc_samples": 1000} if getattr(args, "pac_bayes", False) else None
    return report(result.params, X_train=dataset.X_train, y_train=dataset.y_train,
                  apply_fn=result.apply_fn, init_params=result.init_params, delta=args.delta,
                  X_test=dataset.X_test, y_test=dataset.y_test, rademacher_estimate=estimate,
                  input_bound=_input_bound(dataset), flatness=getattr(args, "flatness", True),
                  dziugaite_roy_options=dr)


def _input_bound(dataset: Any) -> float | None:
    """B = sqrt(dim) for the datasets whose inputs lie in [0, 1] by construction."""
    if dataset.name in ("digits", "mnist") and dataset.metadata.get("corruption") != "gaussian":
        return float(np.sqrt(np.prod(np.shape(dataset.X_train)[1:])))
    return None


def _table(records: list[dict], title: str):
    from rich.table import Table

    names = [n for n in _SHOWN if any(b["name"] == n for r in records for b in r["bounds"])]
    table = Table(title=title)
    for col in ("label noise", "train err", "test err", "epochs", "Rad (MC)",
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


def _plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    noise = [r["label_noise"] for r in records]
    names = [n for n in _SHOWN if any(b["name"] == n for r in records for b in r["bounds"])]
    for name in names:
        vals = [next((b["value"] for b in r["bounds"] if b["name"] == name), np.nan)
                for r in records]
        ax.plot(noise, vals, marker="o", label=name)
    ax.plot(noise, [max(r["test_error"], 1e-3) for r in records], "k-s", lw=2.5,
            label="test error (measured)")
    ax.plot(noise, [max(r["train_error"], 1e-3) for r in records], "k:",
            label="train error (0 drawn at 1e-3)")
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("fraction of training labels randomised")
    ax.set_ylabel("bound on the 0-1 test error")
    ax.set_title(f"genbounds: bounds vs label noise ({records[0]['dataset']})")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sweep(args: argparse.Namespace, levels: Sequence[float], title: str) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = _console()
    out = _prepare_out(args.out)
    _lock(out)
    # A run that fails half-way must not leave an older, complete-looking results.json beside a
    # new plot: the old one goes first, the new one is written last, atomically.
    (out / "results.json").unlink(missing_ok=True)
    start = time.perf_counter()
    records = []
    estimate = None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        for noise in levels:
            task = progress.add_task(f"training, label noise {noise:.2f}", total=args.max_epochs,
                                     info="")

            def on_epoch(d, task=task):
                progress.update(task, completed=d["epoch"],
                                info=f"train acc {d['train_acc']:.3f}")

            dataset, _, result, seconds = _train_one(args, noise, on_epoch)
            progress.update(task, description=f"bounds, label noise {noise:.2f}",
                            completed=args.max_epochs)
            if estimate is None or estimate.n != len(dataset.X_train):
                progress.update(task, description="Rademacher complexity (Monte Carlo)")
                estimate = _rademacher_estimate(dataset, args)  # labels do not enter it
            rep = _report_for(dataset, result, args, estimate)
            records.append(_record(dataset, noise, result, rep, seconds))
            progress.remove_task(task)
    payload = {
        "genbounds": _version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["genbounds", *sys.argv[1:]]),
        "config": {k: v for k, v in vars(args).items() if k not in ("func",)},
        "delta": args.delta,
        "records": records,
    }
    _plot(records, out / "bounds.png")
    atomic_write(out / "results.json", json.dumps(payload, indent=2).encode())
    console.print(_table(records, title))
    console.print(
        f"Each value is an upper bound on the test error holding with probability >= "
        f"{1 - args.delta:g} (>= 1 is vacuous). 'Rad (MC)' is the Monte-Carlo Rademacher "
        f"complexity of the architecture (a lower estimate; about 1: it fits random signs, "
        f"Zhang et al. 2017). Took {time.perf_counter() - start:.1f} s."
    )
    console.print(f"Wrote {out / 'results.json'} and {out / 'bounds.png'}")
    return 0


def _version() -> str:
    from genbounds import __version__

    return __version__


def cmd_demo(args: argparse.Namespace) -> int:
    if args.quick:
        args.n, args.max_epochs, args.width = 300, 400, 128
        args.rademacher_draws, args.rademacher_steps = 2, 100
    return _sweep(args, _DEMO_NOISE, "genbounds demo: digits, true / half-random / random labels")


def cmd_sweep(args: argparse.Namespace) -> int:
    return _sweep(args, args.label_noise, f"genbounds sweep: {args.dataset}")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from genbounds._dr_experiment import reproduce_dziugaite_roy

    out = _prepare_out(args.out)
    _lock(out)
    reproduce_dziugaite_roy(args.dataset, out, seed=args.seed, download=args.download)
    _console().print(f"Wrote {out / 'results.json'} and {out / 'summary.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import flax.serialization

    console = _console()
    out = _prepare_out(args.out)
    _lock(out)
    args.checkpoint_dir = str(out)
    dataset, spec, result, seconds = _train_one(args, args.label_noise)
    state = {"params": result.params, "init_params": result.init_params}
    write_checked(out / "params.msgpack", flax.serialization.msgpack_serialize(
        flax.serialization.to_state_dict(state)), PARAMS_MAGIC)
    run = {"dataset": args.dataset, "seed": args.seed, "n": args.n,
           "label_noise": args.label_noise, "model": spec, "lr": args.lr,
           "batch_size": args.batch_size, "max_epochs": args.max_epochs,
           "epochs": int(result.epochs), "reached": bool(result.reached),
           "train_acc": result.train_acc, "test_acc": result.test_acc, "seconds": seconds}
    write_json_checked(out / "run.json", run)
    console.print(f"trained in {seconds:.1f} s ({result.epochs} epochs, train acc "
                  f"{result.train_acc:.3f}, test acc {result.test_acc:.3f}); wrote {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import flax.serialization

    from genbounds._checks import check_finite_tree
    from genbounds.data import load
    from genbounds.train import make_model

    console = _console()
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise SystemExit(f"genbounds report: {str(run_dir)!r} is not a directory")
    _lock(run_dir)
    try:
        run = read_json_checked(run_dir / "run.json")
        raw = read_checked(run_dir / "params.msgpack", PARAMS_MAGIC, what="parameter file")
    except CorruptFile as e:
        raise SystemExit(f"genbounds report: {e}; re-run `genbounds train`") from None
    except OSError as e:
        raise SystemExit(f"genbounds report: {str(run_dir)!r} is not a run directory written by "
                         f"`genbounds train` ({e})") from None
    try:
        state = flax.serialization.msgpack_restore(raw)
        params, init_params = state["params"], state["init_params"]
        check_finite_tree(params, "params")
        check_finite_tree(init_params, "init_params")
    except Exception as e:  # noqa: BLE001 - any decoding failure is a corrupt file
        raise SystemExit(
            f"genbounds report: {run_dir / 'params.msgpack'} is unusable ({e})") from None
    corruption = "random_labels" if run["label_noise"] == 1.0 else None
    dataset = load(run["dataset"], seed=run["seed"], n=run["n"],
                   label_noise=0.0 if corruption else run["label_noise"], corruption=corruption)
    model = make_model(num_classes=dataset.num_classes, **run["model"])

    def apply_fn(params, X):
        return model.apply({"params": params}, np.asarray(X, np.float32))

    from genbounds import report

    args.width, args.depth, args.seed = run["model"]["width"], run["model"]["depth"], run["seed"]
    rep = report(params, X_train=dataset.X_train, y_train=dataset.y_train,
                 apply_fn=apply_fn, init_params=init_params, delta=args.delta,
                 X_test=dataset.X_test, y_test=dataset.y_test,
                 rademacher_estimate=_rademacher_estimate(dataset, args))
    console.print(rep.to_text())
    atomic_write(run_dir / "report.json", json.dumps(
        {"records": rep.to_records(), "train_error": rep.train_error,
         "test_error": rep.test_error}, indent=2).encode())
    console.print(f"Wrote {run_dir / 'report.json'}")
    return 0


def _add_training(p: argparse.ArgumentParser, *, n: int | None, width: int, epochs: int) -> None:
    p.add_argument("--dataset", default="digits", choices=("digits", "mnist1d", "synthetic",
                                                           "mnist"),
                   help="dataset (default: digits, shipped with scikit-learn)")
    p.add_argument("--n", type=int, default=n, help="training examples (default: all)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers of the MLP (default 2)")
    p.add_argument("--width", type=int, default=width, help=f"hidden width (default {width})")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=32, help="minibatch size (default 32)")
    p.add_argument("--max-epochs", type=int, default=epochs,
                   help=f"epoch budget; training stops at 100%% train accuracy (default {epochs})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--delta", type=float, default=0.05,
                   help="each bound holds with probability >= 1 - delta (default 0.05)")
    p.add_argument("--rademacher-draws", type=int, default=4,
                   help="sign vectors for the Monte-Carlo Rademacher estimate (0: skip it)")
    p.add_argument("--rademacher-steps", type=int, default=150,
                   help="training steps per sign vector (default 150)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genbounds",
        description="Generalisation bounds of trained neural networks. Start with "
                    "`genbounds demo`: it trains a small net on true, half-random and random "
                    "labels and shows how every bound compares with the measured test error.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the main job: bounds vs label noise on digits (< 2 min)")
    p.add_argument("--out", default="genbounds-out",
                   help="directory for results.json and bounds.png (default: ./genbounds-out)")
    p.add_argument("--quick", action="store_true", help="a reduced run (smaller net and data)")
    p.add_argument("--pac-bayes", action="store_true",
                   help="also optimise the Dziugaite & Roy (2017) PAC-Bayes bound for each net "
                        "(minutes; its value bounds the stochastic net's error)")
    p.add_argument("--no-flatness", dest="flatness", action="store_false",
                   help="skip the flatness measures (top Hessian eigenvalue, sigma')")
    _add_training(p, n=None, width=256, epochs=800)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("reproduce", help="reproduce a paper's experiment: dziugaite-roy")
    p.add_argument("experiment", choices=("dziugaite-roy",),
                   help="dziugaite-roy: non-vacuous PAC-Bayes bound (Dziugaite & Roy 2017)")
    p.add_argument("--dataset", default="digits", choices=("digits", "synthetic", "mnist1d",
                                                           "mnist"),
                   help="digits (default, ~20 s), synthetic (m = 55000, 784-600-1, ~10 min), "
                        "mnist1d, or mnist (the paper's T-600 setting; needs the MNIST files)")
    p.add_argument("--out", default="genbounds-dziugaite-roy", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--download", action="store_true",
                   help="allow downloading MNIST into the cache directory")
    p.add_argument("--delta", type=float, default=0.025, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("sweep", help="bounds vs label noise on your choice of data and net")
    p.add_argument("--label-noise", type=_noise_levels, default=[0.0, 0.2, 0.5, 1.0],
                   help="comma-separated fractions of random labels (default 0,0.2,0.5,1)")
    p.add_argument("--out", default="genbounds-sweep", help="output directory")
    _add_training(p, n=None, width=256, epochs=800)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("train", help="train one net and save it to a run directory")
    p.add_argument("--out", required=True, help="run directory (checkpoints, params, run.json)")
    p.add_argument("--label-noise", type=float, default=0.0,
                   help="fraction of training labels randomised, in [0, 1] (default 0)")
    _add_training(p, n=None, width=256, epochs=800)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("report", help="every bound for a net saved by `genbounds train`")
    p.add_argument("run_dir", help="the directory given to `genbounds train --out`")
    p.add_argument("--delta", type=float, default=0.05, help="confidence parameter")
    p.add_argument("--rademacher-draws", type=int, default=4,
                   help="sign vectors for the Monte-Carlo Rademacher estimate (0: skip it)")
    p.add_argument("--rademacher-steps", type=int, default=150,
                   help="training steps per sign vector (default 150)")
    p.set_defaults(func=cmd_report)
    return parser



# Integer options: (attribute, flag, minimum); None values (e.g. --n default) mean "all".
_INT_OPTIONS = (("n", "--n", 1), ("depth", "--depth", 1), ("width", "--width", 1),
                ("batch_size", "--batch-size", 1), ("max_epochs", "--max-epochs", 1),
                ("seed", "--seed", 0), ("rademacher_steps", "--rademacher-steps", 1))


def _check_options(args: argparse.Namespace) -> str | None:
    """The range of every numeric option; a message for the first one out of range."""
    for attr, flag, low in _INT_OPTIONS:
        v = getattr(args, attr, None)
        if v is not None and v < low:
            return f"{flag} must be an integer >= {low}, got {v}"
    draws = getattr(args, "rademacher_draws", None)
    if draws is not None and draws != 0 and draws < 2:
        return (f"--rademacher-draws must be 0 (skip the estimate) or an integer >= 2 (its "
                f"standard error needs two draws), got {draws}")
    if not (0.0 < args.delta < 1.0):
        return f"--delta must lie in (0, 1), got {args.delta}"
    lr = getattr(args, "lr", None)
    if lr is not None and not (math.isfinite(lr) and lr > 0.0):
        return f"--lr must be a finite number > 0, got {lr}"
    noise = getattr(args, "label_noise", None)
    if isinstance(noise, float) and not (0.0 <= noise <= 1.0):
        return f"--label-noise must lie in [0, 1], got {noise}"
    return None

def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = _check_options(args)
    if problem:
        parser.error(problem)
    try:
        return int(args.func(args) or 0)
    except ValueError as e:
        print(f"genbounds {args.command}: {e}", file=sys.stderr)
        return 2
    finally:
        while _LOCKS:
            _LOCKS.pop().release()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
