r"""Bounds on the logits and on the margins of a traced network over $\ell_p$ balls, by interval
propagation (``"ibp"``), CROWN (``"crown"``) or α-CROWN (``"alpha-crown"``), jitted and batched
over the inputs (see `_ibp.py`, `_crown.py`, `_alpha.py` in this package for the theorems).

The margin specification of an example with label $y$ is $c_j = e_y - e_j$ for every logit $j$
(row $y$ is zero and is ignored): the lower bound of $c_j^\top f$ over the ball is a lower
bound on $\min_{x \in B} f_y(x) - f_j(x)$, and when it is positive for every $j \ne y$ no point
of the ball is classified otherwise. With CROWN and α-CROWN the bound returned is the larger
of theirs and that of the interval of the logits (both are sound).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.network._graph import eval_node
from genbounds.network._network import Network

from ._alpha import alpha_parts
from ._ball import box, check_norm, lower_at
from ._crown import crown_intervals, linear_parts
from ._forward import forward_bounds
from ._ibp import ibp, ibp_step
from ._ops import float32_records, logit_node, read_ops, with_dtype
from ._rounding import gamma, magnitude, outward, tiny, unit

METHODS = ("ibp", "crown", "alpha-crown")
INTERMEDIATE = ("crown", "forward", "ibp")


def _sums_fit_float32(net: Network, upto: int) -> bool:
    """Whether every sum of the propagation is short enough for the float32 enclosure
    (`_rounding.gamma`: n u below 1%, n under about 167 000 terms)."""
    sizes = [math.prod(node.shape) for node in net.nodes[:upto + 1]]
    return (max(sizes) + 4) * unit(np.float32) < 0.01


def _interval_spec(interval, spec, enclose: bool = False):
    """The lower bound of ``spec`` · h over the box ``interval`` of h (B, K) (``enclose``:
    whatever the rounding, `_rounding.py`)."""
    lo, hi = interval
    lo, hi = lo.reshape(lo.shape[0], -1), hi.reshape(hi.shape[0], -1)
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    s = spec.reshape(spec.shape[:2] + (-1,))
    hp = jax.lax.Precision.HIGHEST
    if enclose:
        u = unit(lo.dtype)
        rad = rad * (1 + 4 * u) + 2 * u * magnitude((lo, hi))
    out = (jnp.einsum("bkn,bn->bk", s, mid, precision=hp)
           - jnp.einsum("bkn,bn->bk", jnp.abs(s), rad, precision=hp))
    if not enclose:
        return out
    err = jnp.einsum("bkn,bn->bk", jnp.abs(s), jnp.abs(mid) + rad, precision=hp)
    flush = 2 * (s.shape[2] + 2) * tiny(lo.dtype)  # underflow
    return outward(out, out, gamma(s.shape[2] + 1, lo.dtype) * err + flush)[0]


class Propagator:
    """Bound propagation on one network with one set of options: jitted functions of the
    inputs ``x0`` (B, *input), the radii ``eps`` (B,) and the labels ``y`` (B,).

    Args:
      net: a traced `Network`.
      norm: ``"l2"`` or ``"linf"``.
      method: ``"ibp"``, ``"crown"`` or ``"alpha-crown"``.
      intermediate: how the pre-activation intervals are obtained for CROWN: ``"crown"``
        (a backward pass per layer, intersected with interval propagation: the tightest),
        ``"forward"`` (forward linear bounds, one pass: cheaper on wide layers with small
        inputs) or ``"ibp"`` (cheapest, loosest).
      steps, lr: α-CROWN's projected Adam steps and step size.
      unstable_only: with ``intermediate="crown"``, run the CROWN pass of a pre-activation
        only for its neurons that interval propagation and forward linear bounds leave
        unstable, at most ``caps[i]`` per example for record ``i`` (`_crown.crown_intervals`;
        the same bounds as the full computation wherever the caps hold every unstable neuron
        and no max or min pool precedes (docs/verify.md), sound and looser otherwise).
        ``caps`` starts at every neuron of the record (``bounds`` and ``margins`` always use
        every neuron); `genbounds.verify.crown_radius` starts it lower and raises it to what
        its search meets. Default False.
      dtype: the dtype of the computation. Where the bounds enclose their own float rounding
        (``enclose``: interval propagation, and CROWN and α-CROWN with intermediate
        ``"crown"`` or ``"ibp"`` and not ``unstable_only``; `_rounding.py`) and the records
        are the same functions in float32 (float32 parameters, `_ops.float32_records`), the
        default is float32 (about 2x faster than float64 on a CPU; with x64 on, the last pass
        runs in float64 and the radii are within about 0.3%); otherwise float64 when x64 is on
        (else float32).

    Attributes:
      enclose: whether every bound holds whatever the float rounding of its computation.
      same_records: False where float32 was asked for a network whose parameters are not
        float32 values (the bounds are then those of the rounded network).
      dtype: the dtype of the intervals; result_dtype: that of the last pass and of the
        bounds returned (float64 after float32 intervals when x64 is on).
    """

    def __init__(self, net: Network, *, norm: str = "l2", method: str = "crown",
                 intermediate: str = "crown", steps: int = 20, lr: float = 0.1,
                 unstable_only: bool = False, dtype=None):
        from genbounds.core._checks import check_choice

        check_norm(norm)
        check_choice(method, "method", METHODS)
        check_choice(intermediate, "intermediate", INTERMEDIATE)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        self.enclose = method == "ibp" or (intermediate in ("crown", "ibp")
                                           and not unstable_only)
        self.norm, self.method, self.intermediate = norm, method, intermediate
        self.logits, note = logit_node(net)
        self.notes = [] if note is None else [note]
        exact32 = float32_records(net, self.logits)
        if dtype is None:
            narrow = self.enclose and exact32 and _sums_fit_float32(net, self.logits)
            dtype = (jnp.float32 if narrow or not jax.config.jax_enable_x64
                     else jnp.float64)
        self.dtype = dtype
        # the records in a narrower dtype than their parameters are another network
        self.same_records = np.dtype(dtype) != np.float32 or exact32
        if not self.same_records:
            self.notes.append("the parameters were rounded to float32 for the propagation: "
                              "the bounds are those of the rounded network")
        self.ops = read_ops(net, dtype, output=self.logits)
        # the last pass (a few specifications) in float64 where the intervals are float32:
        # the same records (float32 values), with rounding far below the float32 one's
        self.final_ops = (read_ops(net, jnp.float64, output=self.logits)
                          if self.enclose and np.dtype(dtype) == np.float32 and exact32
                          and method != "ibp" and jax.config.jax_enable_x64 else None)
        self.result_dtype = jnp.float64 if self.final_ops is not None else dtype
        self.input_shape = self.ops[0].shape
        self.k = 1
        for s in self.ops[self.logits].shape:
            self.k *= s
        self.steps, self.lr = steps, lr
        self.records = [with_dtype(node, dtype) for node in net.nodes[:self.logits + 1]]
        self.unstable_only = bool(unstable_only)
        self.sizes = {op.inputs[0]: int(np.prod(self.ops[op.inputs[0]].shape))
                      for op in self.ops[1:self.logits] if op.kind == "act"}
        self.caps = dict(self.sizes) if self.unstable_only else None
        self._compiled: dict = {}
        self.bounds = jax.jit(self._bounds)
        self.margins = jax.jit(self._margins)

    def linear_margins(self, x0, eps, y):
        """The margins' lower bounds at ``eps`` (B, K) and the centre and dual norm of their
        linear bounds (each (B, K), `_crown.linear_parts`; +inf, 0 at $j = y$), and per
        pre-activation record the number of unstable neurons of each example (B,) (with
        ``unstable_only``). Compiled once per ``caps``."""
        key = None if self.caps is None else tuple(sorted(self.caps.items()))
        if key not in self._compiled:
            caps = None if key is None else dict(key)
            self._compiled[key] = jax.jit(lambda x, e, t: self._linear_margins(x, e, t, caps))
        return self._compiled[key](x0, eps, y)

    def logit_values(self, x: jnp.ndarray) -> jnp.ndarray:
        """The logits the records compute, in the dtype of the propagation (B, K)."""
        vals = [x.astype(self.dtype).reshape((-1,) + self.input_shape)]
        for node in self.records[1:]:
            vals.append(eval_node(node, [vals[j] for j in node.inputs]))
        return vals[-1].reshape(x.shape[0], -1)

    def _intervals(self, x0, eps, upto, caps=None):
        mode = "ibp" if self.method == "ibp" else self.intermediate
        return intervals(self.ops, x0, eps, upto, norm=self.norm, mode=mode, caps=caps,
                         enclose=self.enclose)

    def _spec_parts(self, x0, eps, spec, caps=None):
        return spec_parts(self.ops, self.logits, x0, eps, spec, norm=self.norm,
                          final_ops=self.final_ops,
                          method=self.method, intermediate=self.intermediate,
                          steps=self.steps, lr=self.lr, caps=caps, enclose=self.enclose)

    def _spec_bound(self, x0, eps, spec):
        return self._spec_parts(x0, eps, spec, None if self.caps is None else self.sizes)[0]

    def _prepare(self, x0, eps):
        """The centres and radii in the propagation's dtype. Where rounding them moves a
        centre or shrinks a radius, the radius grows by the centre's move (in the norm) and is
        rounded up, so that the ball bounded contains the ball asked for."""
        x = jnp.asarray(x0)
        e = jnp.asarray(eps)
        x0 = x.astype(self.dtype).reshape((-1,) + self.input_shape)
        eps = jnp.broadcast_to(e.astype(self.dtype), (x0.shape[0],))
        wide = np.promote_types(np.dtype(x.dtype), np.dtype(e.dtype))
        if np.finfo(wide).bits > np.finfo(np.dtype(self.dtype)).bits:
            shift = (x.astype(wide).reshape(x0.shape) - x0.astype(wide)).reshape(
                x0.shape[0], -1)
            move = (jnp.max(jnp.abs(shift), axis=1) if self.norm == "linf"
                    else jnp.sqrt(jnp.sum(shift * shift, axis=1)))
            need = (jnp.broadcast_to(e.astype(wide), move.shape) + move) * (1 + 1e-12)
            eps = need.astype(self.dtype)
            eps = jnp.where(eps.astype(wide) < need,
                            jnp.nextafter(eps, jnp.full_like(eps, jnp.inf)), eps)
        return x0, eps

    def _bounds(self, x0, eps):
        """Lower and upper bounds of the logits over the balls, each (B, K)."""
        x0, eps = self._prepare(x0, eps)
        shape = self.ops[self.logits].shape
        eye = jnp.eye(self.k, dtype=self.dtype).reshape((self.k,) + shape)
        spec = jnp.broadcast_to(jnp.concatenate([eye, -eye]),
                                (x0.shape[0], 2 * self.k) + shape)
        lb = self._spec_bound(x0, eps, spec)
        return lb[:, :self.k], -lb[:, self.k:]

    def _margins(self, x0, eps, y):
        """Lower bounds of the margins $f_y - f_j$ over the balls (B, K), $+\\infty$ at
        $j = y$."""
        x0, eps = self._prepare(x0, eps)
        spec, own = margin_spec(y, self.ops[self.logits].shape, self.dtype)
        return jnp.where(own, jnp.inf, self._spec_bound(x0, eps, spec))

    def _linear_margins(self, x0, eps, y, caps):
        x0, eps = self._prepare(x0, eps)
        spec, own = margin_spec(y, self.ops[self.logits].shape, self.dtype)
        lb, centre, dn, counts = self._spec_parts(x0, eps, spec, caps)
        return (jnp.where(own, jnp.inf, lb), jnp.where(own, jnp.inf, centre),
                jnp.where(own, 0, dn), counts)


def intervals(ops, x0, eps, upto, *, norm: str, mode: str, caps: dict | None = None,
              enclose: bool = False):
    """The intervals of the records up to ``upto`` by ``mode`` (``"ibp"``, ``"forward"``,
    ``"crown"``; with ``caps``, CROWN passes for the unstable neurons only,
    `_crown.crown_intervals`) and the unstable counts per pre-activation record (CROWN with
    ``caps`` only; else empty). ``enclose``: every interval holds whatever the float rounding
    (`_rounding.py`; not with ``"forward"`` or ``caps``)."""
    if mode == "ibp":
        return ibp(ops[:upto + 1], x0, eps, enclose), {}
    if mode == "forward":
        if enclose:
            raise ValueError("forward linear bounds have no rounding enclosure")
        return forward_bounds(ops, x0, eps, norm, upto), {}
    return crown_intervals(ops, x0, eps, norm, mode, upto, caps, enclose)


def spec_parts(ops, t: int, x0, eps, spec, *, norm: str, method: str, intermediate: str,
               steps: int = 20, lr: float = 0.1, caps: dict | None = None,
               enclose: bool = False, final_ops=None):
    """The lower bound of ``spec`` · record ``t`` over the balls (B, K) (with CROWN and
    α-CROWN the better of theirs and that of the interval of record ``t``, both sound), the
    linear bound's centre and dual norm (for IBP: the bound and 0), and the unstable counts.

    A function of the `Op` s: `Propagator` calls it with the records of a traced network, and
    certified training (`genbounds.train`) with the records rebuilt from the current parameters,
    differentiating it. ``enclose``: the bounds hold whatever the float rounding of their
    computation (`_rounding.py`). ``final_ops``: the same records in a wider dtype (float64)
    for the last pass (the intervals below it computed with ``ops``, then widened exactly);
    the bounds, centre and dual norm are then in that dtype."""
    if method == "ibp":
        lb = _interval_spec(ibp(ops[:t + 1], x0, eps, enclose)[t], spec, enclose)
        return lb, lb, jnp.zeros_like(lb), {}
    bounds, counts = intervals(ops, x0, eps, t - 1, norm=norm, mode=intermediate,
                               caps=caps, enclose=enclose) if t > 0 else (
                                   [box(x0, eps, enclose)], {})
    if final_ops is not None:
        dt = jnp.float64
        bounds = [(lo.astype(dt), hi.astype(dt)) for lo, hi in bounds]
        x0, eps, spec, ops = x0.astype(dt), eps.astype(dt), spec.astype(dt), final_ops
    by_interval = _interval_spec(ibp_step(ops[t], bounds, enclose) if t > 0 else bounds[0],
                                 spec, enclose)
    if method == "alpha-crown":
        centre, dn = alpha_parts(ops, t, spec, x0, eps, norm, bounds, steps=steps, lr=lr,
                                 enclose=enclose)
    else:
        centre, dn = linear_parts(ops, t, spec, x0, norm, bounds, enclose=enclose)
    return jnp.maximum(lower_at(centre, dn, eps, enclose), by_interval), centre, dn, counts


def spec_bound(ops, t: int, x0, eps, spec, *, norm: str, method: str, intermediate: str,
               steps: int = 20, lr: float = 0.1):
    """The lower bound of ``spec`` · record ``t`` over the balls (B, K) (`spec_parts`)."""
    return spec_parts(ops, t, x0, eps, spec, norm=norm, method=method,
                      intermediate=intermediate, steps=steps, lr=lr)[0]


def margin_spec(y, shape: tuple[int, ...], dtype):
    """The specifications $e_y - e_j$ of the margins of logits of ``shape`` for labels ``y``
    (B,): (B, K, *shape), and the mask (B, K) of $j = y$ (whose row is zero)."""
    k = math.prod(shape)
    eye = jnp.eye(k, dtype=dtype)
    spec = eye[y][:, None, :] - eye[None, :, :]
    own = jnp.arange(k, dtype=y.dtype)[None, :] == y[:, None]
    return spec.reshape((y.shape[0], k) + tuple(shape)), own


def margin_bounds(ops, t: int, x0, eps, y, *, norm: str, method: str, intermediate: str,
                  steps: int = 20, lr: float = 0.1):
    """Lower bounds of the margins $f_y - f_j$ of record ``t`` over the balls (B, K),
    $+\\infty$ at $j = y$ (``x0`` (B, *input) and ``eps`` (B,) in the dtype of the `Op` s)."""
    spec, own = margin_spec(y, ops[t].shape, x0.dtype)
    lb = spec_bound(ops, t, x0, eps, spec, norm=norm, method=method, intermediate=intermediate,
                    steps=steps, lr=lr)
    return jnp.where(own, jnp.inf, lb)
