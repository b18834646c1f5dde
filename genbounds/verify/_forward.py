r"""Forward linear bound propagation: linear lower and upper functions of the input for every
record, in one pass — a cheaper source of pre-activation intervals than a backward CROWN pass
per layer.

**Proposition** (forward mode of linear relaxation: Weng et al. 2018, "Towards Fast Computation
of Certified Robustness for ReLU Networks" (Fast-Lin), ICML, arXiv:1804.09699, Theorem 3.5;
Xu et al. 2020, arXiv:2002.12920, §3.2). Suppose $\underline h(x) \le h(x) \le \overline h(x)$
on the ball with $\underline h, \overline h$ affine in $x$. Then

* an affine record $y = Lh + b$: with $\mu = (\overline h + \underline h)/2$ and
  $\rho = (\overline h - \underline h)/2 \ge 0$ on the ball, $L\mu - |L|\rho + b \le y \le
  L\mu + |L|\rho + b$, both affine in $x$ ($= L^+\underline h + L^-\overline h + b$ and its
  mirror), records with several inputs summing their terms;
* $\mathrm{relu}(t)$ with the lines of `_crown.py` on the interval $[l, u]$ of $t$:
  $\mathrm{relu}(t) \ge \alpha t \ge \alpha\,\underline h$ and
  $\mathrm{relu}(t) \le s t + c \le s\,\overline h + c$ ($\alpha, s \ge 0$); an activation
  $g(t) = a t + d\,\mathrm{relu}(t)$ combines them by the signs of $a$ and $d$;
* max and min pooling: the lines of `_pooling.py` composed with the functions of the inputs
  they read (the upper line's slope is $\ge 0$).

Each record's interval is the concretisation of its two functions over the ball (`_ball.py`),
intersected with interval propagation. The cost is one pass of every record over $d$
coefficient images per example ($d$ the input dimension), against a backward pass per layer
with two specifications per neuron for layer-by-layer CROWN; the intervals are looser.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._ball import box, concretise
from ._crown import relu_lines
from ._ibp import ibp_step
from ._ops import Op
from ._pooling import choice as pool_choice
from ._pooling import gather as pool_gather
from ._pooling import sign as pool_sign


def _apply(fn, parts, b: int, d: int):
    """A linear record applied to coefficient tensors (B, d, *shape) of each input."""
    flat = [p.reshape((b * d,) + p.shape[2:]) for p in parts]
    out = fn(flat)
    return out.reshape((b, d) + out.shape[1:])


def input_functions(x0: jnp.ndarray) -> tuple:
    """The input's own linear bounds: $x \\le x \\le x$ (coefficients (B, d, *input))."""
    b, shape0 = x0.shape[0], x0.shape[1:]
    d = 1
    for s in shape0:
        d *= s
    eye = jnp.eye(d, dtype=x0.dtype).reshape((1, d) + shape0)
    eye = jnp.broadcast_to(eye, (b, d) + shape0)
    zero = jnp.zeros_like(x0)
    return (eye, zero, eye, zero)


def forward_step(op: Op, fns: list, bounds: list) -> tuple:
    """The linear lower and upper functions ``(W_lower, c_lower, W_upper, c_upper)`` of one
    record (the functions $W \\cdot x + c$) from those of its inputs ``fns`` and, for an
    activation, the interval of its input in ``bounds``."""
    b, d = fns[0][0].shape[:2]
    dtype = fns[0][0].dtype
    if op.kind == "affine":
        mids = [((fns[j][0] + fns[j][2]) / 2, (fns[j][1] + fns[j][3]) / 2) for j in op.inputs]
        rads = [((fns[j][2] - fns[j][0]) / 2, (fns[j][3] - fns[j][1]) / 2) for j in op.inputs]
        lw = _apply(op.lin, [m[0] for m in mids], b, d)
        aw = _apply(op.absl, [r[0] for r in rads], b, d)
        lc = op.full([m[1] for m in mids])
        ac = op.absl([r[1] for r in rads])
        return (lw - aw, lc - ac, lw + aw, lc + ac)
    if op.kind == "act":
        j = op.inputs[0]
        lo, hi = bounds[j]
        low, s, icpt = relu_lines(lo, hi, None)
        wl, cl, wh, ch = fns[j]
        # relu(t) in [low * lower(t), s * upper(t) + icpt]
        rl = (low[:, None] * wl, low * cl)
        ru = (s[:, None] * wh, s * ch + icpt)
        a = jnp.asarray(op.slope_neg, dtype)
        dd = jnp.asarray(op.slope_jump, dtype)
        ap, an = jnp.maximum(a, 0), jnp.minimum(a, 0)
        dp, dn = jnp.maximum(dd, 0), jnp.minimum(dd, 0)
        return (ap * wl + an * wh + dp * rl[0] + dn * ru[0],
                ap * cl + an * ch + dp * rl[1] + dn * ru[1],
                ap * wh + an * wl + dp * ru[0] + dn * rl[0],
                ap * ch + an * cl + dp * ru[1] + dn * rl[1])
    if op.kind == "monotone":  # max / min pooling, `_pooling.py`
        j = op.inputs[0]
        lines = pool_choice(op, *bounds[j])
        sl, ic = lines.slope, lines.icpt
        wl, cl, wh, ch = fns[j]

        def at(w, c, idx):  # an input's function (coefficients, constant) at the picks
            return pool_gather(w, idx, 1), pool_gather(c, idx, 0)

        if pool_sign(op) == 1:  # max x >= x_low; max x <= slope x_up + icpt (slope >= 0)
            (w_lo, c_lo), (w_up, c_up) = at(wl, cl, lines.low), at(wh, ch, lines.up)
            return w_lo, c_lo, sl[:, None] * w_up, sl * c_up + ic
        # min x = -max(-x): <= x_low (the smallest upper bound), >= slope x_up - icpt
        (w_lo, c_lo), (w_up, c_up) = at(wl, cl, lines.up), at(wh, ch, lines.low)
        return sl[:, None] * w_lo, sl * c_lo - ic, w_up, c_up
    raise AssertionError(op.kind)  # pragma: no cover


def forward_interval(f: tuple, x0: jnp.ndarray, eps: jnp.ndarray, norm: str,
                     lo: jnp.ndarray, hi: jnp.ndarray,
                     enclose: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The interval of a record from its linear functions ``f`` over the ball, intersected
    with the interval ``[lo, hi]`` it has from elsewhere (``enclose``: the concretisation's
    rounding enclosed, `_ball.concretise`; the functions' own rounding is the caller's)."""
    b, d = f[0].shape[:2]
    shape0 = x0.shape[1:]

    def spec(w):  # (B, d, *shape) -> (B, n, *input): specifications over the input
        w = w.reshape((b, d, -1))
        return jnp.swapaxes(w, 1, 2).reshape((b, w.shape[2]) + shape0)

    w_lo, c_lo, w_hi, c_hi = f
    low = concretise(spec(w_lo), c_lo.reshape((b, -1)), x0, eps, norm,
                     enclose).reshape(lo.shape)
    high = -concretise(-spec(w_hi), -c_hi.reshape((b, -1)), x0, eps, norm,
                       enclose).reshape(hi.shape)
    return jnp.maximum(low, lo), jnp.minimum(high, hi)


def forward_bounds(ops: list[Op], x0: jnp.ndarray, eps: jnp.ndarray, norm: str,
                   upto: int) -> list:
    """Intervals of every record up to ``upto`` from forward linear bounds (see above)."""
    fns: list = [input_functions(x0)]
    bounds: list = [box(x0, eps)]
    for i in range(1, upto + 1):
        f = forward_step(ops[i], fns, bounds)
        fns.append(f)
        bounds.append(forward_interval(f, x0, eps, norm, *ibp_step(ops[i], bounds)))
    return bounds
