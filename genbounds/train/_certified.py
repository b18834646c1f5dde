r"""Certified training: interval bound propagation (IBP, Gowal et al. 2018) and CROWN-IBP
(Zhang et al. 2020), with the bounds of `genbounds.verify` differentiated in the parameters.

**Robust loss** (Wong & Kolter 2018, "Provable Defenses against Adversarial Examples via the
Convex Outer Adversarial Polytope", ICML, arXiv:1711.00851, Theorem 2; used by Gowal et al.
2018 and Zhang et al. 2020). Let $\underline m_j(x, \varepsilon)$ be a lower bound of the margin
$\min_{\|x' - x\|_p \le \varepsilon} z_y(x') - z_j(x')$ ($\underline m_y = 0$). Then the
cross-entropy of the vector $-\underline m$, $L(-\underline m, y) =
\log \sum_j e^{-\underline m_j}$, is an upper bound on
$\max_{\|x' - x\|_p \le \varepsilon} L(z(x'), y)$ (cross-entropy is invariant to adding a
constant to every logit, and decreasing in each margin $z_y - z_j$). Minimising it raises the
certified margins.

**Objective** (Zhang et al. 2020, "Towards Stable and Efficient Training of Verifiably Robust
Neural Networks", ICLR, arXiv:1906.06316, §3, the CROWN-IBP training objective):

$$\min_\theta\ \mathbb{E}_{(x, y)}\Big[\kappa\, L(z(x), y) + (1 - \kappa)\,
L\big(-\big((1 - \beta)\,\underline m_{\mathrm{IBP}}(x, \varepsilon)
+ \beta\,\underline m_{\mathrm{CROWN\text{-}IBP}}(x, \varepsilon)\big), y\big)\Big]$$

with $\underline m_{\mathrm{IBP}}$ the interval bound of the margins (`genbounds.verify`,
``method="ibp"``: the interval of the logits, then the specification $e_y - e_j$) and
$\underline m_{\mathrm{CROWN\text{-}IBP}}$ the backward CROWN bound of the margins with the
pre-activation intervals from interval propagation (``method="crown", intermediate="ibp"``,
which also takes the larger of it and the interval bound). IBP training (Gowal et al. 2018,
"On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust Models",
arXiv:1810.12715, the loss $\kappa\,\ell(z, y) + (1 - \kappa)\,\ell(\hat z(\varepsilon), y)$)
is the case $\beta = 0$.

**Schedules** (Gowal et al. 2018; Zhang et al. 2020, and the authors' code,
huanzhang12/CROWN-IBP ``train.py``). After ``warmup`` epochs of plain cross-entropy
($\varepsilon = 0$, $\kappa = 1$), $\varepsilon$ rises linearly, per minibatch, from 0 to
$\varepsilon_{\mathrm{train}}$ over ``ramp`` epochs; with $p = \varepsilon /
\varepsilon_{\mathrm{train}} \in [0, 1]$, $\kappa = 1 - p\,(1 - \kappa_{\mathrm{end}})$ and
(CROWN-IBP) $\beta = 1 - p\,(1 - \beta_{\mathrm{end}})$; both stay at their end values
afterwards.

**What is differentiated.** The bounds are those of `genbounds.verify` (`spec_bound` on
`Op` s): the network is traced once (`genbounds.Network.trace`, evaluation mode) and, at every
step, the records of its dense and convolution layers are rebuilt from the current kernels and
biases (`ParamOps`), so the bound's gradient is that of the verifier's own computation, in
float32. A network whose records cannot all be rebuilt so (BatchNorm, learnt activation slopes,
shared or transformed weights, non-ReLU activations) is refused. The lower slopes of the
unstable ReLUs are CROWN's adaptive choice ($1$ where $u \ge -l$), held constant in the
gradient, as in the authors' code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import NotBoundable, check_choice, check_positive, check_range

METHODS = ("ibp", "crown-ibp")
NORMS = ("linf", "l2")


@dataclasses.dataclass(frozen=True)
class CertifiedSpec:
    """The settings of certified training (hashable: part of the cache key of the jitted
    epoch)."""

    method: str
    eps: float
    norm: str
    warmup: int
    ramp: int
    kappa_end: float
    beta_end: float
    input_shape: tuple[int, ...] = ()

    def schedule(self, step: jax.Array, steps_per_epoch: int):
        """$\\varepsilon$, $\\kappa$, $\\beta$ at the 0-based global minibatch ``step``."""
        start = self.warmup * steps_per_epoch
        length = max(self.ramp * steps_per_epoch, 1)
        p = jnp.clip((step + 1 - start) / length, 0.0, 1.0).astype(jnp.float32)
        eps = p * jnp.float32(self.eps)
        kappa = 1.0 - p * (1.0 - self.kappa_end)
        beta = (1.0 - p * (1.0 - self.beta_end)) if self.method == "crown-ibp" else 0.0 * p
        return eps, kappa, beta

    def config(self) -> dict[str, Any]:
        return {"method": self.method, "eps": self.eps, "norm": self.norm,
                "warmup": self.warmup, "ramp": self.ramp, "kappa_end": self.kappa_end,
                "beta_end": self.beta_end if self.method == "crown-ibp" else None}


def _int(x: Any, name: str, minimum: int) -> int:
    import numbers

    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x!r}")
    return int(x)


def check_certified(certified: Any, *, eps: Any, norm: Any, warmup: Any, ramp: Any,
                    kappa_end: Any, beta_end: Any, lipschitz_margin: float,
                    max_epochs: int) -> CertifiedSpec | None:
    """The validated settings of `train`'s certified training, or None when it is off."""
    if certified is None:
        if eps is not None:
            raise ValueError("certified_eps is set but certified is None; pass "
                             "certified='ibp' or 'crown-ibp' to train for certified robustness")
        return None
    check_choice(certified, "certified", METHODS)
    if eps is None:
        raise ValueError(f"certified={certified!r} needs certified_eps, the radius to train "
                         "for (> 0)")
    eps = check_positive(eps, "certified_eps")
    check_choice(norm, "certified_norm", NORMS)
    warmup = _int(warmup, "certified_warmup", 0)
    ramp = _int(ramp, "certified_ramp", 1)
    kappa_end = check_range(kappa_end, "certified_kappa", low=0.0, high=1.0)
    beta_end = check_range(beta_end, "certified_beta", low=0.0, high=1.0)
    if lipschitz_margin > 0.0:
        raise ValueError(f"certified={certified!r} and lipschitz_margin={lipschitz_margin!r} "
                         "exclude each other: train with one certified loss")
    if warmup + ramp > max_epochs:
        raise ValueError(f"certified_warmup + certified_ramp ({warmup} + {ramp}) must not "
                         f"exceed max_epochs={max_epochs}: the radius would never reach "
                         f"certified_eps={eps}")
    return CertifiedSpec(certified, eps, norm, warmup, ramp, kappa_end, beta_end)


def _leaf(tree: Any, path: str) -> Any:
    node = tree
    for part in path.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _leaf_paths(tree: Any) -> list[str]:
    out = []
    for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out.append("/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in kp))
    return out


class ParamOps:
    """The records of a network as `genbounds.verify` reads them (`Op` s), as a function of
    its parameters: traced once on ``params0``, rebuilt from any parameters of the same
    structure by `ops`.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits`` (evaluation mode).
      params0: parameters to trace with.
      x: an example batch (b, *input).

    Raises:
      ValueError: the network is not one certified training supports (named).
    """

    def __init__(self, apply_fn: Callable, params0: Any, x: jax.Array):
        from genbounds.network._network import Network
        from genbounds.verify._ops import logit_node, read_ops, with_dtype

        def refuse(what: str) -> ValueError:
            return ValueError("train: certified training supports networks of dense and "
                              "convolution layers (kernel and bias read as they are) and "
                              f"ReLU-type activations, without BatchNorm; got {what}")

        try:
            net = Network.trace(apply_fn, params0, x)
            self.logits, _ = logit_node(net)
            self.base = read_ops(net, jnp.float32, output=self.logits)
        except NotBoundable as e:
            raise refuse(str(e)) from None
        self.dtype = jnp.float32
        self.input_shape = tuple(net.input_shape)
        self.k = math.prod(self.base[self.logits].shape)
        self.nodes = [with_dtype(n, jnp.float32) for n in net.nodes[:self.logits + 1]]
        self.sources: dict[int, tuple[str, str | None]] = {}
        used = set()
        for i, node in enumerate(self.nodes):
            if node.op != "linear":
                continue
            lay = node.layer
            if lay.folded:
                raise refuse(f"a BatchNorm folded into layer {lay.path!r}")
            if "#" in lay.path:
                raise refuse(f"layer {lay.path!r} reusing the weights of another layer")
            kpath = next((f"{lay.path}/{name}" for name in ("kernel", "w", "weight", "W")
                          if _leaf(params0, f"{lay.path}/{name}") is not None), None)
            k0 = None if kpath is None else _leaf(params0, kpath)
            if k0 is None or tuple(np.shape(k0)) != tuple(lay.kernel.shape) or not np.allclose(
                    np.asarray(k0, np.float64), np.asarray(lay.kernel, np.float64)):
                raise refuse(f"layer {lay.path!r} whose kernel is not a parameter read as it "
                             "is (transposed, reshaped, dilated or grouped)")
            # the bias leaf, also where the trace recorded none (a zero bias adds nothing)
            bpath = f"{lay.path}/bias"
            b0 = _leaf(params0, bpath)
            traced = np.zeros(lay.fan_out) if lay.bias is None else np.asarray(lay.bias)
            if b0 is None:
                if lay.bias is not None:
                    raise refuse(f"layer {lay.path!r} whose constant is not a bias parameter")
                bpath = None
            elif tuple(np.shape(b0)) != (lay.fan_out,) or not np.allclose(
                    np.asarray(b0, np.float64), np.asarray(traced, np.float64)):
                raise refuse(f"layer {lay.path!r} whose constant is not its bias parameter")
            self.sources[i] = (kpath, bpath)
            used.update(p for p in (kpath, bpath) if p is not None)
        unused = [p for p in _leaf_paths(params0) if p not in used]
        if unused:
            raise refuse(f"parameters the bounds would hold fixed: {', '.join(unused[:4])}")
        self._check(apply_fn, params0, x, refuse)

    def ops(self, params: Any) -> list:
        """The `Op` s with every dense and convolution record rebuilt from ``params``."""
        from genbounds.verify._ops import affine_op

        ops = list(self.base)
        for i, (kpath, bpath) in self.sources.items():
            node = self.nodes[i]
            b = None if bpath is None else _leaf(params, bpath)
            lay = dataclasses.replace(node.layer, kernel=_leaf(params, kpath), bias=b)
            ops[i] = affine_op(dataclasses.replace(node, layer=lay), self.base[i].name)
        return ops

    def logit_values(self, params: Any, x: jax.Array) -> jax.Array:
        """The logits the rebuilt records compute (B, K)."""
        from genbounds.network._graph import eval_node

        vals = [x.astype(self.dtype).reshape((-1,) + self.input_shape)]
        for i, node in enumerate(self.nodes[1:], start=1):
            if i in self.sources:
                kpath, bpath = self.sources[i]
                lay = dataclasses.replace(node.layer, kernel=_leaf(params, kpath),
                                          bias=None if bpath is None else _leaf(params, bpath))
                node = dataclasses.replace(node, layer=lay)
            vals.append(eval_node(node, [vals[j] for j in node.inputs]))
        return vals[-1].reshape(x.shape[0], -1)

    def _check(self, apply_fn, params0, x, refuse) -> None:
        """The rebuilt records must compute ``apply_fn`` at other parameters too (a random
        perturbation of every leaf), else some parameter enters otherwise than as read."""
        leaves, tree = jax.tree_util.tree_flatten(params0)
        keys = jax.random.split(jax.random.key(3), len(leaves))
        moved = [jnp.asarray(v) + (0.1 + jnp.std(jnp.asarray(v, jnp.float32))).astype(
            jnp.asarray(v).dtype) * jax.random.normal(k, jnp.shape(v), jnp.asarray(v).dtype)
            for v, k in zip(leaves, keys, strict=True)]
        p1 = jax.tree_util.tree_unflatten(tree, moved)
        want = np.asarray(apply_fn(p1, x), np.float64).reshape(x.shape[0], -1)
        got = np.asarray(self.logit_values(p1, jnp.asarray(x)), np.float64)
        scale = max(1.0, float(np.max(np.abs(want))))
        if got.shape != want.shape or float(np.max(np.abs(got - want))) > 1e-4 * scale:
            raise refuse("a network whose records, rebuilt from other parameters, do not "
                         "reproduce apply_fn (a parameter enters otherwise than as a dense or "
                         "convolution kernel or bias)")

    def margins(self, params: Any, x0: jax.Array, eps: jax.Array, y: jax.Array, *,
                norm: str, method: str) -> jax.Array:
        """Lower bounds (B, K) of the margins $z_y - z_j$ over the balls of radii ``eps`` (B,)
        by `genbounds.verify`'s ``method`` (``"ibp"``, or ``"crown"`` with interval
        propagation for the pre-activation intervals: CROWN-IBP); $+\\infty$ at $j = y$."""
        from genbounds.verify._propagate import margin_bounds

        x0 = x0.astype(self.dtype).reshape((-1,) + self.input_shape)
        return margin_bounds(self.ops(params), self.logits, x0, eps.astype(self.dtype), y,
                             norm=norm, method=method, intermediate="ibp")


def robust_loss(pops: ParamOps, spec: CertifiedSpec, params: Any, logits: jax.Array,
                xb: jax.Array, yb: jax.Array, eps: jax.Array, kappa: jax.Array,
                beta: jax.Array) -> jax.Array:
    """Per-example $\\kappa\\,L(z, y) + (1-\\kappa)\\,L(-\\underline m, y)$ (see above), with
    $\\underline m = \\beta\\,\\underline m_{\\mathrm{CROWN\\text{-}IBP}} +
    (1-\\beta)\\,\\underline m_{\\mathrm{IBP}}$ (each term computed only when its weight is
    not 0)."""
    import optax

    b = xb.shape[0]
    e = jnp.full((b,), eps, jnp.float32)

    own = jnp.arange(pops.k, dtype=yb.dtype)[None, :] == yb[:, None]

    def bound(method):  # 0 (not +inf) at j = y, so that the mixture stays finite
        return jnp.where(own, 0.0, pops.margins(params, xb, e, yb, norm=spec.norm,
                                                method=method))

    def m_ibp(_):
        return bound("ibp")

    def m_mix(_):
        crown = bound("crown")
        ibp = jax.lax.cond(beta < 1.0, m_ibp, lambda _: crown, None)
        return beta * crown + (1.0 - beta) * ibp

    if spec.method == "crown-ibp":
        m = jax.lax.cond(beta > 0.0, m_mix, m_ibp, None)
    else:
        m = m_ibp(None)
    robust_logits = -m
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
    rce = optax.softmax_cross_entropy_with_integer_labels(robust_logits, yb)
    return kappa * ce + (1.0 - kappa) * rce
