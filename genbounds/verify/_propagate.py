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

import jax
import jax.numpy as jnp

from genbounds.network._graph import eval_node
from genbounds.network._network import Network

from ._alpha import alpha_crown
from ._ball import box, check_norm
from ._crown import layer_bounds, lower_bound
from ._forward import forward_bounds
from ._ibp import ibp, ibp_step
from ._ops import logit_node, read_ops, with_dtype

METHODS = ("ibp", "crown", "alpha-crown")
INTERMEDIATE = ("crown", "forward", "ibp")


def _interval_spec(interval, spec):
    """The lower bound of ``spec`` · h over the box ``interval`` of h (B, K)."""
    lo, hi = interval
    lo, hi = lo.reshape(lo.shape[0], -1), hi.reshape(hi.shape[0], -1)
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    s = spec.reshape(spec.shape[:2] + (-1,))
    hp = jax.lax.Precision.HIGHEST
    return (jnp.einsum("bkn,bn->bk", s, mid, precision=hp)
            - jnp.einsum("bkn,bn->bk", jnp.abs(s), rad, precision=hp))


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
      dtype: the dtype of the computation (default float64 when x64 is on, else float32).
    """

    def __init__(self, net: Network, *, norm: str = "l2", method: str = "crown",
                 intermediate: str = "crown", steps: int = 20, lr: float = 0.1,
                 dtype=None):
        from genbounds.core._checks import check_choice

        check_norm(norm)
        check_choice(method, "method", METHODS)
        check_choice(intermediate, "intermediate", INTERMEDIATE)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        if dtype is None:
            dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        self.dtype = dtype
        self.norm, self.method, self.intermediate = norm, method, intermediate
        self.logits, note = logit_node(net)
        self.notes = [] if note is None else [note]
        self.ops = read_ops(net, dtype, output=self.logits)
        self.input_shape = self.ops[0].shape
        self.k = 1
        for s in self.ops[self.logits].shape:
            self.k *= s
        self.steps, self.lr = steps, lr
        self.records = [with_dtype(node, dtype) for node in net.nodes[:self.logits + 1]]
        self.bounds = jax.jit(self._bounds)
        self.margins = jax.jit(self._margins)

    def logit_values(self, x: jnp.ndarray) -> jnp.ndarray:
        """The logits the records compute, in the dtype of the propagation (B, K)."""
        vals = [x.astype(self.dtype).reshape((-1,) + self.input_shape)]
        for node in self.records[1:]:
            vals.append(eval_node(node, [vals[j] for j in node.inputs]))
        return vals[-1].reshape(x.shape[0], -1)

    def _spec_bound(self, x0, eps, spec):
        return spec_bound(self.ops, self.logits, x0, eps, spec, norm=self.norm,
                          method=self.method, intermediate=self.intermediate,
                          steps=self.steps, lr=self.lr)

    def _prepare(self, x0, eps):
        x0 = jnp.asarray(x0).astype(self.dtype).reshape((-1,) + self.input_shape)
        eps = jnp.broadcast_to(jnp.asarray(eps).astype(self.dtype), (x0.shape[0],))
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
        return margin_bounds(self.ops, self.logits, x0, eps, y, norm=self.norm,
                             method=self.method, intermediate=self.intermediate,
                             steps=self.steps, lr=self.lr)


def intervals(ops, x0, eps, upto, *, norm: str, mode: str) -> list:
    """The intervals of the records up to ``upto`` by ``mode`` (``"ibp"``, ``"forward"``,
    ``"crown"``)."""
    if mode == "ibp":
        return ibp(ops[:upto + 1], x0, eps)
    if mode == "forward":
        return forward_bounds(ops, x0, eps, norm, upto)
    return layer_bounds(ops, x0, eps, norm, mode, upto)


def spec_bound(ops, t: int, x0, eps, spec, *, norm: str, method: str, intermediate: str,
               steps: int = 20, lr: float = 0.1):
    """The lower bound of ``spec`` · record ``t`` over the balls (B, K), by ``method``; with
    CROWN and α-CROWN the larger of theirs and that of the interval of record ``t``.

    A function of the `Op` s: `Propagator` calls it with the records of a traced network, and
    certified training (`genbounds.train`) with the records rebuilt from the current parameters,
    differentiating it."""
    if method == "ibp":
        return _interval_spec(ibp(ops[:t + 1], x0, eps)[t], spec)
    bounds = intervals(ops, x0, eps, t - 1, norm=norm, mode=intermediate) if t > 0 \
        else [box(x0, eps)]
    # the better of CROWN and the interval of the logits (both sound)
    by_interval = _interval_spec(ibp_step(ops[t], bounds) if t > 0 else bounds[0], spec)
    if method == "alpha-crown":
        lb = alpha_crown(ops, t, spec, x0, eps, norm, bounds, steps=steps, lr=lr)
    else:
        lb = lower_bound(ops, t, spec, x0, eps, norm, bounds)
    return jnp.maximum(lb, by_interval)


def margin_bounds(ops, t: int, x0, eps, y, *, norm: str, method: str, intermediate: str,
                  steps: int = 20, lr: float = 0.1):
    """Lower bounds of the margins $f_y - f_j$ of record ``t`` over the balls (B, K),
    $+\\infty$ at $j = y$ (``x0`` (B, *input) and ``eps`` (B,) in the dtype of the `Op` s)."""
    shape = ops[t].shape
    k = 1
    for s in shape:
        k *= s
    eye = jnp.eye(k, dtype=x0.dtype)
    spec = eye[y][:, None, :] - eye[None, :, :]  # (B, K, K): e_y - e_j
    spec = spec.reshape((x0.shape[0], k) + shape)
    lb = spec_bound(ops, t, x0, eps, spec, norm=norm, method=method, intermediate=intermediate,
                    steps=steps, lr=lr)
    return jnp.where(jnp.arange(k, dtype=y.dtype)[None, :] == y[:, None], jnp.inf, lb)
