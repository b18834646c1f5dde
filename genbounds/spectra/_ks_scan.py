r"""The default rule's power-law fit as one jitted kernel, for one sample or many resamples.

For a sorted sample $x_0 \le \dots \le x_{n-1}$ (padded to a bucket size so that a handful of
compilations serve every layer), every candidate $x_{\min} = x_i$ that is the first of its value
and leaves a tail of at least ``min_tail`` gets the MLE $\hat\alpha_i = 1 + n_i/S_i$,
$S_i = \sum_{j \ge i} \ln(x_j/x_i)$ (suffix sums of the logs), and the two-sided KS distance

$$D_i = \max_{j \ge i} \max\big(F_i(x_j) - (j-i)/n_i,\; (j-i+1)/n_i - F_i(x_j)\big),
\qquad F_i(x) = 1 - e^{(1-\hat\alpha_i)(\ln x - \ln x_i)},$$

the sup distance between the fitted CDF and the empirical step function of the tail, and the
fit is the candidate of smallest $D_i$ (the first on ties).

The scan is exact and pruned (branch and bound). A maximum over some of the points of a tail is
a lower bound $B_i \le D_i$: each candidate first gets $B_i$ from its first 16 points and 48
points spread evenly over the tail of its block's first candidate (blocks of 16 consecutive
candidates share them, so that the bound needs no gather of a (candidates x points) matrix; each
candidate uses those inside its own tail; short tails are covered whole); then the ``keep``
candidates of smallest $B_i$ get their exact $D_i$, and every other candidate is ruled out by
$B_i > \min D$ (with a margin of a few ulps). Where that certificate fails for a sample (a tail
close to a pure power law, where many candidates fit about equally well), the same runs with a
quarter of the candidates kept, and where it fails again the full scan (every candidate over its
whole tail, rows in blocks of at most ``2**20 / n_pad``, fused by XLA so that a block never
exists as a matrix) runs instead, so the result is always that of the full scan. Padded sizes
up to 128 run the full scan directly (there it costs less than the bound). Resamples (the
bootstrap) run as a ``lax.map`` over the same kernel, in vmapped batches of resamples (fewer
loop steps, larger fused kernels), with a lighter first tier (`BOOTSTRAP_TIER`: 8 first and 24
spread points, 32 exact candidates; the later tiers catch the ~1% whose certificate fails, so
the result is again the full scan's); `fit_many_start` dispatches them without waiting (JAX
runs the kernel off the calling thread).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

_ROW_ELEMENTS = 1 << 20
_DENSE = 16  # first points of every tail in the lower bound
_SPREAD = 48  # points spread evenly over every tail in the lower bound
_KEEP = 32  # candidates whose exact D the pruned scan computes
_BLOCK = 16  # consecutive candidates sharing their spread points (divides every bucket size)
_FULL_MAX = 128  # bucket sizes up to this run the full scan (cheaper than the bound there)
# the bootstrap's first tier (exact rows, dense points, spread points): a lighter bound and
# fewer exact rows; its certificate fails for about 1% of the resamples of 250-1000
# eigenvalues (they take the next tiers), and it costs about 0.7x the default tier's time
BOOTSTRAP_TIER = (32, 8, 24)
# resamples per vmapped batch of lax.map: about this many elements (fewer loop steps, each a
# larger fused kernel; measured best on 2 CPU cores)
_BATCH_FULL = 1 << 16
_BATCH_PRUNED = 1 << 21


def bucket(n: int) -> int:
    """Padded size: a multiple of 32 up to 256, of 64 up to 1024, of 128 up to 4096, then of
    1024 (a few compilations serve every layer; the padding wastes at most ~25% of the work)."""
    step = 32 if n <= 256 else 64 if n <= 1024 else 128 if n <= 4096 else 1024
    return max(step, -(-int(n) // step) * step)


def _prepare(x: jax.Array, n: jax.Array, min_tail: int):
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
    return idx, L, ni, alpha, cand


def _deviation(a, Li, n_i, Lj, k):
    """max(F_i(x_j) - k/n_i, (k+1)/n_i - F_i(x_j)) for k = j - i, element-wise."""
    F = 1.0 - jnp.exp((1.0 - a) * (Lj - Li))
    return jnp.maximum(F - k / n_i, (k + 1.0) / n_i - F)


def _exact_rows(i, L, ni, alpha, n):
    """Exact D of the rows ``i`` (any int vector) over their whole tails."""
    size = L.shape[0]
    idx = jnp.arange(size, dtype=jnp.int32)
    ic = jnp.minimum(i, size - 1)
    k = (idx[None, :] - ic[:, None]).astype(L.dtype)
    dev = _deviation(alpha[ic][:, None], L[ic][:, None], ni[ic][:, None], L[None, :], k)
    ok = (k >= 0) & (idx < n)[None, :]
    return jnp.max(jnp.where(ok, dev, -jnp.inf), axis=1)


def _pick(D, idx, alpha, x, ni):
    best = jnp.argmin(D)  # the first index on ties
    return jnp.stack([jnp.where(jnp.isfinite(D[best]), alpha[best], jnp.nan), x[best],
                      D[best], ni[best]])


def _fit_full(x: jax.Array, n: jax.Array, min_tail: int) -> jax.Array:
    """(alpha, xmin, D, tail size) of one padded sorted sample with n valid values: every
    candidate over its whole tail."""
    size = x.shape[0]
    idx, L, ni, alpha, cand = _prepare(x, n, min_tail)
    rows = max(1, min(size, _ROW_ELEMENTS // size))
    nblocks = -(-size // rows)
    D = jax.lax.map(lambda b: _exact_rows(b * rows + jnp.arange(rows, dtype=jnp.int32), L, ni,
                                          alpha, n),
                    jnp.arange(nblocks, dtype=jnp.int32)).reshape(-1)[:size]
    return _pick(jnp.where(cand, D, jnp.inf), idx, alpha, x, ni)


def _lower_bound(n, idx, L, ni, alpha, dense=_DENSE, spread=_SPREAD):
    """A lower bound of every row's D from some points of its tail, without a large gather:
    its first ``dense`` points (shifted copies of L, laid out (points, rows) so that XLA
    vectorises along the rows), and the ``spread`` points spread evenly over the tail of its
    block's first row (blocks of _BLOCK consecutive rows share them; a row uses those inside
    its own tail)."""
    size = L.shape[0]
    dt = L.dtype
    Lp = jnp.concatenate([L, jnp.zeros((dense,), dt)])
    Ld = jnp.stack([Lp[k:k + size] for k in range(dense)], axis=0)  # (dense, size)
    kd = jnp.arange(dense, dtype=jnp.int32)[:, None]
    dev = _deviation(alpha[None, :], L[None, :], ni[None, :], Ld, kd.astype(dt))
    bound = jnp.max(jnp.where(idx[None, :] + kd < n, dev, -jnp.inf), axis=0)
    nb = size // _BLOCK
    start = jnp.arange(nb, dtype=jnp.int32) * _BLOCK
    span = jnp.maximum(n - 1 - start, 0).astype(dt)
    t = jnp.linspace(0.0, 1.0, spread, dtype=dt)
    G = start[:, None] + jnp.floor(t[None, :] * span[:, None]).astype(jnp.int32)  # (nb, S)
    LG = L[jnp.clip(G, 0, size - 1)]
    k = (G[:, None, :] - idx.reshape(nb, _BLOCK)[:, :, None]).astype(dt)  # (nb, R, S)
    dev = _deviation(alpha.reshape(nb, _BLOCK, 1), L.reshape(nb, _BLOCK, 1),
                     ni.reshape(nb, _BLOCK, 1), LG[:, None, :], k)
    spread_bound = jnp.max(jnp.where((k >= 0) & (G[:, None, :] < n), dev, -jnp.inf), axis=2)
    return jnp.maximum(bound, spread_bound.reshape(size))


def _fit_pruned(x: jax.Array, n: jax.Array, min_tail: int, keep: int, dense: int = _DENSE,
                spread: int = _SPREAD) -> tuple[jax.Array, jax.Array]:
    """The same fit by branch and bound, and whether its certificate holds (when it does
    not, the caller runs `_fit_full`)."""
    size = x.shape[0]
    idx, L, ni, alpha, cand = _prepare(x, n, min_tail)
    B = jnp.where(cand, _lower_bound(n, idx, L, ni, alpha, dense, spread), jnp.inf)
    keep = min(keep, size)
    _, sel = jax.lax.top_k(-B, keep)
    sel = jnp.sort(sel)
    Dsel = jnp.where(cand[sel], _exact_rows(sel, L, ni, alpha, n), jnp.inf)
    b = jnp.argmin(Dsel)  # sel ascending: the first index among ties
    dstar = Dsel[b]
    chosen = jnp.zeros((size,), bool).at[sel].set(True)
    margin = 16 * jnp.finfo(x.dtype).eps * (1.0 + jnp.abs(dstar))
    ok = jnp.all(jnp.where(cand & ~chosen, B > dstar + margin, True)) | ~jnp.isfinite(dstar)
    i = sel[b]
    res = jnp.stack([jnp.where(jnp.isfinite(dstar), alpha[i], jnp.nan), x[i], dstar, ni[i]])
    return res, ok


def _batch(rows: int, per_row: int, elements: int) -> int | None:
    b = max(1, elements // per_row)
    return None if b == 1 else min(b, rows)


@functools.partial(jax.jit, static_argnames=("min_tail",))
def _fit_many_full(xs: jax.Array, ns: jax.Array, min_tail: int) -> jax.Array:
    size = xs.shape[1]
    return jax.lax.map(lambda a: _fit_full(a[0], a[1].astype(jnp.int32), min_tail),
                       (xs, ns.astype(xs.dtype)), batch_size=_batch(xs.shape[0], size * size, _BATCH_FULL))


@functools.partial(jax.jit, static_argnames=("min_tail", "keep", "dense", "spread"))
def _fit_many_pruned(xs: jax.Array, ns: jax.Array, min_tail: int, keep: int,
                     dense: int = _DENSE, spread: int = _SPREAD):
    per_row = xs.shape[1] * (dense + spread + keep)
    return jax.lax.map(lambda a: _fit_pruned(a[0], a[1].astype(jnp.int32), min_tail, keep,
                                             dense, spread),
                       (xs, ns.astype(xs.dtype)),
                       batch_size=_batch(xs.shape[0], per_row, _BATCH_PRUNED))


def fit_many(samples: np.ndarray, counts: np.ndarray, *, min_tail: int,
             single: bool = False, prune: bool = True,
             tier: tuple[int, int, int] | None = None) -> np.ndarray:
    """Fits each row of ``samples`` (sorted ascending in its first ``counts[r]`` entries).

    ``single=True`` runs in float32 (the bootstrap: its argmin over D is not worth float64's
    cost; the point fit runs in float64 when ``jax_enable_x64`` is on). ``prune=False`` runs
    the full scan for every row (the pruned scan gives the same result; see the module
    docstring; buckets up to 128 always run the full scan, cheaper there than the bound).
    ``tier=(keep, dense, spread)`` sets the pruned scan's first tier (exact rows, points of
    the bound at the start of each tail and spread over it; default (32, 16, 48));
    `BOOTSTRAP_TIER` is the bootstrap's. The result does not depend on it.

    Returns ``(rows, 4)``: alpha (NaN where no candidate), xmin, D, tail size.
    """
    return fit_many_start(samples, counts, min_tail=min_tail, single=single, prune=prune,
                          tier=tier)()


def fit_many_start(samples: np.ndarray, counts: np.ndarray, *, min_tail: int,
                   single: bool = False, prune: bool = True,
                   tier: tuple[int, int, int] | None = None) -> Callable[[], np.ndarray]:
    """`fit_many` in two steps: this call dispatches the kernel (JAX runs it asynchronously,
    off the calling thread, so other work can proceed) and returns a function that waits for
    it, runs the fallbacks where the certificate failed, and returns the result."""
    x64 = jax.config.jax_enable_x64 and not single
    dtype = jnp.float64 if x64 else jnp.float32
    size = bucket(samples.shape[1])
    pad = np.full((samples.shape[0], size), np.inf)
    pad[:, :samples.shape[1]] = samples
    # padding is masked out; +inf keeps the sort order and the `first` test
    xs, ns = jnp.asarray(pad, dtype), jnp.asarray(counts)
    if not prune or size <= _FULL_MAX:
        out = _fit_many_full(xs, ns, min_tail)
        return lambda: np.asarray(out, np.float64)
    first = _fit_many_pruned(xs, ns, min_tail, *(tier or (_KEEP, _DENSE, _SPREAD)))

    def rows(bad: np.ndarray) -> np.ndarray:
        """``bad`` padded with its first row to a power of two (at least 8): the fallbacks
        compile once per padded count, not once per number of failed rows."""
        m = max(8, 1 << (int(bad.size) - 1).bit_length())
        return np.concatenate([bad, np.repeat(bad[:1], m - bad.size)])

    def finish() -> np.ndarray:
        res, ok = np.array(first[0], np.float64), np.array(first[1])
        wide = size // 4  # second tier: a quarter of the candidates, still 4x cheaper than full
        if not ok.all() and wide > _KEEP:
            bad = np.flatnonzero(~ok)
            pad = rows(bad)
            r2, ok2 = _fit_many_pruned(xs[pad], ns[pad], min_tail, wide)
            res[bad] = np.asarray(r2, np.float64)[:bad.size]
            ok[bad] = np.asarray(ok2)[:bad.size]
        if not ok.all():
            bad = np.flatnonzero(~ok)
            pad = rows(bad)
            full = _fit_many_full(xs[pad], ns[pad], min_tail)
            res[bad] = np.asarray(full, np.float64)[:bad.size]
        return res

    return finish
