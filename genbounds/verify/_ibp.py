r"""Interval bound propagation (IBP).

**Proposition** (Gowal et al. 2018, "On the Effectiveness of Interval Bound Propagation for
Training Verifiably Robust Models", arXiv:1810.12715, eq. 6; interval arithmetic). If
$l \le x \le u$ element-wise, with centre $m = (u + l)/2$ and radius $r = (u - l)/2$, then an
affine map $y = Lx + b$ satisfies $Lm + b - |L|r \le y \le Lm + b + |L|r$ ($|L|$ the map with
absolute coefficients); a monotone map (max/min pooling) maps $[l, u]$ into $[f(l), f(u)]$; an
element-wise $g(t) = a t + d\,\mathrm{relu}(t)$, linear on each side of 0, attains its extremes
over $[l, u]$ at $l$, $u$ or $0$ (when $l < 0 < u$).

The input set is the smallest box containing the $\ell_p$ ball ($x_0 \pm \varepsilon$, for
$\ell_2$ and $\ell_\infty$ alike).
"""

from __future__ import annotations

import jax.numpy as jnp

from ._ball import box
from ._ops import Op


def act_interval(op: Op, lo: jnp.ndarray, hi: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The range of $g(t) = a t + d\\,\\mathrm{relu}(t)$ over $[l, u]$ element-wise."""
    a = jnp.asarray(op.slope_neg, lo.dtype)
    d = jnp.asarray(op.slope_jump, lo.dtype)
    gl = a * lo + d * jnp.maximum(lo, 0)
    gu = a * hi + d * jnp.maximum(hi, 0)
    cross = (lo < 0) & (hi > 0)
    zero = jnp.zeros_like(lo)
    low = jnp.minimum(gl, gu)
    high = jnp.maximum(gl, gu)
    return (jnp.where(cross, jnp.minimum(low, zero), low),
            jnp.where(cross, jnp.maximum(high, zero), high))


def ibp_step(op: Op, bounds: list) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The interval of one record from the intervals of its inputs."""
    args = [bounds[j] for j in op.inputs]
    if op.kind == "affine":
        mids = [(lo + hi) / 2 for lo, hi in args]
        rads = [(hi - lo) / 2 for lo, hi in args]
        m = op.full(mids)
        r = op.absl(rads)
        return m - r, m + r
    if op.kind == "monotone":
        return op.full([args[0][0]]), op.full([args[0][1]])
    if op.kind == "act":
        return act_interval(op, *args[0])
    raise AssertionError(op.kind)  # pragma: no cover


def ibp(ops: list[Op], x0: jnp.ndarray, eps: jnp.ndarray) -> list:
    """Interval bounds ``(lower, upper)`` of every record over the ball (each (B, *shape))."""
    bounds: list = [box(x0, eps)]
    for op in ops[1:]:
        bounds.append(ibp_step(op, bounds))
    return bounds
