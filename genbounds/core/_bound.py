"""The one result type of genbounds: `Bound`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np


def _plain(x: Any) -> Any:
    """Converts arrays and nested containers to plain Python values (for JSON)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        arr = np.asarray(x)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    return x


def _fmt(x: Any) -> str:
    if x is None:
        return "None"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return repr(x)
    if math.isnan(v):
        return "nan"
    return f"{v:.6g}"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Bound:
    """A generalisation bound, or a complexity measure, computed for one network.

    Every bound in genbounds returns a `Bound`. When `value` is a number it is an upper bound on
    the expected 0-1 test error of the network (or of the stochastic network, for PAC-Bayes
    bounds on a posterior) that holds with probability at least ``1 - delta`` over the draw of
    the ``n`` training examples (and over any randomness named in `terms`). Measures that are not
    bounds (path norm, sharpness, the spectral complexity without data) have ``value=None``.

    Attributes:
      name: short name of the bound or measure, e.g. ``"spectral"``.
      value: the bound on the test error, or None for a measure.
      complexity: the complexity term the bound is built from (e.g. R_A, the VC dimension).
      terms: named parts the value was assembled from, as plain numbers or arrays.
      n: number of training examples the bound uses, or None.
      delta: failure probability of the bound, or None.
      estimated: True where an input was an estimate rather than a certified number
        (power iteration, Monte Carlo, an optimisation that only approximates a supremum).
      reference: the citation of the theorem that was implemented.
      notes: conventions that ran (which margin, which norm method, what was excluded).

    Examples:
      >>> b = Bound(name="toy", value=0.3, complexity=2.0, n=100, delta=0.05)
      >>> b.vacuous
      False
      >>> b.to_dict()["value"]
      0.3
    """

    name: str = dataclasses.field(metadata=dict(static=True))
    value: Any = None
    complexity: Any = None
    terms: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    n: int | None = dataclasses.field(default=None, metadata=dict(static=True))
    delta: float | None = dataclasses.field(default=None, metadata=dict(static=True))
    estimated: bool = dataclasses.field(default=False, metadata=dict(static=True))
    reference: str = dataclasses.field(default="", metadata=dict(static=True))
    notes: tuple[str, ...] = dataclasses.field(default=(), metadata=dict(static=True))

    @property
    def vacuous(self) -> bool | None:
        """True when the bound is at least 1 (it says nothing about a 0-1 error); None for a
        measure. A vacuous bound is reported as it is, never clipped."""
        if self.value is None:
            return None
        return bool(float(self.value) >= 1.0)

    @property
    def is_measure(self) -> bool:
        """True for a complexity measure that is not a bound on the test error."""
        return self.value is None

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (floats, lists, dicts, strings), ready for JSON or a table."""
        return {
            "name": self.name,
            "value": _plain(self.value),
            "complexity": _plain(self.complexity),
            "vacuous": self.vacuous,
            "n": self.n,
            "delta": self.delta,
            "estimated": self.estimated,
            "reference": self.reference,
            "notes": list(self.notes),
            "terms": _plain(dict(self.terms)),
        }

    def __repr__(self) -> str:
        kind = "measure" if self.value is None else ("vacuous" if self.vacuous else "bound")
        parts = [f"{self.name}: value={_fmt(self.value)}", f"complexity={_fmt(self.complexity)}"]
        if self.n is not None:
            parts.append(f"n={self.n}")
        if self.delta is not None:
            parts.append(f"delta={self.delta:g}")
        if self.estimated:
            parts.append("estimated")
        return f"Bound({', '.join(parts)}; {kind})"

    __str__ = __repr__
