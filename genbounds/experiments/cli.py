"""The `genbounds` command line: demo, train, report, sweep.

    genbounds demo [--out DIR]          the main job: true / noisy / random labels on digits
    genbounds train --out RUN_DIR ...   train one net and keep it
    genbounds report RUN_DIR            every bound for a trained net
    genbounds report --model pkg.nets:model --checkpoint params.msgpack --data data.npz
    genbounds sweep --label-noise 0,0.2,0.5,1 --out DIR
    genbounds study [--quick] [--out DIR]  Jiang et al. (2020): which measure ranks the nets
    genbounds reproduce dziugaite-roy [--dataset digits|synthetic|mnist1d|mnist]
    genbounds reproduce risk-certificate [--dataset digits|digits-binary|mnist1d|synthetic|mnist]
    genbounds robustness [--out DIR]     PGD / FGSM beside certified accuracy (docs/robustness.md)

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

from genbounds.experiments._progress import Progress
from genbounds.files._files import (
    CorruptFile,
    DirectoryBusy,
    DirectoryLock,
    atomic_write,
    read_checked,
    read_json_checked,
    save_figure,
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
    return report(result.params, X=dataset.X_train, y=dataset.y_train,
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


def _figure(records: list[dict]):
    """The bounds-vs-label-noise figure; its series carry the table's column names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    noise = [r["label_noise"] for r in records]
    names = [n for n in _SHOWN if any(b["name"] == n for r in records for b in r["bounds"])]
    for name in names:
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


def _plot(records: list[dict], path: Path) -> None:
    save_figure(_figure(records), path)


def _sweep(args: argparse.Namespace, levels: Sequence[float], title: str) -> int:
    console = _console()
    out = _prepare_out(args.out)
    _lock(out)
    # A run that fails half-way must not leave an older, complete-looking results.json beside a
    # new plot: the old one goes first, the new one is written last, atomically.
    (out / "results.json").unlink(missing_ok=True)
    start = time.perf_counter()
    records = []
    estimate = None
    with Progress(f"genbounds {args.command}", console=console) as progress:
        for noise in levels:
            bar = progress.bar(f"training, label noise {noise:.2f}", total=args.max_epochs)

            def on_epoch(d, bar=bar):
                bar.update(d["epoch"], f"train acc {d['train_acc']:.3f}")

            dataset, _, result, seconds = _train_one(args, noise, on_epoch)
            bar.close(f"{result.epochs} epochs, train acc {result.train_acc:.3f}")
            if estimate is None or estimate.n != len(dataset.X_train):
                with progress.phase("Rademacher complexity (Monte Carlo)"):
                    estimate = _rademacher_estimate(dataset, args)  # labels do not enter it
            with progress.phase(f"bounds, label noise {noise:.2f}"):
                rep = _report_for(dataset, result, args, estimate)
            records.append(_record(dataset, noise, result, rep, seconds))
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
    if args.experiment == "risk-certificate":
        from genbounds.experiments._risk_certificate import reproduce_risk_certificate as run
    else:
        from genbounds.experiments._dziugaite_roy import reproduce_dziugaite_roy as run

        if args.dataset == "digits-binary":  # D&R's digits are already binary
            args.dataset = "digits"
    out = _prepare_out(args.out or f"genbounds-{args.experiment}")
    _lock(out)
    run(args.dataset, out, seed=args.seed, download=args.download)
    _console().print(f"Wrote {out / 'results.json'} and {out / 'summary.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import flax.serialization

    console = _console()
    out = _prepare_out(args.out)
    _lock(out)
    args.checkpoint_dir = str(out)
    with Progress("genbounds train", console=console) as progress:
        bar = progress.bar(f"training, label noise {args.label_noise:.2f}", total=args.max_epochs)
        dataset, spec, result, seconds = _train_one(
            args, args.label_noise, lambda d: bar.update(d["epoch"],
                                                         f"train acc {d['train_acc']:.3f}"))
        bar.close(f"{result.epochs} epochs, train acc {result.train_acc:.3f}")
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


def _write_report(rep: Any, path: Path, **extra: Any) -> None:
    """report.json: the same schema for a harness run and for a user's network."""
    payload = {"records": rep.to_records(), "train_error": rep.train_error,
               "test_error": rep.test_error, "n": rep.n, "delta": rep.delta,
               "skipped": [{"name": name, "reason": why} for name, why in rep.skipped], **extra}
    atomic_write(path, json.dumps(payload, indent=2, default=_num).encode())


def cmd_report(args: argparse.Namespace) -> int:
    if args.model is not None or args.checkpoint is not None or args.data is not None:
        if args.run_dir is not None:
            raise SystemExit("genbounds report: give either RUN_DIR (a run of `genbounds "
                             "train`) or --model/--checkpoint/--data, not both")
        missing = [f"--{k}" for k in ("model", "checkpoint", "data") if getattr(args, k) is None]
        if missing:
            raise SystemExit(f"genbounds report: a network of yours needs --model, --checkpoint "
                             f"and --data; missing {', '.join(missing)}")
        return _report_user(args)
    if args.run_dir is None:
        raise SystemExit("genbounds report: give RUN_DIR (a run of `genbounds train`), or "
                         "--model MODULE:ATTR --checkpoint FILE --data FILE.npz|NAME")
    return _report_run(args)


def _report_user(args: argparse.Namespace) -> int:
    from genbounds import report
    from genbounds.experiments._user_model import (
        load_checkpoint,
        load_npz,
        load_object,
        make_apply_fn,
        split_state,
    )

    console = _console()
    out = _prepare_out(args.out or "genbounds-report")
    with Progress("genbounds report", console=console) as progress:
        with progress.phase(f"loading the model {args.model}"):
            obj = load_object(args.model)
        with progress.phase(f"loading the checkpoint {args.checkpoint}"):
            params, init_params, collections = split_state(load_checkpoint(args.checkpoint))
            if args.init_checkpoint is not None:
                init_params, _, _ = split_state(load_checkpoint(args.init_checkpoint))
            try:
                apply_fn, what = make_apply_fn(obj, collections)
            except TypeError as e:
                raise SystemExit(f"genbounds report: {e}") from None
        with progress.phase(f"loading the data {args.data}"):
            if args.data.endswith(".npz"):
                data = load_npz(args.data)
                data_name = args.data
            else:
                from genbounds.data import DATASETS, load

                if args.data not in DATASETS:
                    raise ValueError(f"--data must be a .npz file or one of {sorted(DATASETS)}, "
                                     f"got {args.data!r}")
                ds = load(args.data, seed=args.seed, n=args.n, flatten=not args.keep_shape)
                data = {"X_train": ds.X_train, "y_train": ds.y_train, "X_test": ds.X_test,
                        "y_test": ds.y_test}
                data_name = ds.name
        with progress.phase(f"computing the bounds ({what}, n = {len(data['X_train'])})"):
            rep = report(params, X=data["X_train"], y=data["y_train"], apply_fn=apply_fn,
                         X_test=data.get("X_test"), y_test=data.get("y_test"),
                         init_params=init_params, delta=args.delta)
    console.print(rep.to_text())
    _write_report(rep, out / "report.json", model=args.model, checkpoint=str(args.checkpoint),
                  data=data_name)
    console.print(f"Wrote {out / 'report.json'}")
    return 0


def _report_run(args: argparse.Namespace) -> int:
    import flax.serialization

    from genbounds.core._checks import check_finite_tree
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
    out = run_dir if args.out is None else _prepare_out(args.out)
    from genbounds import report

    with Progress("genbounds report", console=console) as progress:
        with progress.phase(f"loading the data ({run['dataset']})"):
            corruption = "random_labels" if run["label_noise"] == 1.0 else None
            dataset = load(run["dataset"], seed=run["seed"], n=run["n"],
                           label_noise=0.0 if corruption else run["label_noise"],
                           corruption=corruption)
            model = make_model(num_classes=dataset.num_classes, **run["model"])

        def apply_fn(params, X):
            return model.apply({"params": params}, np.asarray(X, np.float32))

        args.width, args.depth, args.seed = (run["model"]["width"], run["model"]["depth"],
                                             run["seed"])
        with progress.phase("Rademacher complexity (Monte Carlo)"):
            estimate = _rademacher_estimate(dataset, args)
        with progress.phase("computing the bounds"):
            rep = report(params, X=dataset.X_train, y=dataset.y_train,
                         apply_fn=apply_fn, init_params=init_params, delta=args.delta,
                         X_test=dataset.X_test, y_test=dataset.y_test,
                         rademacher_estimate=estimate)
    console.print(rep.to_text())
    _write_report(rep, out / "report.json", run_dir=str(run_dir))
    console.print(f"Wrote {out / 'report.json'}")
    return 0


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default."""


def _add_training(p: argparse.ArgumentParser, *, n: int | None, width: int, epochs: int) -> None:
    p.add_argument("--dataset", default="digits", choices=("digits", "mnist1d", "synthetic",
                                                           "mnist"),
                   help="dataset (digits ships with scikit-learn)")
    p.add_argument("--n", type=int, default=n, help="training examples (None: all)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers of the MLP")
    p.add_argument("--width", type=int, default=width, help="hidden width")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=32, help="minibatch size")
    p.add_argument("--max-epochs", type=int, default=epochs,
                   help="epoch budget; training stops at 100%% train accuracy")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--delta", type=float, default=0.05,
                   help="each bound holds with probability >= 1 - delta")
    p.add_argument("--rademacher-draws", type=int, default=4,
                   help="sign vectors for the Monte-Carlo Rademacher estimate (0: skip it)")
    p.add_argument("--rademacher-steps", type=int, default=150,
                   help="training steps per sign vector")


def cmd_study(args: argparse.Namespace) -> int:
    from genbounds.experiments._study import study_main

    return study_main(args, _console())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genbounds",
        formatter_class=_Formatter,
        description="Generalisation bounds of trained neural networks. Start with "
                    "`genbounds demo`: it trains a small net on true, half-random and random "
                    "labels and shows how every bound compares with the measured test error.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", formatter_class=_Formatter, help="the main job: bounds vs label noise on digits (< 2 min)")
    p.add_argument("--out", default="genbounds-out",
                   help="directory for results.json and bounds.png")
    p.add_argument("--quick", action="store_true", help="a reduced run (smaller net and data)")
    p.add_argument("--pac-bayes", action="store_true",
                   help="also optimise the Dziugaite & Roy (2017) PAC-Bayes bound for each net "
                        "(minutes; its value bounds the stochastic net's error)")
    p.add_argument("--no-flatness", dest="flatness", action="store_false",
                   help="skip the flatness measures (top Hessian eigenvalue, sigma')")
    _add_training(p, n=None, width=256, epochs=800)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("reproduce", formatter_class=_Formatter, help="reproduce a paper's experiment: dziugaite-roy, "
                                         "risk-certificate")
    p.add_argument("experiment", choices=("dziugaite-roy", "risk-certificate"),
                   help="dziugaite-roy: non-vacuous PAC-Bayes bound (Dziugaite & Roy 2017); "
                        "risk-certificate: data-dependent prior + f_quad (Perez-Ortiz et al. "
                        "2021)")
    p.add_argument("--dataset", default="digits", choices=("digits", "digits-binary",
                                                           "synthetic", "mnist1d", "mnist"),
                   help="digits (default; 10 classes for risk-certificate, binary for "
                        "dziugaite-roy), digits-binary, synthetic, mnist1d, or mnist (needs "
                        "the MNIST files)")
    p.add_argument("--out", default=None,
                   help="output directory; None means genbounds-EXPERIMENT")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--download", action="store_true",
                   help="allow downloading MNIST into the cache directory")
    p.add_argument("--delta", type=float, default=0.025, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("sweep", formatter_class=_Formatter, help="bounds vs label noise on your choice of data and net")
    p.add_argument("--label-noise", type=_noise_levels, default=[0.0, 0.2, 0.5, 1.0],
                   help="comma-separated fractions of random labels")
    p.add_argument("--out", default="genbounds-sweep", help="output directory")
    _add_training(p, n=None, width=256, epochs=800)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("study", formatter_class=_Formatter, help="which measure predicts generalisation? (Jiang et al. "
                                     "2020: Kendall tau and Psi over a grid of nets)")
    from genbounds.experiments._study import add_study_arguments

    add_study_arguments(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("train", formatter_class=_Formatter, help="train one net and save it to a run directory")
    p.add_argument("--out", required=True, help="run directory (checkpoints, params, run.json)")
    p.add_argument("--label-noise", type=float, default=0.0,
                   help="fraction of training labels randomised, in [0, 1]")
    _add_training(p, n=None, width=256, epochs=800)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "report", formatter_class=_Formatter,
        help="every bound for a trained net: a run of `genbounds train`, or a network of yours",
        description="Every bound and measure for one trained network, written to report.json. "
                    "Either RUN_DIR (written by `genbounds train`), or your own network: "
                    "--model MODULE:ATTR (a flax.linen Module instance or class, or an apply "
                    "function apply_fn(params, X) -> logits; MODULE importable or a .py path), "
                    "--checkpoint (a flax msgpack file, or an orbax checkpoint directory; the "
                    "parameters, or a dict with 'params' and optionally 'init_params' and "
                    "collections such as 'batch_stats') and --data (a .npz with X_train, y_train "
                    "and optionally X_test, y_test, or an embedded data set).")
    p.add_argument("run_dir", nargs="?", default=None,
                   help="the directory given to `genbounds train --out`")
    p.add_argument("--model", default=None, metavar="MODULE:ATTR",
                   help="your model: a linen Module (instance or class) or an apply function")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="your trained parameters: flax msgpack file or orbax directory")
    p.add_argument("--init-checkpoint", default=None, metavar="PATH",
                   help="the parameters at initialisation (for the distance-from-init "
                        "variants), if the checkpoint has no 'init_params'")
    p.add_argument("--data", default=None, metavar="FILE.npz|NAME",
                   help="training (and test) data: a .npz file, or digits, mnist1d, synthetic, "
                        "mnist")
    p.add_argument("--n", type=int, default=None,
                   help="with a named data set: training examples (None: all)")
    p.add_argument("--seed", type=int, default=0, help="with a named data set: its split seed")
    p.add_argument("--keep-shape", action="store_true",
                   help="with a named data set: keep images (n, H, W, C), for a CNN")
    p.add_argument("--out", default=None,
                   help="directory for report.json (None: RUN_DIR, or ./genbounds-report)")
    p.add_argument("--delta", type=float, default=0.05,
                   help="each bound holds with probability >= 1 - delta")
    p.add_argument("--rademacher-draws", type=int, default=4,
                   help="RUN_DIR only: sign vectors for the Monte-Carlo Rademacher estimate "
                        "(0: skip it)")
    p.add_argument("--rademacher-steps", type=int, default=150,
                   help="RUN_DIR only: training steps per sign vector")
    p.set_defaults(func=cmd_report)

    from genbounds.experiments._robustness import add_parser as add_robustness

    add_robustness(sub)
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
