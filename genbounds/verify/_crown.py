r"""Backward linear bound propagation (CROWN) over the records of a traced network.

**Theorem** (Zhang et al. 2018, "Efficient Neural Network Robustness Certification with
General Activation Functions", NeurIPS, arXiv:1811.00866, Theorem 3.2; the graph form is
Xu et al. 2020, "Automatic Perturbation Analysis for Scalable Certified Robustness and
Beyond", NeurIPS, arXiv:2002.12920, §3). Let every element-wise function $\sigma$ of the network
satisfy, on its pre-activation interval $[l, u]$, $\underline a\,t + \underline b \le
\sigma(t) \le \overline a\,t + \overline b$. For a specification $c^\top h_T$ of a record $T$,
propagate coefficients backwards from $\Lambda_T = c$: through an affine record
$h = L(h_1, \dots, h_m) + b$, $\Lambda_{j} \mathrel{+}= L_j^\top \Lambda$ and the constant
gains $\Lambda^\top b$; through an element-wise $\sigma$, each coefficient picks the lower line
where it is $\ge 0$ and the upper line where it is $< 0$ (and the constant gains
$\Lambda^{-}\,\overline b$). At the input, $c^\top h_T(x) \ge \Lambda_0^\top x + \beta$ for
every $x$ with all pre-activations in their intervals, and the minimum over the ball is
$\Lambda_0^\top x_0 - \varepsilon\|\Lambda_0\|_q + \beta$ (Hölder, `_ball.py`). Records read
by several others (residual connections) sum their coefficients (the chain rule of the
linear bound).

**ReLU relaxation** (Zhang et al. 2018, §3.2). On $l < 0 < u$: upper line through
$(l, 0)$ and $(u, u)$, slope $u/(u - l)$, intercept $-ul/(u - l)$; lower line $\alpha t$ for any
$\alpha \in [0, 1]$; CROWN's choice $\alpha = 1$ if $u \ge -l$ else $0$ (the smaller area).
Stable neurons are exact ($l \ge 0$: $t$; $u \le 0$: $0$). Max pooling takes the lines of
`_pooling.py`: a coefficient of an output goes to the input with the largest lower bound where
it is $\ge 0$, else to the chord of the input with the largest upper bound (min pooling as
$-\max(-x)$). An activation $g(t) = a t + d\,\mathrm{relu}(t)$ (leaky ReLU, PReLU) is
relaxed through its ReLU part: with $P = \Lambda d$ the coefficient of $\mathrm{relu}(t)$ and
$\Lambda a$ passed through exactly.

**Intermediate bounds.** The interval of every pre-activation comes, layer by layer, from the
same backward pass with specification $\pm e_i$ for each of its neurons (``"crown"``),
intersected with interval propagation, or from interval propagation alone (``"ibp"``, cheaper
and looser; with CROWN on the last layer this is CROWN-IBP, Zhang et al. 2020).

**Rounding.** With ``enclose=True`` every coefficient's float rounding is charged to the
constant as a deficit, and the upper lines are raised above their rounding, so the bound holds
for the records in real arithmetic (`_rounding.py`); without it (certified training, the
forward and unstable-only paths) the rounding is not enclosed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ._ball import centre_and_norm, concretise
from ._ibp import ibp_step
from ._ops import Op
from ._pooling import choice as pool_choice
from ._pooling import gather as pool_gather
from ._pooling import scatter as pool_scatter
from ._pooling import sign as pool_sign
from ._rounding import gamma, magnitude, outward, tiny, unit


def relu_lines(lo: jnp.ndarray, hi: jnp.ndarray, alpha: jnp.ndarray | None):
    """Slopes of the lower line (intercept 0) and slope and intercept of the upper line of
    $\\mathrm{relu}$ on $[l, u]$ (element-wise); ``alpha`` None: CROWN's adaptive choice."""
    active = lo >= 0
    unstable = (lo < 0) & (hi > 0)
    width = jnp.where(unstable, hi - lo, 1)
    s = jnp.where(unstable, hi / width, jnp.where(active, 1, 0)).astype(lo.dtype)
    icpt = jnp.where(unstable, -s * lo, 0)
    if alpha is None:
        alpha = (hi >= -lo).astype(lo.dtype)
    low = jnp.where(unstable, alpha, jnp.where(active, 1, 0)).astype(lo.dtype)
    return low, s, icpt


def adaptive_alpha(lo: jnp.ndarray, hi: jnp.ndarray) -> jnp.ndarray:
    """CROWN's lower slope: 1 where $u \\ge -l$, else 0."""
    return (hi >= -lo).astype(lo.dtype)


def _sum_shape(a: jnp.ndarray) -> jnp.ndarray:
    return jnp.sum(a, axis=tuple(range(2, a.ndim)))


def backward(ops: list[Op], target: int, spec: jnp.ndarray, bounds: list,
             alphas: dict | None = None, enclose: bool = False,
             ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Coefficients $\\Lambda_0$ (B, K, *input) and constant (B, K) with
    ``spec`` · record ``target`` $\\ge \\Lambda_0^\\top x + \\beta$ wherever the
    pre-activations lie in ``bounds``.

    ``alphas`` maps an activation record's index to lower slopes in [0, 1] broadcastable to
    (B, K, *shape) (missing: CROWN's adaptive choice). ``enclose``: the constant is lowered by
    the rounding of the pass (`_rounding.py`), so the inequality holds for the coefficients as
    computed (``bounds`` must then hold every record below ``target``).
    """
    b, k = spec.shape[:2]
    dtype = spec.dtype
    lam: dict[int, jnp.ndarray] = {target: spec}
    const = jnp.zeros((b, k), dtype)
    deficit = jnp.zeros((b, k), dtype)
    u, t = unit(dtype), tiny(dtype)
    for i in range(target, 0, -1):
        if i not in lam:
            continue
        a = lam.pop(i)
        op = ops[i]
        n_i = math.prod(op.shape)
        if op.kind == "affine":
            zeros = [jnp.zeros((1,) + ops[j].shape, dtype) for j in op.inputs]
            b0 = op.full(zeros)
            if enclose:
                # per coefficient: the transpose's rounding, gamma |L|^T |a| against |h| <= m,
                # and the constant's sum, gamma |a| |b0|, in one pass over a; then what
                # underflow (flushed to zero) can lose, tiny per product and sum
                g, gc = gamma(op.terms, dtype), gamma(n_i + 1, dtype)
                ms = [magnitude(bounds[j]) for j in op.inputs]
                w = g * op.absl(ms) + gc * jnp.abs(b0)
                flush = sum(jnp.sum(m_.reshape(b, -1), axis=1) for m_ in ms)
                deficit = (deficit + _sum_shape(jnp.abs(a) * w[:, None]) + gc * jnp.abs(const)
                           + (t * ((op.terms + 2) * flush + 2 * n_i + 2))[:, None])
            const = const + _sum_shape(a * b0[:, None])
            prim = [jax.ShapeDtypeStruct((b * k,) + ops[j].shape, dtype) for j in op.inputs]
            (back,) = jax.linear_transpose(op.lin, prim)(a.reshape((b * k,) + op.shape))
            parts = [(j, g_.reshape((b, k) + ops[j].shape)) for j, g_ in zip(op.inputs, back,
                                                                             strict=True)]
        elif op.kind == "act":
            j = op.inputs[0]
            lo, hi = bounds[j]
            al = None if alphas is None or i not in alphas else alphas[i]
            low, s, icpt = relu_lines(lo[:, None], hi[:, None], al)
            if enclose:  # raise the upper line above its rounding (slope and intercept)
                icpt = icpt + 6 * u * (jnp.abs(hi[:, None]) + s * jnp.abs(lo[:, None])
                                       + jnp.abs(icpt))
            sn = jnp.asarray(op.slope_neg, dtype)
            sj = jnp.asarray(op.slope_jump, dtype)
            p = a * sj
            pos, neg = jnp.maximum(p, 0), jnp.minimum(p, 0)
            if enclose:
                # the new coefficient a sn + pos low + neg s (p = a sj rounded too, and sj
                # itself rounded to the dtype) against |t| <= m, and the constant's sum
                # |neg| icpt, in one pass over a; underflow as above
                m = magnitude((lo, hi))[:, None]
                gn = gamma(n_i + 2, dtype)
                w = gamma(8, dtype) * (jnp.abs(sn) + jnp.abs(sj) * (low + s)) * m
                w = w + jnp.where(p < 0, gn * jnp.abs(sj) * icpt, 0)
                deficit = (deficit + _sum_shape(jnp.abs(a) * w) + gn * jnp.abs(const)
                           + t * (8 * jnp.sum(m.reshape(b, -1), axis=1) + 2 * n_i + 2)[:, None])
            const = const + _sum_shape(neg * icpt)
            parts = [(j, a * sn + pos * low + neg * s)]
        elif op.kind == "monotone":  # max / min pooling, `_pooling.py`
            j = op.inputs[0]
            lines = pool_choice(op, *bounds[j], enclose=enclose)
            mu = pool_sign(op) * a  # the coefficient of the maximum of z = s x
            down = mu >= 0  # the lower line z_low; else the upper, slope z_up + icpt
            c_low = jnp.where(down, a, 0)
            c_up = jnp.where(down, 0, a * lines.slope[:, None])
            rest = jnp.where(down, 0, mu * lines.icpt[:, None])
            if enclose:
                # each input's coefficient sums at most op.terms lines (overlapping windows),
                # one product each, against |x| <= m at the input; the constant's sum of
                # products; underflow (flushed to zero): each of the up to op.terms products
                # and sums of an input's coefficient, and each product and sum of the constant
                mag = magnitude(bounds[j])
                g = gamma(op.terms + 1, dtype)
                gn = gamma(n_i + 2, dtype)
                deficit = (deficit + g * _sum_shape(
                    jnp.abs(c_low) * pool_gather(mag, lines.low, 0)[:, None]
                    + jnp.abs(c_up) * pool_gather(mag, lines.up, 0)[:, None])
                    + gn * (_sum_shape(jnp.abs(rest)) + jnp.abs(const))
                    + t * (2 * op.terms * jnp.sum(mag.reshape(b, -1), axis=1)
                           + 2 * n_i + 2)[:, None])
            const = const + _sum_shape(rest)
            parts = [(j, pool_scatter(c_low, lines.low, ops[j].shape)
                      + pool_scatter(c_up, lines.up, ops[j].shape))]
        else:  # pragma: no cover
            raise AssertionError(op.kind)
        for j, g_ in parts:
            if j in lam:
                if enclose:  # one rounding per element of the sum
                    mj = magnitude(bounds[j])
                    deficit = deficit + 2 * u * _sum_shape(
                        (jnp.abs(lam[j]) + jnp.abs(g_)) * mj[:, None]) + (
                        t * jnp.sum(mj.reshape(b, -1), axis=1))[:, None]
                lam[j] = lam[j] + g_
            else:
                lam[j] = g_
    lam0 = lam.get(0, jnp.zeros((b, k) + ops[0].shape, dtype))
    if enclose:
        const = outward(const, const, deficit * (1 + 4 * u))[0]
    return lam0, const


def lower_bound(ops, target, spec, x0, eps, norm, bounds, alphas=None,
                enclose: bool = False) -> jnp.ndarray:
    """The lower bound of ``spec`` · record ``target`` over the ball (B, K)."""
    lam0, const = backward(ops, target, spec, bounds, alphas, enclose)
    return concretise(lam0, const, x0, eps, norm, enclose)


def linear_parts(ops, target, spec, x0, norm, bounds, alphas=None, enclose: bool = False):
    """$\\Lambda_0^\\top x_0 + \\beta$ and $\\|\\Lambda_0\\|_q$ (each (B, K)): the lower bound
    over a ball of radius $\\varepsilon'$ is the first less $\\varepsilon'$ times the second, for
    every $\\varepsilon'$ no larger than the radius ``bounds`` hold on (the intervals stay valid
    on the smaller ball)."""
    lam0, const = backward(ops, target, spec, bounds, alphas, enclose)
    return centre_and_norm(lam0, const, x0, norm, enclose)


def needed(ops: list[Op], upto: int) -> set[int]:
    """The records whose intervals the relaxations up to ``upto`` need (pre-activations)."""
    return {op.inputs[0] for op in ops[1:upto + 1] if op.kind == "act"}


def pool_inputs(ops: list[Op], upto: int) -> set[int]:
    """The affine records read by a max or min pool up to ``upto`` (through reshapes): their
    intervals are tightened like pre-activations. An activation's or a pool's output needs no
    pass of its own: its interval is its input's mapped through it, and a reshape's is its
    input's."""
    out = set()
    for op in ops[1:upto + 1]:
        if op.kind == "monotone":
            j = op.inputs[0]
            while ops[j].permutes:
                j = ops[j].inputs[0]
            if ops[j].kind == "affine":
                out.add(j)
    return out


def crown_intervals(ops: list[Op], x0: jnp.ndarray, eps: jnp.ndarray, norm: str, mode: str,
                    upto: int, caps: dict | None = None,
                    enclose: bool = False) -> tuple[list, dict]:
    """Intervals of every record up to ``upto``: interval propagation, with every
    pre-activation and every affine record a pool reads (`pool_inputs`) tightened by CROWN
    (``mode="crown"``, intersected with the interval), and with ``caps`` CROWN only for the
    unstable neurons of the pre-activations.

    A pre-activation affine in the input (no activation before it) gets its exact interval
    from its forward linear function (`_forward.py`), what its CROWN pass would give, in one
    pass over the input directions. ``caps`` None: a CROWN pass for every neuron of every
    other pre-activation. Otherwise (the
    *unstable-only* computation) a reference interval of each record, the intersection of
    interval propagation and forward linear bounds (`_forward.py`, from the intervals obtained
    so far), decides: the neurons it leaves stable keep it (a stable neuron's relaxation is
    exact whatever its interval), and CROWN runs only on the others ($l < 0 < u$), at most
    ``caps[i]`` of them per example for record ``i`` (the widest first), whose interval is
    then, as in the full computation, interval propagation intersected with CROWN. So the
    relaxations are those of the full computation wherever every unstable neuron got its pass
    and the interval propagation of an unstable neuron, fed by the wider intervals of stable
    ones, is not tighter than its CROWN bound (the usual case); the bounds are sound in every
    case. Returns the intervals and, per record, the
    number of unstable neurons of each example (B,) (what ``caps`` must hold for that).

    ``enclose``: every interval contains the exact one despite the float rounding
    (`_rounding.py`; the forward functions of records affine in the input carry a bound on
    their rounding, `_forward_error`). Not with ``caps``.
    """
    from ._ball import box
    from ._forward import forward_interval, forward_step, input_functions

    bounds: list = [box(x0, eps, enclose)]
    need = needed(ops, upto)
    pooled = pool_inputs(ops, upto)
    counts: dict = {}
    sparse = caps is not None and mode == "crown"
    if sparse and enclose:
        raise ValueError("the unstable-only passes (caps) have no rounding enclosure")
    errs = {0: jnp.zeros_like(x0)}  # rounding bounds of the forward functions (enclose)
    mx = magnitude(bounds[0]) if enclose else None
    fns: dict = {0: input_functions(x0)}  # linear functions of the input, where kept
    # records affine in the input (no activation before them): their forward function is
    # exact, so their interval is the exact one a CROWN pass gives, at the cost of d
    # directions instead of two specifications per neuron
    exact = {0}
    b = x0.shape[0]
    for i in range(1, upto + 1):
        lo, hi = ibp_step(ops[i], bounds, enclose)
        shape = ops[i].shape
        n = math.prod(shape)
        if ops[i].kind == "affine" and all(j in exact for j in ops[i].inputs):
            exact.add(i)
        if sparse or i in exact:
            fns[i] = forward_step(ops[i], fns, bounds)
            if enclose:  # records affine in the input only (sparse is refused above)
                errs[i] = _forward_error(ops[i], fns, errs, mx)
                free = jnp.full_like(lo, jnp.inf)
                ref_lo, ref_hi = outward(*forward_interval(fns[i], x0, eps, norm, -free, free,
                                                           enclose), errs[i])
                ref_lo, ref_hi = jnp.maximum(ref_lo, lo), jnp.minimum(ref_hi, hi)
            else:
                ref_lo, ref_hi = forward_interval(fns[i], x0, eps, norm, lo, hi)
        if mode == "crown" and i in exact and (i in need or i in pooled):
            lo, hi = ref_lo, ref_hi
        elif sparse and i in need:
            unstable = ((ref_lo < 0) & (ref_hi > 0)).reshape(b, n)
            # stable neurons keep the reference; the unstable ones interval propagation and
            # CROWN, as in the full computation
            lo_f = jnp.where(unstable, lo.reshape(b, n), ref_lo.reshape(b, n))
            hi_f = jnp.where(unstable, hi.reshape(b, n), ref_hi.reshape(b, n))
            counts[i] = jnp.sum(unstable, axis=1)
            k = max(1, min(int(caps.get(i, n)), n))
            _, idx = jax.lax.top_k(jnp.where(unstable, hi_f - lo_f, -1.0), k)  # (B, k)
            valid = jnp.take_along_axis(unstable, idx, axis=1)
            eye = jax.nn.one_hot(idx, n, dtype=x0.dtype).reshape((b, k) + shape)
            lb = lower_bound(ops, i, jnp.concatenate([eye, -eye], axis=1), x0, eps, norm,
                             bounds)
            rows = jnp.arange(b)[:, None]
            lo_f = lo_f.at[rows, idx].max(jnp.where(valid, lb[:, :k], -jnp.inf))
            hi_f = hi_f.at[rows, idx].min(jnp.where(valid, -lb[:, k:], jnp.inf))
            lo, hi = lo_f.reshape(lo.shape), hi_f.reshape(hi.shape)
        elif mode == "crown" and (i in need or i in pooled):
            eye = jnp.eye(n, dtype=x0.dtype).reshape((n,) + shape)
            spec = jnp.broadcast_to(jnp.concatenate([eye, -eye]), (b, 2 * n) + shape)
            lb = lower_bound(ops, i, spec, x0, eps, norm, bounds, enclose=enclose)
            lo = jnp.maximum(lo, lb[:, :n].reshape(lo.shape))
            hi = jnp.minimum(hi, -lb[:, n:].reshape(hi.shape))
        bounds.append((lo, hi))
    return bounds, counts


def _forward_error(op: Op, fns: dict, errs: dict, mx: jnp.ndarray) -> jnp.ndarray:
    """A bound on $|\\tilde h_i(x) - h_i(x)|$ over the box for a record affine in the input,
    $\\tilde h_i = \\tilde W_i x + \\tilde c_i$ its forward function as computed: with
    $h_i = L(h_j) + b$, $\\tilde W_i = \\mathrm{fl}(L \\tilde W_j)$, $\\tilde c_i =
    \\mathrm{fl}(L \\tilde c_j + b)$, the error is at most $\\gamma_n |L|(|\\tilde W_j| m_x +
    |\\tilde c_j|) + \\gamma_n |b| + |L| e_j$ (`_rounding.py`; $m_x$ bounds $|x|$ on the box)."""
    dtype = mx.dtype
    b, d = mx.shape[0], math.prod(mx.shape[1:])
    g = gamma(op.terms, dtype)
    flat = mx.reshape(b, d)
    ms = []
    for j in op.inputs:
        w, c = fns[j][0], fns[j][1]
        a = jnp.einsum("bd...,bd->b...", jnp.abs(w), flat,
                       precision=jax.lax.Precision.HIGHEST) * (1 + gamma(d, dtype))
        ms.append(a + jnp.abs(c))
    b0 = op.full([jnp.zeros((1,) + fns[j][1].shape[1:], dtype) for j in op.inputs])
    # underflow: each coefficient and constant may lose tiny per product and sum
    flush = tiny(dtype) * (op.terms + 2) * (jnp.sum(flat, axis=1) + 1)
    flush = flush.reshape((b,) + (1,) * (b0.ndim - 1))
    return (g * op.absl(ms) + g * jnp.abs(b0) + flush
            + op.absl([errs[j] for j in op.inputs]) * (1 + 2 * g)) * (1 + 4 * unit(dtype))
