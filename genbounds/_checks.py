"""Argument validation at the public boundary.

Every check raises `ValueError` or `TypeError` with a message that names the argument, says what
was expected and what came instead. Nothing here clips or repairs a value. These run in Python,
before any jitted work, on concrete values.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np


def _describe(x: Any) -> str:
    if isinstance(x, (jax.Array, np.ndarray)):
        return f"an array of shape {tuple(x.shape)} and dtype {x.dtype}"
    return repr(x)


def _as_real(x: Any, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (numbers.Real, np.ndarray, jax.Array, np.generic)):
        raise TypeError(f"{name} must be a real number, got {_describe(x)}")
    if isinstance(x, (np.ndarray, jax.Array)) and np.ndim(x) != 0:
        raise TypeError(f"{name} must be a scalar, got {_describe(x)}")
    return float(x)


def check_scalar(x: Any, name: str) -> float:
    """A real scalar (Python number, numpy or jax 0-d array), not NaN. Returns it as a float."""
    if isinstance(x, bool) or not isinstance(x, (numbers.Real, np.ndarray, jax.Array, np.generic)):
        raise TypeError(f"{name} must be a real number, got {x!r}")
    if np.ndim(x) != 0:
        raise TypeError(f"{name} must be a scalar, got an array of shape {np.shape(x)}")
    v = float(x)
    if math.isnan(v):
        raise ValueError(f"{name} must not be NaN")
    return v


def check_delta(delta: Any, name: str = "delta") -> float:
    """`delta` must lie in the open interval (0, 1)."""
    d = _as_real(delta, name)
    if not (0.0 < d < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {delta!r}")
    return d


def check_n(n: Any, name: str = "n") -> int:
    """`n` must be an integer >= 1."""
    if isinstance(n, bool) or not isinstance(n, (numbers.Integral, np.integer)):
        if isinstance(n, (float, np.floating)) and float(n).is_integer():
            n = int(n)
        else:
            raise TypeError(f"{name} must be an integer >= 1, got {_describe(n)}")
    if int(n) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)


def check_positive(x: Any, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0 with ``allow_zero``)."""
    v = _as_real(x, name)
    if not math.isfinite(v) or v < 0.0 or (v == 0.0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {expected}, got {x!r}")
    return v


def check_margin(margin: Any, name: str = "margin") -> float:
    """A margin gamma must be a finite number > 0."""
    return check_positive(margin, name)


def check_unit_interval(x: Any, name: str, *, closed: bool = True) -> float:
    """A number in [0, 1] (or (0, 1) with ``closed=False``)."""
    v = _as_real(x, name)
    ok = (0.0 <= v <= 1.0) if closed else (0.0 < v < 1.0)
    if not ok or math.isnan(v):
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"{name} must lie in {interval}, got {x!r}")
    return v


def check_choice(value: Any, name: str, allowed: Iterable[str]) -> str:
    """`value` must be one of `allowed`."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    finite: bool = True,
    nonempty: bool = True,
) -> np.ndarray | jax.Array:
    """An array-like of the given rank(s), finite, not empty. Returns it as an array."""
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    if not isinstance(x, (jax.Array, np.ndarray)):
        try:
            x = np.asarray(x)
        except Exception as e:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from e
    if x.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got dtype object")
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise ValueError(f"{name} must have rank {want}, got shape {tuple(x.shape)}")
    if nonempty and x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and np.issubdtype(x.dtype, np.inexact) and not bool(np.all(np.isfinite(x))):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x))))
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite entries")
    return x


def check_same_length(a: Any, b: Any, name_a: str, name_b: str) -> int:
    """Two arrays must have the same leading dimension."""
    la, lb = int(np.shape(a)[0]), int(np.shape(b)[0])
    if la != lb:
        raise ValueError(
            f"{name_a} and {name_b} must have the same number of examples, got {la} and {lb}"
        )
    return la


def check_labels(y: Any, name: str, *, num_classes: int | None = None) -> np.ndarray:
    """Integer class labels of rank 1, in [0, num_classes)."""
    y = check_array(y, name, ndim=1)
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
        hi = "" if num_classes is None else f" and < {num_classes}"
        raise ValueError(f"{name} must hold labels >= 0{hi}, got range [{y.min()}, {y.max()}]")
    return y


def check_finite_tree(tree: Any, name: str = "params") -> None:
    """Every inexact leaf of `tree` must be finite; the error names the offending path."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if not leaves:
        raise ValueError(f"{name} must be a non-empty tree of arrays, got an empty tree")
    for path, leaf in leaves:
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not bool(np.all(np.isfinite(arr))):
            raise ValueError(
                f"{name} must be finite, but the leaf at {jax.tree_util.keystr(path)} "
                f"holds NaN or infinite values"
            )
