"""Argument validation at the public boundary.

Every check raises `ValueError` or `TypeError` with a message that names the argument, says what
was expected and what came instead. Nothing here clips or repairs a value. These run in Python,
before any jitted work, on concrete values.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
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


def check_int(
    x: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An integer (not a bool) in [minimum, maximum] (either end may be open: None)."""
    if isinstance(x, bool) or not isinstance(x, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {_describe(x)}")
    v = int(x)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        lo = "" if minimum is None else f">= {minimum}"
        hi = "" if maximum is None else f"<= {maximum}"
        raise ValueError(f"{name} must be an integer {' and '.join(p for p in (lo, hi) if p)}, "
                         f"got {x!r}")
    return v


def check_range(
    x: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real scalar in the interval given by `low`/`high` (closed unless ``*_open``)."""
    v = check_scalar(x, name)
    ok = math.isfinite(v)
    if low is not None:
        ok = ok and (v > low if low_open else v >= low)
    if high is not None:
        ok = ok and (v < high if high_open else v <= high)
    if not ok:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{left}, {right}" + (
            ")" if high_open or high is None else "]")
        raise ValueError(f"{name} must be a finite number in {interval}, got {x!r}")
    return v


def check_key(key: Any, name: str = "key") -> jax.Array:
    """A single JAX PRNG key: a typed key (``jax.random.key(0)``) or a raw
    ``jax.random.PRNGKey(0)`` (uint32 key data, wrapped into a typed key). Integers, None and
    other arrays are refused: a seed is not a key."""
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"{name} must be a single PRNG key, got a key array of shape {key.shape}"
            )
        return key
    if (
        isinstance(key, (jax.Array, np.ndarray))
        and not isinstance(key, jax.core.Tracer)
        and key.dtype == np.uint32
        and key.ndim == 1
    ):
        try:
            return jax.random.wrap_key_data(jax.numpy.asarray(key))  # a raw jax.random.PRNGKey
        except Exception as e:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(
                f"{name} must be a PRNG key such as jax.random.key(0), got uint32 data of shape "
                f"{key.shape} that is no key of the default implementation"
            ) from e
    if isinstance(key, jax.core.Tracer) and key.dtype == np.uint32:
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"{name} must be a PRNG key such as jax.random.key(0), got {_describe(key)}"
        + (" (an integer seed is not a key: pass jax.random.key(seed))"
           if isinstance(key, numbers.Integral) else "")
    )


def check_float_array(
    x: Any, name: str, *, ndim: int | Sequence[int] | None = None, finite: bool = True
) -> np.ndarray | jax.Array:
    """A non-empty array of real numbers (floating, or integer/bool data that is cast by the
    caller): refuses complex, object, string and key arrays; finite unless ``finite=False``."""
    x = check_array(x, name, ndim=ndim, finite=finite)
    dtype = x.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        raise TypeError(f"{name} must be a real array, got a PRNG key array")
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} must be a real array, got complex dtype {dtype}")
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
            or np.issubdtype(dtype, np.bool_) or dtype == jax.numpy.bfloat16):
        raise TypeError(f"{name} must be a real numeric array, got dtype {dtype}")
    return x


def check_broadcastable(a: Any, b: Any, name_a: str, name_b: str) -> tuple[int, ...]:
    """Two array-likes must broadcast against each other; returns the broadcast shape."""
    sa, sb = np.shape(a), np.shape(b)
    try:
        return tuple(np.broadcast_shapes(sa, sb))
    except ValueError:
        raise ValueError(
            f"{name_a} and {name_b} must broadcast against each other, got shapes {sa} and {sb}"
        ) from None


def check_no_none_leaves(tree: Any, name: str = "params") -> None:
    """A parameter tree must not hold None where an array belongs: JAX's tree utilities treat
    None as an empty subtree, so the layer would silently vanish. The error names the path."""

    def walk(node: Any, path: str) -> None:
        if node is None:
            raise ValueError(
                f"{name}{path} is None: every parameter must be an array (a None leaf would be "
                "dropped silently and the bounds would use the remaining layers)"
            )
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{path}[{k!r}]")
        elif isinstance(node, (list, tuple)) and not hasattr(node, "_fields"):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(tree, "")


def check_logits_match(
    apply_fn: Any, params: Any, X: Any, logits: Any, *, name: str = "logits",
    atol: float = 1e-4, rtol: float = 1e-3, sample: int = 64,
) -> None:
    """Where both `logits` and ``apply_fn(params, X)`` are available they must agree: same
    shape, and values within tolerance on the first `sample` examples."""
    expected = np.asarray(apply_fn(params, X[: min(sample, len(X))]), np.float64)
    got = np.asarray(logits, np.float64)
    want_shape = (len(X), *expected.shape[1:])
    if got.shape != want_shape:
        raise ValueError(
            f"{name} must be apply_fn(params, X) of shape {want_shape}, got shape {got.shape}"
        )
    head = got[: expected.shape[0]]
    if np.all(np.isfinite(expected)) and not np.allclose(head, expected, atol=atol, rtol=rtol):
        worst = float(np.max(np.abs(head - expected)))
        raise ValueError(
            f"{name} do not match apply_fn(params, X): they differ by up to {worst:.3g} on the "
            f"first {expected.shape[0]} examples (logits of another network or other inputs?)"
        )


def check_finite_output(x: Any, what: str, *, hint: str = "") -> None:
    """An array computed from the caller's function (logits, a loss) must be finite; the error
    says where the non-finite values came from rather than blaming a later argument."""
    arr = np.asarray(x)
    if np.issubdtype(arr.dtype, np.inexact) and not bool(np.all(np.isfinite(arr))):
        nan = int(np.count_nonzero(np.isnan(arr)))
        inf = int(arr.size - np.count_nonzero(np.isfinite(arr)) - nan)
        raise ValueError(
            f"{what} is not finite ({nan} NaN and {inf} infinite entries, dtype {arr.dtype})"
            + (f": {hint}" if hint else "")
        )


def check_result(result: Any, caller: str) -> Any:
    """The results contract of every bound and measure: `value` and `complexity` are finite, or
    ``inf`` with a finite logarithm among the `terms` (a ``log_...`` entry) and a note saying
    so; never NaN. A NaN raises (it would otherwise pass for a number); an ``inf`` without a
    note gets one. Returns the (possibly annotated) result."""
    import dataclasses

    from ._bound import Bound

    if not isinstance(result, Bound):
        return result
    notes = list(result.notes)
    for field in ("value", "complexity"):
        x = getattr(result, field)
        if x is None or isinstance(x, jax.core.Tracer):
            continue
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if np.any(np.isnan(arr)):
            raise ValueError(
                f"{caller}: the {field} came out NaN from the given inputs; NaN is never "
                "returned as a result (check that apply_fn and the parameters give finite "
                "outputs on X)"
            )
        if np.any(np.isinf(arr)) and not any("inf" in s for s in notes):
            logs = {k: v for k, v in result.terms.items() if str(k).startswith("log_")}
            finite_logs = [k for k, v in logs.items()
                           if np.ndim(v) == 0 and _is_finite_number(v)]
            if finite_logs:
                notes.append(f"{field} overflows to inf; its finite logarithm is in terms "
                             f"({', '.join(finite_logs)})")
            else:
                notes.append(f"{field} is inf (overflow or an infinite input); no finite "
                             "logarithm is available")
    if len(notes) != len(result.notes):
        return dataclasses.replace(result, notes=tuple(notes))
    return result


def _is_finite_number(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def checked_result(fn: Any) -> Any:
    """Decorator: applies `check_result` to what a public bound or measure returns."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return check_result(fn(*args, **kwargs), fn.__name__)

    return wrapper


class NotBoundable(ValueError):
    """A bound or measure does not apply to this network: its theorem does not cover the
    structure or an operation (a chain bound on a residual net, LayerNorm, a fully connected
    theorem on a CNN). A `ValueError`, so callers that catch those keep working; `report` lists
    these as skipped, and raises every other error (a caller's mistake is never hidden)."""


def refuse_margin_inputs_without_y(caller: str, **given: Any) -> None:
    """A margin bound's inputs (``apply_fn``, ``logits``, ``margin``, ``margin_quantile``) given
    without the labels ``y``: an error naming the first, rather than a complexity that silently
    ignores them."""
    for name, v in given.items():
        if v is not None:
            raise ValueError(f"{caller}: {name} was given without y; the margin bound needs the "
                             "training labels y")
