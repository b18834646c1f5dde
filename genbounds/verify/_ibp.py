r"""Interval bound propagation (IBP).

**Proposition** (Gowal et al. 2018, "On the Effectiveness of Interval Bound Propagation for
Training Verifiably Robust Models", arXiv:1810.12715, eq. 6; interval arithmetic). If
$l \le x \le u$ element-wise, with centre $m = (u + l)/2$ and radius $r = (u - l)/2$, then an
affine map $y = Lx + b$ satisfies $Lm + b - |L|r \le y \le Lm + b + |L|r$ ($|L|$ the map with
absolute coefficients); a monotone map (max/min pooling) maps $[l, u]$ into $[f(l), f(u)]$; an
element-wise $g(t) = a t + d\,\mathrm{relu}(t)$, linear on each side of 0, attains its extremes
over $[l, u]$ at $l$, $u$ or $0$ (when $l < 0 < u$).

The input set is the smallest box containing the $\ell_p$ ball ($x_0 \pm \varepsilon$, for
$\ell_2$ and $\ell_\infty$ alike). With ``enclose=True`` every interval is widened by the
float rounding of its computation (`_rounding.py`), so it contains the exact one.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._ball import box
from ._ops import Op
from ._rounding import gamma, magnitude, outward, tiny, unit


def act_interval(op: Op, lo: jnp.ndarray, hi: jnp.ndarray,
                 enclose: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The range of $g(t) = a t + d\\,\\mathrm{relu}(t)$ over $[l, u]$ element-wise."""
    a = jnp.asarray(op.slope_neg, lo.dtype)
    d = jnp.asarray(op.slope_jump, lo.dtype)
    gl = a * lo + d * jnp.maximum(lo, 0)
    gu = a * hi + d * jnp.maximum(hi, 0)
    cross = (lo < 0) & (hi > 0)
    zero = jnp.zeros_like(lo)
    low = jnp.minimum(gl, gu)
    high = jnp.maximum(gl, gu)
    out = (jnp.where(cross, jnp.minimum(low, zero), low),
           jnp.where(cross, jnp.maximum(high, zero), high))
    if not enclose:
        return out
    # two products and a sum per endpoint, each off by at most u of its terms
    slack = (4 * unit(lo.dtype) * (jnp.abs(a) + jnp.abs(d)) * magnitude((lo, hi))
             + 4 * tiny(lo.dtype))
    return outward(*out, slack)


def ibp_step(op: Op, bounds: list, enclose: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The interval of one record from the intervals of its inputs (``enclose``: widened by
    the rounding of the computation, `_rounding.py`)."""
    args = [bounds[j] for j in op.inputs]
    if op.kind == "affine":
        mids = [(lo + hi) / 2 for lo, hi in args]
        rads = [(hi - lo) / 2 for lo, hi in args]
        if enclose:
            u = unit(mids[0].dtype)
            # [mid - rad, mid + rad] contains [lo, hi] despite the rounding of mid and rad
            rads = [r * (1 + 4 * u) + 2 * u * magnitude(iv) for r, iv in zip(rads, args,
                                                                             strict=True)]
        m = op.full(mids)
        r = op.absl(rads)
        if not enclose:
            return m - r, m + r
        g = gamma(op.terms, m.dtype)
        b0 = op.full([jnp.zeros((1,) + a[0].shape[1:], m.dtype) for a in args])
        err = op.absl([jnp.abs(x) for x in mids]) + jnp.abs(b0)
        flush = 2 * (op.terms + 2) * tiny(m.dtype)  # underflow
        return outward(m, m, r * (1 + 2 * g) + g * err + flush)
    if op.kind == "monotone":
        return op.full([args[0][0]]), op.full([args[0][1]])
    if op.kind == "act":
        return act_interval(op, *args[0], enclose=enclose)
    raise AssertionError(op.kind)  # pragma: no cover


def ibp(ops: list[Op], x0: jnp.ndarray, eps: jnp.ndarray, enclose: bool = False) -> list:
    """Interval bounds ``(lower, upper)`` of every record over the ball (each (B, *shape))."""
    bounds: list = [box(x0, eps, enclose)]
    for op in ops[1:]:
        bounds.append(ibp_step(op, bounds, enclose))
    return bounds
