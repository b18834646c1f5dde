"""The command line and the experiment runners: demo, sweep, study, reproduce targets, robustness.

Apart from the bound code: it uses `genbounds.data` and `genbounds.train` and the optional
plotting and console packages, and nothing in the core imports it. The entry point is
`genbounds.experiments.cli:main` (the `genbounds` command); `build_parser` is its parser. The
paper reproductions and the study run from Python too: `reproduce_dziugaite_roy` (Dziugaite &
Roy 2017), `reproduce_risk_certificate` (Pérez-Ortiz et al. 2021), `run_study` (Jiang et al.
2020). `UserError` (a ValueError) is what they and the commands raise for a mistake in an
argument or a file; the command line prints it as one line and exits with code 2. They are
resolved on first use, so that ``genbounds --help`` starts without jax.
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

_HOMES = {
    "main": "cli",
    "build_parser": "cli",
    "reproduce_dziugaite_roy": "_dziugaite_roy",
    "reproduce_risk_certificate": "_risk_certificate",
    "run_study": "_study",
    "UserError": "_common",
    "reproduce_heavy_tail": "_heavy_tail_load",
    "run_load_sweep": "_heavy_tail_load",
    "reproduce_cmi": "_cmi",
    "reproduce_compression": "_compression",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> _Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'genbounds.experiments' has no attribute {name!r}")
    # Not cached here: the runner is read from its module on every access.
    return getattr(_importlib.import_module(f"genbounds.experiments.{home}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
