"""What the commands share: the output directory and its lock, the console, the header of a
results file, the embedded data sets with label noise, one trained net, one markdown table.

Every command module (`_sweep`, `_train_cmd`, `_report_cmd`, `_reproduce`, `_robustness`,
`_study`) imports from here and nothing imports the commands but `cli`, so the command line
has no import cycle. Heavy packages (jax, flax, rich, the harness) are imported inside the
functions: ``genbounds --help`` starts without them.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genbounds.files import DirectoryBusy, DirectoryLock, held_here

PARAMS_MAGIC = b"GENBOUNDS-PARAMS-1\n"

_LOCKS: list[DirectoryLock] = []  # released by `release_locks` when the command returns


class UserError(ValueError):
    """A mistake in the command line or in a file it names (a `ValueError`).

    `genbounds.experiments.cli.main` prints its message as one line, ``genbounds COMMAND:
    MESSAGE``, and exits with code 2; the message names the argument, the file and what was
    expected. With ``--debug`` the traceback is shown instead (with the user's own error, e.g.
    the exception a ``--model`` module raised on import, as its cause).
    """


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default."""


def console(min_width: int = 132):
    """A rich console at least `min_width` columns wide (tables of bounds are wide)."""
    from rich.console import Console

    return Console(width=max(Console().width, min_width))


def prepare_out(path: str | os.PathLike) -> Path:
    """Creates the output directory and checks it is writable, before any work is done."""
    out = Path(path).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".genbounds-write-test-"):
            pass
    except OSError as e:
        raise UserError(
            f"--out: cannot write to the output directory {str(out)!r}: {e}") from None
    return out


def lock(out: Path) -> None:
    """Takes the output directory's lock, held until the command returns (or the process
    dies): a second run on the same directory is refused (a `UserError`) instead of
    clobbering this one. A directory whose lock this process already holds is left as is."""
    if held_here(out):
        return
    try:
        _LOCKS.append(DirectoryLock(out).acquire())
    except DirectoryBusy as e:
        raise UserError(str(e)) from None


def release_locks() -> None:
    """Releases the locks `lock` took, newest first."""
    while _LOCKS:
        _LOCKS.pop().release()


def number_list(text: str, *, flag: str, what: str,
                valid: Callable[[float], bool]) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0] for an option of comma-separated numbers; an
    `argparse.ArgumentTypeError` naming `flag` and `what` when one is not `valid`."""
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or not all(valid(v) for v in values):
        raise argparse.ArgumentTypeError(
            f"{flag} must be comma-separated numbers {what}, got {text!r}")
    return values


def version() -> str:
    from genbounds import __version__

    return __version__


def run_header(args: argparse.Namespace) -> dict[str, Any]:
    """The first entries of a results.json: version, time, command line and options."""
    return {
        "genbounds": version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["genbounds", *sys.argv[1:]]),
        "config": {k: v for k, v in vars(args).items() if k != "func"},
    }


def num(x: Any) -> float | None:
    """A finite float, or None (JSON has no NaN or infinity)."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def box_of(dataset: Any) -> tuple[float, float] | None:
    """(0, 1) for the data sets whose inputs lie in [0, 1] by construction (digits /16, MNIST
    /255), unless Gaussian input noise was added; None otherwise."""
    if dataset.name in ("digits", "mnist") and dataset.metadata.get("corruption") != "gaussian":
        return (0.0, 1.0)
    return None


def input_bound(dataset: Any) -> float | None:
    """B = sqrt(dim), the largest input norm, for the data sets of `box_of`; None otherwise."""
    if box_of(dataset) is not None:
        return float(np.sqrt(np.prod(np.shape(dataset.X_train)[1:])))
    return None


def load_noisy(name: str, *, seed: int, n: int | None, label_noise: float):
    """`genbounds.data.load` with a fraction `label_noise` of random training labels; 1.0 is
    Zhang et al.'s (2017) random labels (the ``"random_labels"`` corruption)."""
    from genbounds.data import load

    corruption = "random_labels" if label_noise == 1.0 else None
    return load(name, seed=seed, n=n, label_noise=0.0 if corruption else label_noise,
                corruption=corruption)


def train_one(args: argparse.Namespace, noise: float, progress: Any = None):
    """The net of the training options (`--dataset`, `--depth`, `--width`, ...) at one label
    noise, trained to 100% training accuracy: ``(dataset, spec, result, seconds)``."""
    import time

    from genbounds.train import train

    dataset = load_noisy(args.dataset, seed=args.seed, n=args.n, label_noise=noise)
    spec = {"kind": "mlp", "depth": args.depth, "width": args.width}
    start = time.perf_counter()
    result = train(spec, dataset, optimizer="adam", lr=args.lr, batch_size=args.batch_size,
                   max_epochs=args.max_epochs, stop="fit", seed=args.seed, progress=progress,
                   checkpoint_dir=getattr(args, "checkpoint_dir", None))
    return dataset, spec, result, time.perf_counter() - start


def rademacher_estimate(dataset: Any, args: argparse.Namespace):
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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (no trailing newline): the header, a rule, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_variant(variants: dict[str, tuple[str, dict[str, Any]]], name: str, *, seed: int,
                 download: bool = False):
    """The data set `name` of an experiment, ``variants[name] = (source, options)`` of
    `genbounds.data.load`; `download` lets the MNIST loader fetch its files."""
    from genbounds.data import load

    if name not in variants:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, variants))}; got {name!r}")
    source, options = variants[name]
    if source == "mnist":
        options = {**options, "download": download}
    return load(source, seed=seed, **options)


def write_record(out: str | os.PathLike, record: dict[str, Any], summary: str) -> None:
    """Writes ``results.json`` (the record) and ``summary.md`` (its table) atomically into
    ``out``, creating the folder."""
    import json

    from genbounds.files import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", json.dumps(record, indent=2).encode())
    atomic_write(out / "summary.md", (summary + "\n").encode())


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, or of a directory (an orbax checkpoint): for a directory, of the
    sorted lines ``RELATIVE_PATH SHA256`` of every file under it."""
    path = Path(path)
    if path.is_dir():
        lines = [f"{p.relative_to(path).as_posix()} {file_sha256(p)}"
                 for p in sorted(path.rglob("*")) if p.is_file()]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_sha256(dataset: Any) -> str:
    """The SHA-256 of a data set's arrays (X_train, y_train, X_test, y_test: dtype, shape and
    bytes): two loads give the same digest exactly when they give the same data."""
    h = hashlib.sha256()
    for name in ("X_train", "y_train", "X_test", "y_test"):
        a = np.ascontiguousarray(getattr(dataset, name))
        h.update(f"{name}{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def settings_key(settings: Any) -> str:
    """The SHA-256 of the canonical JSON of `settings` (sorted keys): an identity key."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


SETTINGS_FILE = "settings.json"


def keep_settings(out: Path, settings: dict[str, Any], flags: dict[str, str]) -> None:
    """Claims the directory `out` for the cached work of one set of `settings`.

    A resumable command (``train``, ``study``) keys its cached results on everything that
    changes them: on the first run the settings are written to ``out/settings.json``
    (checksummed); a rerun with other settings is refused with a `UserError` naming each
    differing setting by its option (``flags[name]``) with both values, so that cached results
    of one configuration are never read as those of another. The caller holds the directory's
    lock.
    """
    from genbounds.files import CorruptFile, read_json_checked, write_json_checked

    path = out / SETTINGS_FILE
    now = json.loads(json.dumps(settings, sort_keys=True, default=repr))
    if not path.exists():
        write_json_checked(path, now)
        return
    try:
        stored = read_json_checked(path)
    except CorruptFile as e:
        raise UserError(f"{e}; delete {str(out)!r} or choose another --out") from None
    # Compared as JSON text: 0 and False, 1 and 1.0 are equal in Python but not the same setting.
    text = lambda d, k: json.dumps(d.get(k, "<absent>"), sort_keys=True)  # noqa: E731
    diffs = [f"{flags.get(k, k)}: {stored.get(k, '<absent>')!r} there, "
             f"{now.get(k, '<absent>')!r} now"
             for k in sorted(set(stored) | set(now)) if text(stored, k) != text(now, k)]
    if not diffs:
        return
    raise UserError(
        f"--out {str(out)!r} holds the cached work of a run with other settings "
        f"({'; '.join(diffs)}); rerun with those settings to resume it, or choose another --out")
