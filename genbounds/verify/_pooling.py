r"""The linear relaxation of max and min pooling.

**Relaxation** (Singh et al. 2019, "An Abstract Domain for Certifying Neural Networks"
(DeepPoly), POPL, §4, its max-pool transformer). Let $y = \max_{k \in W} x_k$ over a window $W$
whose inputs lie in intervals $[l_k, u_k]$, and let $j^\ast = \arg\max_k l_k$. Then

* $y \ge x_{j^\ast}$ (the maximum is at least each of its arguments);
* $y \le \max_k u_k$ (each argument is at most its upper bound);
* if $l_{j^\ast} \ge \max_{k \ne j^\ast} u_k$ ($j^\ast$ *dominates*), $y = x_{j^\ast}$ exactly,
  since then $x_{j^\ast} \ge l_{j^\ast} \ge u_k \ge x_k$ for every other $k$.

A min pool is $\min_k x_k = -\max_k(-x_k)$: the same with $-x$ on $[-u, -l]$, so its element is
the one with the smallest upper bound, its upper line that element and its lower line
$\min_k l_k$ unless it dominates. Padding (windows that overlap the border) contributes
$-\infty$ to a max, as in the network's own evaluation, and is never chosen; a window made only
of padding is refused when the network is read (`_ops.py`). Ties pick the element with the
smallest index: any choice is sound.

In the backward pass (`_crown.py`) a coefficient $\lambda$ of $y$ takes the lower line where
$\lambda \ge 0$ and the upper where $\lambda < 0$; the lines of every output of the window are
summed into the coefficients of the input they pick (windows may overlap). In the forward pass
(`_forward.py`) the output's linear functions are those of the chosen input, or the constant.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._ops import Op

_BIG = np.iinfo(np.int32).max


def _geometry(op: Op, batched: tuple[int, ...]) -> tuple:
    """``reduce_window``'s window, strides, padding and dilations for the pool ``op``."""
    info = op.pool
    if info["kind"].startswith("global_"):
        n = len(batched)
        axes = info["axes"]
        wd = tuple(batched[a] if a in axes else 1 for a in range(n))
        return wd, (1,) * n, ((0, 0),) * n, (1,) * n, (1,) * n
    p = info["params"]
    return (tuple(p["window_dimensions"]), tuple(p["window_strides"]), tuple(p["padding"]),
            tuple(p["base_dilation"]), tuple(p["window_dilation"]))


def sign(op: Op) -> int:
    """1 for a max pool, -1 for a min pool."""
    return -1 if op.pool["kind"].endswith("min") else 1


def _first(a, c):
    """Combine two windows' states (lower max, its index, upper max, its index, the upper
    maximum of the other elements): associative and commutative, ties by smallest index."""
    al, ai, au, aui, au2 = a
    cl, ci, cu, cui, cu2 = c
    pl = (al > cl) | ((al == cl) & (ai < ci))
    pu = (au > cu) | ((au == cu) & (aui < cui))
    return (jnp.where(pl, al, cl), jnp.where(pl, ai, ci), jnp.where(pu, au, cu),
            jnp.where(pu, aui, cui),
            jnp.where(pu, jnp.maximum(au2, cu), jnp.maximum(cu2, au)))


def choice(op: Op, lo: jnp.ndarray, hi: jnp.ndarray
           ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    r"""For each output of the pool ``op`` with input intervals ``[lo, hi]`` (B, *input):
    the flat index (per example) of the chosen input $j^\ast$ (B, *output), whether it
    dominates (B, *output) and $\max_k u_k$ of $s x$ (B, *output), $s$ = `sign` (the
    constant upper line of the maximum of $s x$, differentiable in the bounds)."""
    s = sign(op)
    lz, uz = (lo, hi) if s == 1 else (-hi, -lo)
    b = lo.shape[0]
    geo = _geometry(op, lo.shape)
    out = (b,) + tuple(op.shape)
    top = lax.reduce_window(uz, np.asarray(-np.inf, uz.dtype), lax.max, *geo).reshape(out)
    lz_, uz_ = lax.stop_gradient(lz), lax.stop_gradient(uz)
    ids = jnp.broadcast_to(jnp.arange(math.prod(lo.shape[1:]), dtype=jnp.int32).reshape(
        (1,) + lo.shape[1:]), lo.shape)
    ninf = np.asarray(-np.inf, lo.dtype)
    big = np.asarray(_BIG, np.int32)
    _, idx, u1, uidx, u2 = lax.reduce_window(
        (lz_, ids, uz_, ids, jnp.full_like(uz_, -np.inf)), (ninf, big, ninf, big, ninf),
        _first, *geo)
    idx, u1, uidx, u2 = (v.reshape(out) for v in (idx, u1, uidx, u2))
    other = jnp.where(uidx == idx, u2, u1)  # the largest upper bound of the other elements
    lsel = jnp.take_along_axis(lz_.reshape(b, -1), idx.reshape(b, -1), axis=1).reshape(out)
    return idx, lsel >= other, top


def gather(v: jnp.ndarray, idx: jnp.ndarray, lead: int) -> jnp.ndarray:
    """``v`` (B, *L, *input), with ``lead`` axes L, at the chosen inputs ``idx``
    (B, *output): (B, *L, *output)."""
    b = idx.shape[0]
    shape_l = v.shape[1:1 + lead]
    flat = v.reshape((b, math.prod(shape_l), -1))
    pick = jnp.broadcast_to(idx.reshape(b, 1, -1), (b, flat.shape[1], idx[0].size))
    return jnp.take_along_axis(flat, pick, axis=2).reshape((b,) + shape_l + idx.shape[1:])


def scatter(coef: jnp.ndarray, idx: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """The coefficients ``coef`` (B, K, *output) of the chosen inputs ``idx`` (B, *output)
    summed into the input's (B, K, *shape)."""
    b, k = coef.shape[:2]
    n = math.prod(shape)

    def one(c, i):
        return jnp.zeros((k, n), c.dtype).at[:, i].add(c)

    out = jax.vmap(one)(coef.reshape(b, k, -1), idx.reshape(b, -1))
    return out.reshape((b, k) + tuple(shape))
