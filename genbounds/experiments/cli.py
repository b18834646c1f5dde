"""The `genbounds` command line: demo, train, report, sweep.

    genbounds demo [--out DIR]          the main job: true / noisy / random labels on digits
    genbounds train --out RUN_DIR ...   train one net and keep it
    genbounds report RUN_DIR            every bound for a trained net
    genbounds report --model pkg.nets:model --checkpoint params.msgpack --data data.npz
    genbounds sweep --label-noise 0,0.2,0.5,1 --out DIR
    genbounds study [--quick] [--out DIR]  Jiang et al. (2020): which measure ranks the nets
    genbounds reproduce dziugaite-roy [--dataset digits|synthetic|mnist1d|mnist]
    genbounds reproduce risk-certificate [--dataset digits|digits-binary|mnist1d|synthetic|mnist]
    genbounds reproduce cmi [--dataset digits-binary|mnist1d|synthetic] [--n 75,150,300,600]
    genbounds reproduce compression [--dataset digits|mnist1d|synthetic]
    genbounds robustness [--out DIR]     PGD / FGSM beside certified accuracy (docs/robustness.md)

This module is the parser and the dispatch; each command lives in its own module (`_sweep`:
demo and sweep, `_train_cmd`, `_report_cmd`, `_reproduce`, `_study`, `_robustness`), built on
genbounds.data and genbounds.train (the harness); the bound code never imports them.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from genbounds.experiments._common import Formatter, number_list, release_locks
from genbounds.experiments._report_cmd import cmd_report
from genbounds.experiments._reproduce import cmd_reproduce
from genbounds.experiments._robustness import add_parser as add_robustness
from genbounds.experiments._study import add_study_arguments, cmd_study
from genbounds.experiments._sweep import cmd_demo, cmd_sweep, noise_levels
from genbounds.experiments._train_cmd import cmd_train


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``PROG: error: MESSAGE (see PROG --help)``,
    exit code 2 (argparse prints the whole usage first)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="genbounds",
        formatter_class=Formatter,
        description="Generalisation bounds of trained neural networks. Start with "
                    "`genbounds demo`: it trains a small net on true, half-random and random "
                    "labels and shows how every bound compares with the measured test error.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print the full traceback instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", formatter_class=Formatter, help="the main job: bounds vs label noise on digits (< 2 min)")
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

    p = sub.add_parser("reproduce", formatter_class=Formatter, help="reproduce a paper's experiment: dziugaite-roy, "
                                         "risk-certificate")
    p.add_argument("experiment", choices=("dziugaite-roy", "risk-certificate", "heavy-tail",
                                          "cmi", "compression"),
                   help="dziugaite-roy: non-vacuous PAC-Bayes bound (Dziugaite & Roy 2017); "
                        "risk-certificate: data-dependent prior + f_quad (Perez-Ortiz et al. "
                        "2021); heavy-tail: layer tail exponents against the load N/M, true "
                        "and random labels (Martin & Mahoney); cmi: evaluated CMI bounds on "
                        "the expected gap against n (Harutyunyan et al. 2021, Wang & Mao "
                        "2023); compression: Occam bound on the deterministic quantised net "
                        "(Lotfi et al. 2022)")
    p.add_argument("--dataset", default=None, choices=("digits", "digits-binary",
                                                         "synthetic", "mnist1d", "mnist"),
                   help="digits (the default; 10 classes for risk-certificate, binary for "
                        "dziugaite-roy and cmi), digits-binary, synthetic, mnist1d, or mnist "
                        "(needs the MNIST files; not for cmi)")
    p.add_argument("--n", dest="cmi_sizes", default=None,
                   type=lambda t: [int(v) for v in number_list(
                       t, flag="--n", what="(training set sizes, whole numbers >= 2)",
                       valid=lambda v: v >= 2 and float(v).is_integer())],
                   help="cmi: comma-separated training set sizes (default 75,150,300,600)")
    p.add_argument("--masks", type=int, default=30, help="cmi: masks K per supersample")
    p.add_argument("--supersamples", type=int, default=3,
                   help="cmi: supersamples S per training set size")
    p.add_argument("--out", default=None,
                   help="output directory; None means genbounds-EXPERIMENT")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--download", action="store_true",
                   help="allow downloading MNIST into the cache directory")
    p.add_argument("--delta", type=float, default=0.025, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("sweep", formatter_class=Formatter, help="bounds vs label noise on your choice of data and net")
    p.add_argument("--label-noise", type=noise_levels, default=[0.0, 0.2, 0.5, 1.0],
                   help="comma-separated fractions of random labels")
    p.add_argument("--out", default="genbounds-sweep", help="output directory")
    _add_training(p, n=None, width=256, epochs=800)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("study", formatter_class=Formatter, help="which measure predicts generalisation? (Jiang et al. "
                                     "2020: Kendall tau and Psi over a grid of nets)")
    add_study_arguments(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("train", formatter_class=Formatter, help="train one net and save it to a run directory")
    p.add_argument("--out", required=True, help="run directory (checkpoints, params, run.json)")
    p.add_argument("--label-noise", type=float, default=0.0,
                   help="fraction of training labels randomised, in [0, 1]")
    _add_training(p, n=None, width=256, epochs=800)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "report", formatter_class=Formatter,
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

    add_robustness(sub)
    for p in sub.choices.values():  # also accepted after the command
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, print the full traceback instead of one line "
                            "(default: off)")
    return parser



# Integer options: (attribute, flag, minimum); None values (e.g. --n default) mean "all".
_INT_OPTIONS = (("n", "--n", 1), ("depth", "--depth", 1), ("width", "--width", 1),
                ("batch_size", "--batch-size", 1), ("max_epochs", "--max-epochs", 1),
                ("seed", "--seed", 0), ("rademacher_steps", "--rademacher-steps", 1),
                ("steps", "--steps", 1), ("restarts", "--restarts", 1),
                ("resamples", "--resamples", 1))


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


def _one_line(e: BaseException, limit: int = 600) -> str:
    """An exception's message on one line (whitespace collapsed, at most `limit` characters)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# What a user's mistake raises: a bad value or file (ValueError, and UserError, CorruptFile,
# CheckpointError, NotBoundable, which are ValueErrors), a file that cannot be read or a
# directory in use (OSError, DirectoryBusy).
USER_ERRORS = (ValueError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    """The `genbounds` command. Returns the exit status: 0, 2 for a user's mistake (one line
    on stderr naming the argument, the file and what was expected), 1 for an internal error
    (one line; ``--debug`` shows the traceback), 130 when interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    problem = _check_options(args)
    if problem:
        parser.error(problem)
    where = f"genbounds {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"{where}: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one line unless --debug, as promised
        if debug:
            raise
        print(f"{where}: internal error ({type(e).__name__}: {_one_line(e)}); run again with "
              "--debug for the traceback", file=sys.stderr)
        return 1
    finally:
        release_locks()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
