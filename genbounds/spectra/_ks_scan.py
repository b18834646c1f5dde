r"""The default rule's power-law fit as one jitted kernel, for one sample or many resamples.

For a sorted sample $x_0 \le \dots \le x_{n-1}$ (padded to a bucket size so that a handful of
compilations serve every layer), every candidate $x_{\min} = x_i$ that is the first of its value
and leaves a tail of at least ``min_tail`` gets the MLE $\hat\alpha_i = 1 + n_i/S_i$,
$S_i = \sum_{j \ge i} \ln(x_j/x_i)$ (suffix sums of the logs), and the two-sided KS distance

$$D_i = \max_{j \ge i} \max\big(F_i(x_j) - (j-i)/n_i,\; (j-i+1)/n_i - F_i(x_j)\big),
\qquad F_i(x) = 1 - e^{(1-\hat\alpha_i)(\ln x - \ln x_i)},$$

the sup distance between the fitted CDF and the empirical step function of the tail. XLA fuses
the exponential, the comparison and the reduction, so a block of candidate rows never exists as
a matrix in memory; rows go in blocks of at most ``2**20 / n_pad`` at a time. Resamples
(the bootstrap) run as a ``lax.map`` over the same kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_ROW_ELEMENTS = 1 << 20


def bucket(n: int) -> int:
    """Padded size: a multiple of 32 up to 256, of 128 up to 4096, then of 1024 (a few
    compilations serve every layer; the padding wastes at most ~25% of the work)."""
    step = 32 if n <= 256 else 128 if n <= 4096 else 1024
    return max(step, -(-int(n) // step) * step)


def _fit_one(x: jax.Array, n: jax.Array, min_tail: int) -> jax.Array:
    """(alpha, xmin, D, tail size) of one padded sorted sample with n valid values."""
    size = x.shape[0]
    idx = jnp.arange(size, dtype=jnp.int32)
    valid = idx < n
    L = jnp.where(valid, jnp.log(jnp.where(valid, x, 1.0)), 0.0)
    suffix = jnp.cumsum(L[::-1])[::-1]
    ni = (n - idx).astype(x.dtype)
    S = suffix - ni * L
    alpha = 1.0 + ni / jnp.where(S > 0, S, 1.0)
    first = jnp.concatenate([jnp.ones((1,), bool), x[1:] != x[:-1]])
    cand = (idx <= n - min_tail) & (S > 0) & first
    rows = max(1, min(size, _ROW_ELEMENTS // size))
    nblocks = -(-size // rows)
    pad = nblocks * rows - size

    def block(b):
        i = b * rows + jnp.arange(rows, dtype=jnp.int32)
        ic = jnp.minimum(i, size - 1)
        a, Li, n_i = alpha[ic], L[ic], ni[ic]
        k = (idx[None, :] - i[:, None]).astype(x.dtype)
        F = 1.0 - jnp.exp((1.0 - a)[:, None] * (L[None, :] - Li[:, None]))
        dev = jnp.maximum(F - k / n_i[:, None], (k + 1.0) / n_i[:, None] - F)
        ok = (k >= 0) & valid[None, :]
        return jnp.max(jnp.where(ok, dev, -jnp.inf), axis=1)

    D = jax.lax.map(block, jnp.arange(nblocks, dtype=jnp.int32)).reshape(-1)
    D = D[:size] if pad else D
    D = jnp.where(cand, D, jnp.inf)
    best = jnp.argmin(D)
    return jnp.stack([jnp.where(jnp.isfinite(D[best]), alpha[best], jnp.nan), x[best], D[best],
                      ni[best]])


@functools.partial(jax.jit, static_argnames=("min_tail",))
def _fit_many(xs: jax.Array, ns: jax.Array, min_tail: int) -> jax.Array:
    return jax.lax.map(lambda a: _fit_one(a[0], a[1].astype(jnp.int32), min_tail),
                       (xs, ns.astype(xs.dtype)))


def fit_many(samples: np.ndarray, counts: np.ndarray, *, min_tail: int,
             single: bool = False) -> np.ndarray:
    """Fits each row of ``samples`` (sorted ascending in its first ``counts[r]`` entries).

    ``single=True`` runs in float32 (the bootstrap: its argmin over D is not worth float64's
    cost; the point fit runs in float64 when ``jax_enable_x64`` is on).

    Returns ``(rows, 4)``: alpha (NaN where no candidate), xmin, D, tail size.
    """
    x64 = jax.config.jax_enable_x64 and not single
    dtype = jnp.float64 if x64 else jnp.float32
    size = bucket(samples.shape[1])
    pad = np.full((samples.shape[0], size), np.inf)
    pad[:, :samples.shape[1]] = samples
    # padding is masked out; +inf keeps the sort order and the `first` test
    res = _fit_many(jnp.asarray(pad, dtype), jnp.asarray(counts), min_tail)
    return np.asarray(res, np.float64)
