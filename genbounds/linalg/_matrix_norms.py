"""Frobenius and (2,1) norms of weight arrays, and the log of a product of norms.

Each is computed with the largest entry factored out (no overflow or underflow of the squares),
in float64 on the host for concrete arrays that are cheap to read there, else by a jitted kernel
(usable under ``jax.jit``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._arrays import _as_array, _check_finite, _compute_dtype, _is_tracer, _raise_nonfinite
from ._host import _host_float64, _host_ok

__all__ = ["frobenius_norm", "log_norm_product", "norm_21"]


@jax.jit
def _frobenius_kernel(W: jax.Array) -> jax.Array:
    m = jnp.max(jnp.abs(W))
    s = jnp.where(m > 0, m, 1.0)  # scale by the largest entry: no overflow of the squares
    return s * jnp.sqrt(jnp.sum(jnp.square(W / s)))


@jax.jit
def _norm_21_kernel(W: jax.Array) -> jax.Array:
    m = jnp.max(jnp.abs(W))
    s = jnp.where(m > 0, m, 1.0)
    return s * jnp.sum(jnp.sqrt(jnp.sum(jnp.square(W / s), axis=0)))



def frobenius_norm(W: jax.typing.ArrayLike) -> jax.Array:
    r"""The Frobenius norm $\|W\|_F = (\sum_{ij} W_{ij}^2)^{1/2}$ of a weight array.

    Computed with the largest entry factored out, so that squares neither overflow nor underflow.
    Usable under ``jax.jit`` (the finiteness check is skipped for traced input).

    Args:
      W: a real array of rank >= 1 (a Dense kernel (in, out), or any kernel: all entries count).

    Returns:
      A scalar jax.Array in W's dtype (float32 at least).

    Raises:
      TypeError: W is not a real numeric array.
      ValueError: W is a scalar, empty, or holds NaN/inf, or its norm overflows W's dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from genbounds import frobenius_norm
      >>> float(frobenius_norm(jnp.ones((2, 8))))
      4.0
    """
    ranks = tuple(range(1, 33))
    host = _host_reduce(W, "W", ranks, None)
    if host is not None:
        return _finite_norm(host, W)
    return _finite_norm(_frobenius_kernel(_validated(W, "W", ranks)), W)


def _finite_norm(value: jax.Array, W: Any) -> jax.Array:
    """A norm computed on concrete input must be finite: overflow of W's dtype raises."""
    if not _is_tracer(value) and not bool(jnp.isfinite(value)):
        _raise_nonfinite(jnp.asarray(W))
    return value


def norm_21(W: jax.typing.ArrayLike) -> jax.Array:
    r"""The (2,1) norm $\|A^\top\|_{2,1} = \sum_j \|W_{:,j}\|_2$ of a Dense kernel $W$ (in, out).

    Bartlett, Foster & Telgarsky (2017) write a layer as $x \mapsto A x$ with $A = W^\top$ of shape
    (out, in), and define $\|M\|_{p,q}$ as the q-norm of the p-norms of the columns of M. So
    $\|A^\top\|_{2,1}$ sums, over the layer's **output units**, the 2-norm of each unit's incoming
    weights: for a Flax kernel (in, out) that is the sum over its columns.

    Args:
      W: a real matrix of shape (in, out).

    Returns:
      A scalar jax.Array.

    Raises:
      TypeError: W is not a real numeric array.
      ValueError: W is not 2-D, is empty, or holds NaN/inf, or the norm overflows W's dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from genbounds import norm_21
      >>> float(norm_21(jnp.eye(4)))
      4.0
      >>> float(norm_21(jnp.array([[3.0, 0.0], [4.0, 1.0]])))  # columns (3, 4) and (0, 1)
      6.0

    References:
      P. Bartlett, D. Foster and M. Telgarsky, "Spectrally-normalized margin bounds for neural
      networks", NeurIPS 2017, arXiv:1706.08498 (eq. 1.2 and the norm definition before it).
    """
    host = _host_reduce(W, "W", (2,), 0)
    if host is not None:
        return _finite_norm(host, W)
    return _finite_norm(_norm_21_kernel(_validated(W, "W", (2,))), W)


def _host_reduce(W: Any, name: str, ranks: tuple[int, ...], axis: int | None) -> jax.Array | None:
    """Frobenius (axis None) or (2,1) (axis 0) norm in float64 on the host, or None when W
    should go to the jitted kernel (traced, or large and off the CPU). Same validation."""
    if not _host_ok(W):
        return None
    W = _as_array(W, name, ranks)  # type, rank and emptiness checks; the compute dtype
    A = _host_float64(W, name)
    m = float(np.max(np.abs(A)))
    s = m if m > 0 else 1.0  # scale by the largest entry: no overflow of the squares
    sq = np.square(A / s)
    value = s * (math.sqrt(float(np.sum(sq))) if axis is None else float(np.sum(np.sqrt(
        np.sum(sq, axis=axis)))))
    if not value <= float(jnp.finfo(W.dtype).max):
        _raise_nonfinite(jnp.asarray(W))  # the norm overflows W's dtype
    return jnp.asarray(value, dtype=W.dtype)


def _validated(W: Any, name: str, ranks: tuple[int, ...]) -> jax.Array:
    if _is_tracer(W):
        if W.ndim not in ranks:
            want = " or ".join(str(r) for r in ranks[:3]) + (" ..." if len(ranks) > 3 else "")
            raise ValueError(f"{name} must have rank {want}, got shape {tuple(W.shape)}")
        return W.astype(_compute_dtype(W.dtype))
    W = _as_array(W, name, ranks)
    _check_finite(W, name)
    return W


def log_norm_product(norms: Any) -> jax.Array:
    r"""$\log \prod_i s_i = \sum_i \log s_i$ for positive norms $s_i$ (no overflow/underflow).

    The product of the spectral norms of 100+ layers easily leaves the float range; its logarithm
    does not. Exponentiate only at the end (or compare logs).

    Args:
      norms: positive finite numbers: a sequence, a 1-D array, or a mapping (its values are used,
        e.g. the output of ``spectral_norms``).

    Returns:
      A scalar jax.Array (float64 under x64, else float32).

    Raises:
      TypeError: norms is not numeric.
      ValueError: norms is empty, not 1-D, or holds a value <= 0, NaN or inf.

    Examples:
      >>> from genbounds import log_norm_product
      >>> import math
      >>> math.isclose(float(log_norm_product([10.0] * 200)), 200 * math.log(10.0), rel_tol=1e-6)
      True
    """
    if isinstance(norms, Mapping):
        norms = list(norms.values())
    if _is_tracer(norms):
        return jnp.sum(jnp.log(norms.astype(_compute_dtype(norms.dtype))))
    if isinstance(norms, (list, tuple)) and any(_is_tracer(s) for s in norms):
        return jnp.sum(jnp.log(jnp.stack([jnp.asarray(s) for s in norms])))
    if isinstance(norms, (list, tuple)):
        norms = [np.asarray(s) for s in norms]
        if any(s.ndim != 0 for s in norms):
            raise ValueError("norms must be a sequence of scalars, got a non-scalar element")
        norms = np.stack(norms) if norms else np.zeros((0,))
    arr = np.asarray(norms)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"norms must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"norms must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("norms must not be empty, got no values")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        bad = arr[~(np.isfinite(arr) & (arr > 0))]
        raise ValueError(f"norms must be finite and > 0, got {bad.tolist()[:5]}")
    return jnp.sum(jnp.log(jnp.asarray(arr, _compute_dtype(arr.dtype))))
