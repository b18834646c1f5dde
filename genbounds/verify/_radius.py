r"""Certified radii from bound propagation: the largest $\varepsilon$ for which the lower bound of
every margin stays positive, found by bisection, all examples together.

**Corollary** (of `_crown.py`, `_alpha.py`, `_ibp.py` in this package). If the lower bound
$\underline m_j(\varepsilon)$ of $\min_{\|x - x_0\|_p \le \varepsilon} f_y(x) - f_j(x)$ is
positive for every $j \ne y$, every point of the closed ball is classified $y$ (with a unique
argmax); so the radius $\varepsilon$ is certified.

**Search.** Each example starts from a first-order guess $r_0 = M(x_0) / \|\nabla (f_y -
f_{j^*})(x_0)\|_q$ ($j^*$ the runner-up), doubles its radius while it is certified, halves it
while it is not, and bisects once it holds a certified radius below an uncertified one. The
radius returned is the largest one *verified* during the search (0 when none was), so it is
sound whether or not the bound is monotone in $\varepsilon$; it is within a factor
$2^{-k}$ of the bracket after $k$ bisection steps.

**Rounding.** A radius is accepted only where every margin bound exceeds
$\sqrt{u}\,(1 + |M(x_0)|)$ ($u$ the unit roundoff of the computation: $1.5\cdot10^{-8}$ relative
in float64), a safety margin for the float rounding of the propagation and for the network being
evaluated in float32 where its parameters are float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.adversarial._certified import CertifiedRadii
from genbounds.core._checks import (
    NotBoundable,
    check_choice,
    check_float_array,
    check_labels,
    check_same_length,
)
from genbounds.network._network import Network, as_network

from ._ball import NORMS
from ._propagate import INTERMEDIATE, METHODS, Propagator


def _first_order(net_fn: Callable, x0: jnp.ndarray, y: jnp.ndarray, norm: str) -> np.ndarray:
    """Margin over the dual norm of its gradient: the distance to the linearised boundary."""
    def margin(x, t):
        f = net_fn(x[None])[0].reshape(-1)
        other = jnp.max(jnp.where(jnp.arange(f.shape[0], dtype=t.dtype) == t, -jnp.inf, f))
        return f[t] - other

    m, g = jax.vmap(jax.value_and_grad(margin))(x0, y)
    g = g.reshape(g.shape[0], -1)
    q = jnp.sum(jnp.abs(g), 1) if norm == "linf" else jnp.sqrt(jnp.sum(g * g, 1))
    r = np.asarray(m / jnp.maximum(q, 1e-30), np.float64)
    return np.where(np.isfinite(r) & (r > 0), r, 1e-3)


def search(prop: Propagator, net_fn: Callable, x0: jnp.ndarray, y: jnp.ndarray,
           margins: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The largest verified radius and the smallest refuted one (inf if none) per example."""
    n = x0.shape[0]
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    eps = _first_order(net_fn, x0, y, prop.norm)
    unit = float(jnp.finfo(prop.dtype).eps)
    slack = math.sqrt(unit) * (1.0 + np.abs(margins))
    live = margins > 0
    for _ in range(steps):
        lb = np.asarray(prop.margins(x0, jnp.asarray(eps, prop.dtype), y), np.float64)
        ok = np.all(lb > slack[:, None], axis=1) & live
        lo = np.where(ok, np.maximum(lo, eps), lo)
        hi = np.where(ok, hi, np.minimum(hi, eps))
        eps = np.where(np.isinf(hi), 2 * np.maximum(lo, eps), np.where(lo == 0, hi / 2,
                                                                        (lo + hi) / 2))
    return np.where(live, lo, 0.0), hi


def crown_radius(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Callable[[Any, Any], Any] | None = None,
    norm: str = "l2",
    method: str = "crown",
    intermediate: str = "crown",
    steps: int = 20,
    search_steps: int = 16,
    batch: int = 64,
) -> CertifiedRadii:
    r"""Certified radii by bound propagation: the largest $\varepsilon$ found for which the
    lower bound of every margin $f_y - f_j$ over the $\varepsilon$-ball is positive.

    The bounds are interval propagation (``"ibp"``, Gowal et al. 2018), CROWN (``"crown"``,
    Zhang et al. 2018, Theorem 3.2) or α-CROWN (``"alpha-crown"``, Xu et al. 2021) on the
    records of the traced network; see docs/verify.md for the theorems and what is relaxed how.
    Every radius is sound: no perturbation of norm $\le$ radius changes the prediction (up to
    the float rounding stated in the docs); 0 where the example is misclassified.

    Args:
      params: a traced `Network`, or parameters with ``apply_fn`` (traced on ``X``).
      X: inputs (n, ...); y: integer labels (n,).
      apply_fn: ``apply_fn(params, X) -> logits``.
      norm: ``"l2"`` or ``"linf"``.
      method: ``"crown"`` (default), ``"alpha-crown"`` or ``"ibp"``.
      intermediate: pre-activation intervals by ``"crown"`` (default: a backward pass per
        layer), ``"forward"`` (forward linear bounds, cheaper, looser) or ``"ibp"``.
      steps: α-CROWN's gradient steps per bound.
      search_steps: bound evaluations of the radius search per example.
      batch: examples bounded together.

    Returns:
      A `genbounds.adversarial.CertifiedRadii` with ``method`` the bound used,
      ``terms["upper"]`` the smallest radius the bound failed to certify per example.

    Raises:
      NotBoundable: the network holds an operation no relaxation covers (named), or was read
        from parameter names; ValueError, TypeError: bad arguments.

    Examples:
      >>> import numpy as np
      >>> W = np.array([[1.0, -1.0], [0.0, 0.0]])
      >>> X = np.array([[0.5, 0.0], [-2.0, 1.0]]); y = np.array([0, 1])
      >>> r = crown_radius({"W": W}, X=X, y=y, apply_fn=lambda p, x: x @ p["W"])
      >>> np.round(r.radius, 2).tolist()  # the distances |x_0| to the boundary x_0 = 0, less
      ...                                 # the rounding margin and the search's precision
      [0.5, 2.0]
    """
    check_choice(norm, "norm", NORMS)
    check_choice(method, "method", METHODS)
    check_choice(intermediate, "intermediate", INTERMEDIATE)
    for name, v, low in (("search_steps", search_steps, 1), ("batch", batch, 1),
                         ("steps", steps, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    X = check_float_array(X, "X")
    y = check_labels(y, "y")
    n = check_same_length(X, y, "X", "y")
    net = as_network(params, apply_fn=apply_fn, X=X, caller="crown_radius")
    if not isinstance(net, Network) or net.source != "trace":
        raise NotBoundable("crown_radius: bound propagation needs the network's function "
                           "(apply_fn with X, or a traced Network); parameters alone only "
                           "assume a structure")
    prop = Propagator(net, norm=norm, method=method, intermediate=intermediate,
                      steps=int(steps))
    if prop.k < 2:
        raise NotBoundable(f"crown_radius: the network has {prop.k} logit; a margin needs at "
                           "least 2")
    if int(np.max(y)) >= prop.k:
        raise ValueError(f"y must hold labels in [0, {prop.k}) for the network's {prop.k} "
                         f"logits, got labels up to {int(np.max(y))}")
    Xn = jnp.asarray(X).astype(prop.dtype).reshape((n,) + prop.input_shape)

    net_fn = prop.logit_values

    radius, upper, margins = [], [], []
    for s in range(0, n, batch):
        x0 = Xn[s:s + batch]
        yy = np.asarray(y[s:s + batch])
        size = x0.shape[0]
        if size < min(batch, n):  # pad the last batch: one compiled shape for every batch
            pad = min(batch, n) - size
            x0 = jnp.concatenate([x0, jnp.repeat(x0[:1], pad, axis=0)])
            yy = np.concatenate([yy, np.repeat(yy[:1], pad)])
        f = np.asarray(net_fn(x0), np.float64)
        own = f[np.arange(f.shape[0]), yy]
        rest = np.where(np.arange(f.shape[1])[None] == yy[:, None], -np.inf, f)
        m = own - rest.max(1)
        lo, hi = search(prop, net_fn, x0, jnp.asarray(yy), m, search_steps)
        radius.append(lo[:size])
        upper.append(hi[:size])
        margins.append(m[:size])
    notes = list(net.notes) + prop.notes + [
        f"{method} bounds on the margins over {norm} balls, pre-activation intervals by "
        f"{'interval propagation' if method == 'ibp' else intermediate}; radius by a search "
        f"of {search_steps} bound evaluations per example (the largest verified)"]
    terms = {"upper": np.concatenate(upper), "notes": notes, "intermediate": intermediate,
             "search_steps": search_steps}
    return CertifiedRadii(radius=np.concatenate(radius), norm=norm,
                          margins=np.concatenate(margins), lipschitz=math.nan,
                          lipschitz_tight=None, method=method, failure_probability=0.0,
                          terms=terms)
