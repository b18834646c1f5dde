"""Arguments of the norm kernels, checked in Python before any jitted work.

Every entry point of `genbounds.linalg` turns its input into a real jax array of a compute dtype
(float32 at least) with these helpers, and reports NaN/inf or an overflowing norm by the
argument's name.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._dtypes import promoted_dtype


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _compute_dtype(dtype: Any) -> Any:
    """The dtype to compute in: at least float32 (float16, bfloat16 and integers are promoted).

    float64 is kept only when jax_enable_x64 is on (otherwise jax would truncate it anyway).
    """
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError("W must be a real matrix, got a complex dtype " + str(dtype))
    if jnp.issubdtype(dtype, jnp.floating):
        return jax.dtypes.canonicalize_dtype(promoted_dtype(dtype, jnp.float32))
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _as_array(x: Any, name: str, ranks: tuple[int, ...]) -> jax.Array:
    """Converts to a jax array of a real float dtype and checks the rank and emptiness."""
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    if not isinstance(x, jax.Array):
        try:
            arr = np.asarray(x)
        except Exception as e:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from e
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        x = arr
    if x.ndim not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} must have rank {want}, got shape {tuple(x.shape)}")
    if x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    dtype = _compute_dtype(x.dtype)
    return jnp.asarray(x, dtype=dtype)


@jax.jit
def _scan_matrix(W: jax.Array) -> tuple[jax.Array, jax.Array]:
    # One fused pass over W: (all entries finite, some entry nonzero).
    return jnp.all(jnp.isfinite(W)), jnp.any(W != 0)


def _check_finite(x: jax.Array, name: str) -> bool:
    """Raises unless every entry is finite; returns whether some entry is nonzero."""
    finite, nonzero = _scan_matrix(x)
    if not bool(finite):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x))))
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite entries")
    return bool(nonzero)


def _raise_nonfinite(W: jax.Array) -> None:
    """Called when a kernel produced NaN/inf: name the cause (bad entries, or overflow)."""
    _check_finite(W, "W")  # raises when W holds NaN or inf
    raise ValueError(
        f"W is finite but its norm overflows {W.dtype} (largest entry "
        f"{float(jnp.max(jnp.abs(W))):.3g}); rescale W or pass float64 with jax_enable_x64"
    )


def _check_key(key: Any) -> jax.Array:
    if key is None:
        # A fixed key chosen before any W is seen; see the docstring of `spectral_norm`.
        return jax.random.key(0)
    if isinstance(key, jax.Array) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        return key
    raise TypeError(
        f"key must be a jax.random key (jax.random.key(seed)) or None, got {type(key).__name__}"
    )

