"""Explicit dtype promotion, the same under ``jax_numpy_dtype_promotion="standard"`` and
``"strict"``.

Under strict promotion jax refuses to mix float32 and float64 (or int32 and int64) arrays
implicitly. genbounds accepts such mixes from its callers (float32 weights with float64 data under
``jax_enable_x64``) and casts at its boundary to the dtype jax's standard promotion lattice would
have produced, so no number depends on the promotion mode the caller runs with.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def promoted_dtype(*args: Any) -> np.dtype:
    """The dtype jax's standard promotion gives `args` (arrays, dtypes or Python scalars).

    Computed under ``jax.numpy_dtype_promotion("standard")`` whatever mode is set: this is the
    explicit form of the promotion an arithmetic operation on `args` would do implicitly.
    """
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*args)


def promote(*arrays: Any) -> tuple[jax.Array, ...]:
    """`arrays` as jax arrays of their common `promoted_dtype` (a no-op when they share one)."""
    dtype = promoted_dtype(*arrays)
    return tuple(jnp.asarray(a, dtype=dtype) for a in arrays)


def standard_promotion() -> Any:
    """A context in which jax promotes by its standard lattice, for third-party code that relies
    on implicit promotion: optax's Adam bias correction raises a Python float to an int32 step
    count, which strict promotion refuses. Wrapping the call keeps it (and its numbers) working
    when the caller runs under ``jax_numpy_dtype_promotion="strict"``."""
    return jax.numpy_dtype_promotion("standard")


def promoted(op: Any, a: Any, b: Any) -> jax.Array:
    """``op(a, b)`` with `a` and `b` first cast to their `promoted_dtype`: the one binary
    operation standard promotion would do implicitly, stated (float32 weights may meet float64
    statistics or data)."""
    return op(*promote(a, b))


def analysis_dtype(kernel: Any) -> jax.Array:
    """A kernel as the bounds analyse it: half-precision (float16, bfloat16) kernels in float32
    (exactly: every half-precision value is a float32 value), so that norms are not computed in
    the network's low precision; the records still evaluate in the network's dtype."""
    k = jnp.asarray(kernel)
    if jnp.issubdtype(k.dtype, jnp.floating) and k.dtype.itemsize < 4:
        k = k.astype(jnp.float32)
    return k


def default_tolerance(dtype: Any) -> float:
    """The tolerance of the records' verification for outputs of this dtype (relative to the
    largest output magnitude): 1e-9 in float64, 1e-4 in float32, 8 units in the last place in
    float16 (7.8e-3) and bfloat16 (3.1e-2), whose own rounding is that coarse."""
    dt = jnp.dtype(dtype)
    if dt.itemsize < 4 and jnp.issubdtype(dt, jnp.floating):
        return 8.0 * float(jnp.finfo(dt).eps)
    return 1e-4 if dt.itemsize <= 4 else 1e-9
