"""Quantisation of the subspace coordinates: k-means, then a straight-through fine-tune.

Lotfi et al. (2022, §4) quantise $z \\in \\mathbb{R}^d$ to L levels: the centroids $c \\in
\\mathbb{R}^L$ start from one-dimensional k-means (Lloyd's iterations from the quantiles of z),
then the centroids and z are trained together through the quantiser
$q(z)_i = c_{s_i}$, $s_i = \\arg\\min_k |z_i - c_k|$: the loss reaches $c$ exactly (a gather) and
reaches $z$ by the straight-through estimator (Bengio et al. 2013), i.e. the forward pass uses
$q(z)$ and the backward pass treats $q$ as the identity in $z$.

Before that fine-tune, `compensate` can replace plain rounding to the nearest centroid by
error-compensating rounding (the optimal-brain-surgeon update of Hassibi & Stork 1993 in the
column-by-column form of GPTQ, Frantar et al., ICLR 2023): with a curvature matrix H of the loss
in z (`fisher_z` of `_subspace.py`), the coordinates are rounded one at a time, in decreasing
order of $H_{ii}$, and after each the still-unrounded coordinates move to minimise the quadratic
model $(z' - z)^\\top H (z' - z)$ given the rounded ones.

The network that is coded and bounded is $\\theta_0 + P\\,c_{s}$ with the centroids rounded to the
codebook's float format (`round_codebook`), evaluated exactly as coded.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

CODEBOOK_DTYPES = {16: np.float16, 32: np.float32}


def nearest(z: jax.Array, centroids: jax.Array) -> jax.Array:
    """$s_i = \\arg\\min_k |z_i - c_k|$ (the lowest k on a tie), int32 of z's shape."""
    return jnp.argmin(jnp.abs(z[:, None] - centroids[None, :]), axis=1).astype(jnp.int32)


@partial(jax.jit, static_argnums=(1, 2))
def kmeans_1d(z: jax.Array, levels: int, iterations: int = 100) -> tuple[jax.Array, jax.Array]:
    """Lloyd's k-means on the scalars z with `levels` centroids started at the quantiles
    $(k + 1/2)/L$ of z; an empty cluster keeps its centroid.

    Returns:
      (centroids (L,) sorted ascending, symbols (d,) int32).

    Examples:
      >>> c, s = kmeans_1d(jnp.array([0.0, 0.1, 5.0, 5.2]), 2)
      >>> [round(float(v), 2) for v in c], s.tolist()
      ([0.05, 5.1], [0, 0, 1, 1])
    """
    q = (jnp.arange(levels, dtype=z.dtype) + 0.5) / levels
    c0 = jnp.quantile(z, q)

    def lloyd(_, c):
        s = nearest(z, c)
        one_hot = jax.nn.one_hot(s, levels, dtype=z.dtype)
        counts = jnp.sum(one_hot, axis=0)
        sums = jnp.sum(one_hot * z[:, None], axis=0)
        return jnp.sort(jnp.where(counts > 0, sums / jnp.maximum(counts, 1), c))

    c = jax.lax.fori_loop(0, iterations, lloyd, c0)
    return c, nearest(z, c)


def straight_through(state: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The decode of the fine-tune: state ``(z, centroids)`` -> $q(z)$, exact gradient to the
    centroids, straight-through gradient to z."""
    z, c = state
    q = c[nearest(jax.lax.stop_gradient(z), jax.lax.stop_gradient(c))]
    return q + (z - jax.lax.stop_gradient(z))


def round_codebook(centroids, bits: int) -> np.ndarray:
    """The centroids in the codebook's float format (float16 for 16 bits, float32 for 32),
    returned as float32 numpy values: the numbers the decoder reads.

    Raises:
      ValueError: `bits` not 16 or 32; a centroid not finite in that format (float16 overflows
        beyond 65504).
    """
    if bits not in CODEBOOK_DTYPES:
        raise ValueError(f"codebook_bits must be 16 or 32, got {bits!r}")
    with np.errstate(over="ignore"):
        r = np.asarray(centroids, np.float32).astype(CODEBOOK_DTYPES[bits])
    if not np.all(np.isfinite(r)):
        raise ValueError(f"a centroid is not finite in the {bits}-bit codebook: "
                         f"{np.asarray(centroids).tolist()}")
    return r.astype(np.float32)


def compact(centroids: np.ndarray, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drops the centroids no symbol uses (and merges equal centroids), relabelling the symbols:
    the code then pays for the levels in use only. Returns (centroids, symbols) as numpy."""
    c = np.asarray(centroids)
    s = np.asarray(symbols)
    used, inverse = np.unique(c[s], return_inverse=True)
    return used.astype(c.dtype), inverse.reshape(s.shape).astype(np.int32)


def compensate(z, centroids, H, *, damping: float = 0.01) -> np.ndarray:
    r"""Error-compensating rounding of z to the centroids (GPTQ, Frantar et al. 2023, Algorithm 1
    with one column per block; the OBS update of Hassibi & Stork 1993).

    With $H \leftarrow H + \lambda\,\overline{H_{ii}}\,I$ ($\lambda$ = `damping`) and the
    coordinates in decreasing order of $H_{ii}$, coordinate i is rounded to its nearest centroid
    $q_i$ and every later coordinate j moves by $-(z_i - q_i)\,U_{ij}/U_{ii}$, U the upper
    Cholesky factor of $H^{-1}$ restricted to the coordinates not yet rounded; for two coordinates
    this is $z_1 \leftarrow z_1 + (z_0 - q_0) H_{10}/H_{11}$, the minimiser of the quadratic
    model given $q_0$. Float64 numpy.

    Returns:
      (d,) float64, every entry one of the centroids.

    Raises:
      ValueError: H not (d, d), not finite, or not positive definite after damping.
    """
    w = np.asarray(z, np.float64).copy()
    c = np.asarray(centroids, np.float64)
    H = np.asarray(H, np.float64)
    d = w.shape[0]
    if H.shape != (d, d) or not np.all(np.isfinite(H)):
        raise ValueError(f"H must be a finite ({d}, {d}) matrix, got shape {H.shape}")
    H = (H + H.T) / 2 + float(damping) * max(float(np.mean(np.diag(H))), 1e-12) * np.eye(d)
    order = np.argsort(-np.diag(H), kind="stable")
    try:
        U = np.linalg.cholesky(np.linalg.inv(H[np.ix_(order, order)])).T
    except np.linalg.LinAlgError as e:
        raise ValueError("H is not positive definite after damping; raise the damping") from e
    w = w[order]
    for i in range(d):
        q = c[np.argmin(np.abs(c - w[i]))]
        err = (w[i] - q) / U[i, i]
        w[i] = q
        w[i + 1:] -= err * U[i, i + 1:]
    out = np.empty(d)
    out[order] = w
    return out
