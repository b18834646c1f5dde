r"""Certified radii from bound propagation: the largest $\varepsilon$ for which the lower bound of
every margin stays positive, found by a bracketing search, all examples together.

**Corollary** (of `_crown.py`, `_alpha.py`, `_ibp.py` in this package). If the lower bound
$\underline m_j(\varepsilon)$ of $\min_{\|x - x_0\|_p \le \varepsilon} f_y(x) - f_j(x)$ is
positive for every $j \ne y$, every point of the closed ball is classified $y$ (with a unique
argmax); so the radius $\varepsilon$ is certified.

**Every radius below an evaluated one** (Zhang et al. 2018, Theorem 3.2, with the
concretisation of `_ball.py`). The intervals of the pre-activations computed on the ball of
radius $\varepsilon$ hold on every smaller ball, and with them fixed the CROWN (or α-CROWN)
bound of margin $j$ on the ball of radius $\varepsilon' \le \varepsilon$ is
$c_j - \varepsilon' n_j$, with $c_j = \Lambda_{0,j}^\top x_0 + \beta_j$ and
$n_j = \|\Lambda_{0,j}\|_q$ from the same backward pass. So one evaluation at $\varepsilon$
certifies every radius up to $\min(\varepsilon, g(\varepsilon))$,
$g(\varepsilon) = \min_j (c_j - s)/n_j$ ($s$ the rounding margin below; a margin certified at
$\varepsilon$ by the interval of the logits counts as $\varepsilon$).

**Search** (``search="bracket"``). The bound certifies $\varepsilon$ where
$h(\varepsilon) = g(\varepsilon) - \varepsilon \ge 0$; when $g$ decreases in $\varepsilon$
(the intervals widen with the ball) the radius sought is the root of $h$, between
$\min(\varepsilon, g(\varepsilon))$ and $\max(\varepsilon, g(\varepsilon))$ for every
$\varepsilon$ evaluated. Each example starts at a quarter of the first-order guess
$r_0 = M(x_0) / \|\nabla (f_y - f_{j^*})(x_0)\|_q$ ($j^*$ the runner-up), then takes regula falsi
on $h$ between its last certified and last uncertified radii (aimed 1% below the root: $g$ falls
steeply past it), or the geometric midpoint of its bracket when the two values of $h$ differ by
more than a factor 10 or the same end held twice; it stops when the bracket, or the root's
estimate, is within 2% of the certified radius, or after ``search_steps`` evaluations. The
radius returned is the largest one *certified* by an evaluation (0 when none was), so it is
sound whether or not $g$ is monotone; the monotonicity only steers the search. ``search=
"bisection"`` is the plain search of earlier versions: each evaluation says only whether its
radius is certified (doubling, halving, then bisection from $r_0$).

**Rounding.** By default the bounds enclose the float rounding of their own computation
(`_rounding.py`; float32, with CROWN or α-CROWN on intervals from CROWN or interval
propagation, or interval propagation alone), so they bound the network's records in real
arithmetic; the paths without the enclosure (forward intervals, unstable-only passes) compute
in float64. A radius is accepted only where every margin bound also exceeds
$\sqrt{u}\,(1 + |M(x_0)|)$ ($u$ the machine epsilon of the computation: $3.5\cdot10^{-4}$
relative in float32, $1.5\cdot10^{-8}$ in float64; the last pass is in float64 where x64 is on), a safety margin for the network as
deployed
(its own float evaluation, and the records' constants rounded to the computation's dtype) and,
on the paths without the enclosure, for the propagation's rounding.
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


def _as_computed(eps: np.ndarray, dtype) -> np.ndarray:
    """The radii as the propagation's dtype holds them (float32 rounds them), in float64."""
    return np.asarray(np.asarray(eps, np.float64).astype(np.dtype(dtype)), np.float64)


def _round_up(v: float, size: int) -> int:
    return int(min(size, 8 * math.ceil(v / 8)))


def _grow_caps(prop: Propagator, counts: dict, near: np.ndarray) -> None:
    """Raise the CROWN passes per example of a pre-activation to the unstable neurons met by
    the examples evaluated near their radius (``near``), with a fifth to spare."""
    if not np.any(near):
        return
    grow = {}
    for i, c in counts.items():
        need = float(np.max(np.asarray(c)[near]))
        if need > prop.caps[i]:
            grow[i] = _round_up(max(1.2 * need, 1.25 * prop.caps[i]), prop.sizes[i])
    if grow:
        prop.caps = {**prop.caps, **grow}


def bisection(prop: Propagator, net_fn: Callable, x0: jnp.ndarray, y: jnp.ndarray,
              margins: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The plain search: each evaluation only says whether its radius is certified (doubling,
    halving, then bisection from the first-order guess; ``steps`` evaluations)."""
    n = x0.shape[0]
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    eps = _first_order(net_fn, x0, y, prop.norm)
    unit = float(jnp.finfo(prop.result_dtype).eps)
    slack = math.sqrt(unit) * (1.0 + np.abs(margins))
    live = margins > 0
    for _ in range(steps):
        eps = _as_computed(eps, prop.dtype)
        lb = np.asarray(prop.margins(x0, jnp.asarray(eps, prop.dtype), y), np.float64)
        ok = np.all(lb > slack[:, None], axis=1) & live
        lo = np.where(ok, np.maximum(lo, eps), lo)
        hi = np.where(ok, hi, np.minimum(hi, eps))
        eps = np.where(np.isinf(hi), 2 * np.maximum(lo, eps), np.where(lo == 0, hi / 2,
                                                                        (lo + hi) / 2))
    return np.where(live, lo, 0.0), hi


def _next_radius(eps, best, upper, e_lo, h_lo, e_hi, h_hi, same, rtol):
    """The next radius to evaluate per example (see the module's docstring)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        top = np.where(np.isinf(e_hi), upper, e_hi)
        mid = np.sqrt(best * top)
        # no failure yet: towards the bound g met, past it once it is near
        nxt = np.where(np.isinf(upper), 2 * eps,
                       np.where(upper < 2 * best, upper * (1 + rtol), mid))
        failed = ~np.isinf(e_hi)
        nxt = np.where(failed & (best <= 0), e_hi / 4, np.where(failed, mid, nxt))
        # regula falsi on h between the two ends, aimed a little below the root (g falls
        # steeply past it), where the ends' values are comparable and neither end has held
        # twice in a row; else the geometric midpoint
        root = e_lo + (e_hi - e_lo) * h_lo / (h_lo - h_hi)
        use = (failed & (best > 0) & np.isfinite(root) & ~np.isnan(h_lo) & (same < 2)
               & (h_hi >= -10 * h_lo))
        aim = np.clip(root * (1 - rtol / 2), best + 0.02 * (top - best),
                      top - 0.1 * (top - best))
        return np.where(use, aim, nxt), np.where(use, root, np.inf)


def bracket(prop: Propagator, net_fn: Callable, x0: jnp.ndarray, y: jnp.ndarray,
           margins: np.ndarray, steps: int, *, rtol: float = 0.02,
           ) -> tuple[np.ndarray, np.ndarray]:
    """The largest verified radius and the smallest radius at which the bound failed (inf if
    none) per example, after at most ``steps`` bound evaluations (fewer once every bracket is
    within ``rtol``)."""
    n = x0.shape[0]
    best = np.zeros(n)
    failed = np.full(n, np.inf)
    upper = np.full(n, np.inf)
    # the last evaluations with h = g - eps >= 0 and < 0: (eps, h)
    e_lo, h_lo = np.zeros(n), np.full(n, np.nan)
    e_hi, h_hi = np.full(n, np.inf), np.full(n, np.nan)
    eps = _first_order(net_fn, x0, y, prop.norm) / 4
    unit = float(jnp.finfo(prop.result_dtype).eps)
    slack = math.sqrt(unit) * (1.0 + np.abs(margins))
    live = margins > 0
    done = ~live
    side, same = np.zeros(n, bool), np.full(n, -1)
    for _ in range(steps):
        eps = _as_computed(eps, prop.dtype)  # the radii the bounds are computed at
        out = prop.linear_margins(x0, jnp.asarray(eps, prop.dtype), y)
        lb, centre, dn = (np.asarray(a, np.float64) for a in out[:3])
        cert = lb > slack[:, None]
        ok = np.all(cert, axis=1) & live
        # the linear bound of margin j is centre_j - e dn_j for every radius e <= eps
        pos = dn > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            rad = np.where(pos, (centre - slack[:, None]) / np.where(pos, dn, 1.0),
                           np.where(centre > slack[:, None], np.inf, -np.inf))
        g = np.min(np.where(cert, np.maximum(rad, eps[:, None]), rad), axis=1)
        r = np.where(live, np.clip(np.minimum(g, eps), 0.0, None), 0.0)
        best = np.maximum(best, r)
        failed = np.where(ok | ~live, failed, np.minimum(failed, eps))
        if prop.caps is not None:
            _grow_caps(prop, out[3], live & ~done & (eps <= 2 * best))
        # the bound certifies e where h(e) = g(e) - e >= 0; with g decreasing in e, the
        # largest such e (the radius sought) lies between min(eps, g) and max(eps, g)
        upper = np.maximum(np.minimum(upper, np.maximum(eps, g)), best)
        h = g - eps
        # ok: this evaluation is the bracket's new lower end, else its new upper end
        same = np.where(ok == side, same + 1, 0)
        side = ok
        e_lo, h_lo = np.where(ok, eps, e_lo), np.where(ok, h, h_lo)
        e_hi, h_hi = np.where(ok, e_hi, eps), np.where(ok, h_hi, h)
        done = done | (upper <= best * (1 + rtol))
        if np.all(done):
            break
        nxt, root = _next_radius(eps, best, upper, e_lo, h_lo, e_hi, h_hi, same, rtol)
        done = done | (root <= best * (1 + rtol))
        if np.all(done):
            break
        eps = np.where(done, eps, nxt)
    return np.where(live, best, 0.0), failed


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
    search_steps: int = 8,
    batch: int = 64,
    unstable_only: bool = False,
    search: str = "bracket",
    dtype: Any = None,
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
      search_steps: bound evaluations of the radius search per example (at most; it stops
        once every bracket is within 1%).
      batch: examples bounded together (at most; the batches are made equal).
      unstable_only: with ``intermediate="crown"``, the CROWN pass of a pre-activation only
        for the neurons that cheaper bounds leave unstable (`Propagator`), at most as many
        per example as the search has met near the radii (default False: every neuron; on
        the benchmark's networks the unstable-only passes saved less than the forward bounds
        and recompilations cost).
      search: ``"bracket"`` (default: each evaluation also certifies every radius its linear
        bound covers, and brackets the radius) or ``"bisection"`` (each evaluation only says
        whether its radius is certified; ``search_steps`` evaluations).
      dtype: the dtype of the propagation (`Propagator`): by default float32 where the bounds
        enclose their own rounding and the network's parameters and ``X`` are float32 values,
        float64 elsewhere (see the module's docstring); float64 costs about 3x the time on a
        CPU for the same radii to about 1e-6 when x64 is on (the last pass is float64 then).

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
    check_choice(search, "search", ("bracket", "bisection"))
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
    if dtype is not None and np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if dtype is not None and np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("dtype float64 needs jax_enable_x64 (jax.config.update("
                         "'jax_enable_x64', True))")
    if dtype is None and not np.array_equal(np.asarray(X, np.float32).astype(np.asarray(X).dtype),
                                            np.asarray(X)):
        dtype = np.float64 if jax.config.jax_enable_x64 else np.float32  # X needs float64
    prop = Propagator(net, norm=norm, method=method, intermediate=intermediate,
                      steps=int(steps), unstable_only=bool(unstable_only),
                      dtype=None if dtype is None else jnp.dtype(dtype))
    if prop.caps is not None and search == "bracket":  # raised by the search where needed
        prop.caps = {i: _round_up(v / 4, v) for i, v in prop.sizes.items()}
    if prop.k < 2:
        raise NotBoundable(f"crown_radius: the network has {prop.k} logit; a margin needs at "
                           "least 2")
    if int(np.max(y)) >= prop.k:
        raise ValueError(f"y must hold labels in [0, {prop.k}) for the network's {prop.k} "
                         f"logits, got labels up to {int(np.max(y))}")
    Xn = jnp.asarray(X).astype(prop.dtype).reshape((n,) + prop.input_shape)

    net_fn = prop.logit_values

    radius, upper, margins = [], [], []
    batch = -(-n // -(-n // batch))  # equal batches of at most ``batch``
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
        find = bracket if search == "bracket" else bisection
        lo, hi = find(prop, net_fn, x0, jnp.asarray(yy), m, search_steps)
        radius.append(lo[:size])
        upper.append(hi[:size])
        margins.append(m[:size])
    notes = list(net.notes) + prop.notes + [
        f"{method} bounds on the margins over {norm} balls, pre-activation intervals by "
        f"{'interval propagation' if method == 'ibp' else intermediate}, in "
        f"{np.dtype(prop.dtype).name}"
        f"{' with its rounding enclosed' if prop.enclose else ' (rounding not enclosed)'}; "
        f"radius by a {search} "
        f"search of at most {search_steps} bound evaluations per example (the largest "
        "verified)"]
    terms = {"upper": np.concatenate(upper), "notes": notes, "intermediate": intermediate,
             "search_steps": search_steps, "search": search,
             "dtype": np.dtype(prop.dtype).name, "rounding_enclosed": prop.enclose}
    return CertifiedRadii(radius=np.concatenate(radius), norm=norm,
                          margins=np.concatenate(margins), lipschitz=math.nan,
                          lipschitz_tight=None, method=method, failure_probability=0.0,
                          terms=terms)
