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
  $g(t) = a t + d\,\mathrm{relu}(t)$ combines them by the signs of $a$ and $d$.

Each record's interval is the concretisation of its two functions over the ball (`_ball.py`),
intersected with interval propagation. The cost is one pass of every record over $d$
coefficient images per example ($d$ the input dimension), against a backward pass per layer
with two specifications per neuron for layer-by-layer CROWN; the intervals are looser.
"""

from __future__ import annotations

import jax.numpy as jnp

from genbounds.core._checks import NotBoundable

from ._ball import box, concretise
from ._crown import relu_lines
from ._ibp import ibp_step
from ._ops import Op


def _apply(fn, parts, b: int, d: int):
    """A linear record applied to coefficient tensors (B, d, *shape) of each input."""
    flat = [p.reshape((b * d,) + p.shape[2:]) for p in parts]
    out = fn(flat)
    return out.reshape((b, d) + out.shape[1:])


def forward_bounds(ops: list[Op], x0: jnp.ndarray, eps: jnp.ndarray, norm: str,
                   upto: int) -> list:
    """Intervals of every record up to ``upto`` from forward linear bounds (see above)."""
    b = x0.shape[0]
    shape0 = ops[0].shape
    d = 1
    for s in shape0:
        d *= s
    dtype = x0.dtype
    eye = jnp.broadcast_to(jnp.eye(d, dtype=dtype).reshape((1, d) + shape0), (b, d) + shape0)
    zero = jnp.zeros((b,) + shape0, dtype)
    # per record: (W_lower, c_lower, W_upper, c_upper), the functions W . x + c
    fns: list = [(eye, zero, eye, zero)]
    bounds: list = [box(x0, eps)]

    def interval(w_lo, c_lo, w_hi, c_hi, ibp_lo, ibp_hi):
        lo = concretise(_flat(w_lo), _flat_c(c_lo), x0, eps, norm).reshape(ibp_lo.shape)
        hi = -concretise(-_flat(w_hi), -_flat_c(c_hi), x0, eps, norm).reshape(ibp_hi.shape)
        return jnp.maximum(lo, ibp_lo), jnp.minimum(hi, ibp_hi)

    def _flat(w):  # (B, d, *shape) -> (B, n, *input): specifications over the input
        w = w.reshape((b, d, -1))
        return jnp.swapaxes(w, 1, 2).reshape((b, w.shape[2]) + shape0)

    def _flat_c(c):
        return c.reshape((b, -1))

    for i in range(1, upto + 1):
        op = ops[i]
        ilo, ihi = ibp_step(op, bounds)
        if op.kind == "affine":
            mids = [((fns[j][0] + fns[j][2]) / 2, (fns[j][1] + fns[j][3]) / 2) for j in op.inputs]
            rads = [((fns[j][2] - fns[j][0]) / 2, (fns[j][3] - fns[j][1]) / 2) for j in op.inputs]
            lw = _apply(op.lin, [m[0] for m in mids], b, d)
            aw = _apply(op.absl, [r[0] for r in rads], b, d)
            lc = op.full([m[1] for m in mids])
            ac = op.absl([r[1] for r in rads])
            f = (lw - aw, lc - ac, lw + aw, lc + ac)
        elif op.kind == "act":
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
            f = (ap * wl + an * wh + dp * rl[0] + dn * ru[0],
                 ap * cl + an * ch + dp * rl[1] + dn * ru[1],
                 ap * wh + an * wl + dp * ru[0] + dn * rl[0],
                 ap * ch + an * cl + dp * ru[1] + dn * rl[1])
        elif op.kind == "monotone":
            raise NotBoundable(f"linear bound propagation cannot pass {op.name}: max and min "
                               "pooling have no linear relaxation here (use method='ibp')")
        else:  # pragma: no cover
            raise AssertionError(op.kind)
        fns.append(f)
        bounds.append(interval(*f, ilo, ihi))
    return bounds
