"""Quantisation of the subspace coordinates: k-means, then a straight-through fine-tune.

Lotfi et al. (2022, §4) quantise $z \\in \\mathbb{R}^d$ to L levels: the centroids $c \\in
\\mathbb{R}^L$ start from one-dimensional k-means (Lloyd's iterations from the quantiles of z),
then the centroids and z are trained together through the quantiser
$q(z)_i = c_{s_i}$, $s_i = \\arg\\min_k |z_i - c_k|$: the loss reaches $c$ exactly (a gather) and
reaches $z$ by the straight-through estimator (Bengio et al. 2013), i.e. the forward pass uses
$q(z)$ and the backward pass treats $q$ as the identity in $z$.

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
