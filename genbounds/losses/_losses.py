"""Losses of a classifier and the checks of its inputs, shared by the flatness measures, the
Laplace evidence, Dziugaite-Roy and Pérez-Ortiz.

`cross_entropy` (logistic for one output unit, softmax cross-entropy otherwise, in nats) and
`zero_one` (margin <= 0, the `genbounds.margins` convention) per example; `check_classifier`
validates ``(apply_fn, params, X, y)`` before any work; `check_same_tree` compares two
parameter trees leaf by leaf.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import (
    check_array,
    check_finite_output,
    check_finite_tree,
    check_labels,
    check_same_length,
)

from ._margins import margins_core


def is_binary_output(logits_shape: tuple[int, ...]) -> bool:
    """A network with one output unit, shape (n,) or (n, 1), is a binary logistic classifier."""
    return len(logits_shape) == 1 or (len(logits_shape) == 2 and logits_shape[1] == 1)


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example cross-entropy in nats.

    One output unit: the logistic loss $\\ln(1 + e^{-s z})$ with $s = 2y - 1$, labels in {0, 1}.
    K >= 2 outputs: $-\\ln \\mathrm{softmax}(z)_y$.
    """
    if is_binary_output(logits.shape):
        z = logits.reshape(logits.shape[0])
        s = 2.0 * y.astype(z.dtype) - 1.0
        return jax.nn.softplus(-s * z)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]


def zero_one(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example 0-1 error: margin <= 0 (`genbounds.margins` convention; ties are errors).

    With this convention ``cross_entropy / ln 2 >= zero_one`` on every example, which is what makes
    the cross-entropy a surrogate upper bound of the 0-1 loss in Dziugaite & Roy's objective.
    """
    return (margins_core(logits, y) <= 0).astype(logits.dtype)


def _probe(a: Any, dtype: Any) -> Any:
    """`a` as the shape-and-dtype stand-in of the array the caller will compute with: floating
    arrays in `dtype` (when given), others as they are."""
    a = a if hasattr(a, "dtype") else np.asarray(a)
    cast = dtype is not None and jnp.issubdtype(a.dtype, jnp.floating)
    return jax.ShapeDtypeStruct(np.shape(a), dtype if cast else a.dtype)


def _cast(a: Any, dtype: Any) -> jax.Array:
    a = jnp.asarray(a)
    return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a


def _as_array(a: Any) -> jax.Array:
    """`a` on the device; a numpy array by `jax.device_put` (``jnp.asarray`` compiles a copy
    program per shape on first use)."""
    return jax.device_put(a) if isinstance(a, np.ndarray) else jnp.asarray(a)


def check_classifier(
    apply_fn: Any, params: Any, X: Any, y: Any, *, x_name: str = "X", y_name: str = "y",
    dtype: Any = None, finite_check: bool = True,
) -> tuple[jax.Array, jax.Array, tuple[int, ...]]:
    """Validates (apply_fn, params, X, y) of a classifier; returns X, y as arrays and the logits'
    shape (checked with `jax.eval_shape`, no computation).

    `dtype`: the dtype the caller evaluates `apply_fn` in (it casts the floating parameters and
    X to it), so the check calls `apply_fn` with the dtypes of the real calls; None: as given.
    `finite_check`: run one forward pass and refuse NaN or infinite logits; False for a caller
    that checks the logits of its own computation instead (one compiled program, not a second
    forward pass of eager operations).
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable as apply_fn(params, X), got {apply_fn!r}")
    check_finite_tree(params, "params")
    X = check_array(X, x_name, ndim=(2, 3, 4, 5))
    n = check_same_length(X, np.asarray(y) if not hasattr(y, "shape") else y, x_name, y_name)
    try:
        out = jax.eval_shape(apply_fn, jax.tree.map(lambda a: _probe(a, dtype), params),
                             _probe(X, dtype))
    except Exception as e:  # noqa: BLE001 - re-raised naming the arguments
        raise TypeError(
            f"apply_fn(params, {x_name}) failed on {x_name} of shape {tuple(np.shape(X))}: {e}"
        ) from e
    shape = tuple(out.shape)
    if not (len(shape) in (1, 2) and shape[0] == n):
        raise ValueError(
            f"apply_fn(params, {x_name}) must return logits of shape (n,), (n, 1) or (n, K) with "
            f"n = {n}, got shape {shape}"
        )
    num_classes = 2 if is_binary_output(shape) else shape[1]
    y = check_labels(y, y_name, num_classes=num_classes)
    if not finite_check:
        return _as_array(X), _as_array(y), shape
    # One forward pass: NaN/inf logits would otherwise come back as a NaN measure.
    if dtype is None:
        probe_params, probe_X = params, jnp.asarray(X)
    else:
        probe_params, probe_X = jax.tree.map(lambda a: _cast(a, dtype), (params, X))
    check_finite_output(apply_fn(probe_params, probe_X), f"apply_fn(params, {x_name})",
                        hint="the measure would be NaN; check the network and its parameters")
    return jnp.asarray(X), jnp.asarray(y), shape


def check_same_tree(a: Any, b: Any, name_a: str, name_b: str) -> None:
    """`b` must have the tree structure and the leaf shapes of `a`."""
    sa, sb = jax.tree.structure(a), jax.tree.structure(b)
    if sa != sb:
        raise ValueError(f"{name_b} must have the same tree structure as {name_a}: {sa} vs {sb}")
    for (path, la), lb in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True
    ):
        if np.shape(la) != np.shape(lb):
            raise ValueError(
                f"{name_b} must match {name_a} leaf by leaf; at {jax.tree_util.keystr(path)} "
                f"got shape {np.shape(lb)} vs {np.shape(la)}"
            )
