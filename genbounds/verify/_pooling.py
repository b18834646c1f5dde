r"""The linear relaxation of max and min pooling.

Let $y = \max_{k \in W} x_k$ over a window $W$ whose inputs lie in intervals $[l_k, u_k]$.

* **Lower line** (Singh et al. 2019, "An Abstract Domain for Certifying Neural Networks"
  (DeepPoly), POPL, §4, its max-pool transformer): $y \ge x_{j^\ast}$ with
  $j^\ast = \arg\max_k l_k$, since the maximum is at least each of its arguments.
* **Upper line**: with $j = \arg\max_k u_k$ and $M = \max_{k \ne j} u_k$ (the second largest
  upper bound; $-\infty$ for a window of one input),
  $y \le \max(x_j, M) \le s\,x_j + (1 - s)\,u_j$ with
  $s = (u_j - \max(l_j, M)) / (u_j - l_j)$ ($s = 0$ where $l_j = u_j$): the first
  inequality because every other input is at most $M$, the second because $t \mapsto \max(t,
  M)$ is convex, so on $[l_j, u_j]$ it lies below its chord through $(l_j, \max(l_j, M))$ and
  $(u_j, u_j)$. The line is never above DeepPoly's constant upper bound $\max_k u_k = u_j$
  on the box, and where $j$ dominates ($l_j \ge M$) it is $x_j$ itself: $s = 1$, the exact
  case of DeepPoly (then $j = j^\ast$, up to ties). It is the ReLU upper line of `_crown.py`
  applied to $\max(x_j, M) = M + \mathrm{relu}(x_j - M)$.

A min pool is $\min_k x_k = -\max_k(-x_k)$: the same with $-x$ on $[-u, -l]$. Padding
(windows that overlap the border) contributes $-\infty$ to a max, as in the network's own
evaluation, and is never chosen; a window made only of padding is refused when the network is
read (`_ops.py`). Ties pick the input with the smallest index: any choice is sound.

In the backward pass (`_crown.py`) a coefficient $\lambda$ of $y$ takes the lower line where
$\lambda \ge 0$ and the upper where $\lambda < 0$; the lines of every output of the window are
summed into the coefficients of the input they pick (windows may overlap). In the forward pass
(`_forward.py`) the output's lower function is that of $x_{j^\ast}$ and its upper one $s$ times
that of $x_j$ plus the intercept ($s \ge 0$).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._ops import Op
from ._rounding import tiny, unit

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
    """Combine two windows' states (largest lower bound and its index; largest upper bound,
    its index; the largest upper bound of the other inputs and its index): associative and
    commutative, ties by the smallest index."""
    al, ai, au, aui, a2, a2i = a
    cl, ci, cu, cui, c2, c2i = c

    def wins(v, i, w, k):
        return (v > w) | ((v == w) & (i < k))

    pl = wins(al, ai, cl, ci)
    pu = wins(au, aui, cu, cui)
    # the runner-up: the loser's best against the winner's runner-up
    r_v, r_i = jnp.where(pu, cu, au), jnp.where(pu, cui, aui)
    w2, w2i = jnp.where(pu, a2, c2), jnp.where(pu, a2i, c2i)
    p2 = wins(r_v, r_i, w2, w2i)
    return (jnp.where(pl, al, cl), jnp.where(pl, ai, ci), jnp.where(pu, au, cu),
            jnp.where(pu, aui, cui), jnp.where(p2, r_v, w2), jnp.where(p2, r_i, w2i))


class Lines(NamedTuple):
    r"""The relaxation of each output (B, *output) of a pool, in terms of $z = s x$ ($s$ =
    `sign`): $z_{\mathrm{low}} \le \max z \le$ ``slope`` $z_{\mathrm{up}}$ + ``icpt``."""

    low: jnp.ndarray  # flat index (per example) of j*: the largest lower bound of z
    up: jnp.ndarray  # flat index of j: the largest upper bound of z
    slope: jnp.ndarray  # in [0, 1]
    icpt: jnp.ndarray


def choice(op: Op, lo: jnp.ndarray, hi: jnp.ndarray, enclose: bool = False) -> Lines:
    """The lines of the pool ``op`` whose input lies in ``[lo, hi]`` (B, *input), in terms of
    $z = s x$ (see above; differentiable in the bounds). ``enclose``: the intercept is raised
    above the rounding of the slope and itself, so the line holds in real arithmetic."""
    s = sign(op)
    lz, uz = (lo, hi) if s == 1 else (-hi, -lo)
    b = lo.shape[0]
    out = (b,) + tuple(op.shape)
    lz_, uz_ = lax.stop_gradient(lz), lax.stop_gradient(uz)
    ids = jnp.broadcast_to(jnp.arange(math.prod(lo.shape[1:]), dtype=jnp.int32).reshape(
        (1,) + lo.shape[1:]), lo.shape)
    ninf = np.asarray(-np.inf, lo.dtype)
    big = np.asarray(_BIG, np.int32)
    _, low, _, up, _, second = lax.reduce_window(
        (lz_, ids, uz_, ids, jnp.full_like(uz_, -np.inf), jnp.full_like(ids, _BIG)),
        (ninf, big, ninf, big, ninf, big), _first, *_geometry(op, lo.shape))
    low, up, second = (v.reshape(out) for v in (low, up, second))
    u_j, l_j = gather(uz, up, 0), gather(lz, up, 0)
    has = second != _BIG
    m = gather(uz, jnp.where(has, second, 0), 0)
    m = jnp.maximum(l_j, jnp.where(has, m, l_j))  # max(l_j, M)
    width = u_j - l_j
    slope = jnp.where(width > 0, (u_j - m) / jnp.where(width > 0, width, 1), 0)
    icpt = u_j - slope * u_j
    if enclose:  # the rounding of the slope (3 operations) and of the intercept (2)
        uu, t = unit(lo.dtype), tiny(lo.dtype)
        icpt = icpt + 8 * uu * (jnp.abs(u_j) + jnp.abs(l_j) + jnp.abs(icpt)) + 4 * t
    return Lines(low, up, slope, icpt)


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
