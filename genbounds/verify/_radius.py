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

**Search** (``search="bracket"``). Let $m(\varepsilon)$ be the smallest margin bound at
radius $\varepsilon$ less the rounding margin; the radius sought is where $m$ crosses 0 (it
falls as the ball grows, ever faster as neurons become unstable). Each example starts at an
eighth of the first-order guess $r_0 = M(x_0) / \|\nabla (f_y - f_{j^*})(x_0)\|_q$ ($j^*$
the runner-up) and keeps a bracket: the largest radius evaluated with $m \ge 0$ (at first 0,
where $m$ is the margin) and the smallest with $m < 0$. Until a radius fails it grows by the
smaller of two guesses that overshoot (the chord of $m$ from 0 through the certified end, and
$g$ of that end), 1.1 to 2 times; then it takes regula falsi on $m$ inside the bracket with
Illinois' rule (an end kept twice has its value halved; Dowell & Jarratt 1971), at least a
quarter of the bracket up when the failed end's value is 10 times larger, and once the ends are
within $(1 + r)^2$ of each other the failed end over $1 + r$, $r$ = 2%. It stops when the
smallest failed radius is within 2% of the largest certified one, or after ``search_steps``
evaluations. The examples share the batch's slots: an example that has stopped frees its slot
for the next one. The radius returned is the largest one *certified* by an evaluation,
counting every radius its linear bound covers (0 when none was), so it is sound whatever $m$
does; its shape only steers the search. ``search="bisection"`` is the plain search of earlier
versions: each evaluation says only whether its radius is certified (doubling, halving, then
bisection from $r_0$).

**Rounding.** By default the bounds enclose the float rounding of their own computation
(`_rounding.py`; float32, with CROWN or α-CROWN on intervals from CROWN or interval
propagation, or interval propagation alone), so they bound the network's records in real
arithmetic; the paths without the enclosure (forward intervals, unstable-only passes) compute
in float64 and do not enclose it. A radius is accepted only where every margin bound also
exceeds $\sqrt{u}\,(1 + |M(x_0)|)$ ($u$ the machine epsilon of the last pass: $1.5\cdot10^{-8}$
relative in float64, where x64 is on; $3.5\cdot10^{-4}$ in float32). That margin is meant for
what the certificate does not bound: the deployed network's own float evaluation (and BatchNorm
folded into the kernels in the parameters' dtype), and the propagation's rounding on the paths
without the enclosure. It is a safety margin, not a proof.
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

from ._ball import NORMS, dual_norm
from ._propagate import INTERMEDIATE, METHODS, Propagator


def _first_order(net_fn: Callable, x0: np.ndarray, y: np.ndarray, norm: str,
                 batch: int | None = None) -> np.ndarray:
    """Margin over the dual norm of its gradient: the distance to the linearised boundary.
    One jitted program, run on batches of ``batch`` examples (the last one padded)."""
    def margin(x, t):
        f = net_fn(x[None])[0].reshape(-1)
        other = jnp.max(jnp.where(jnp.arange(f.shape[0], dtype=t.dtype) == t, -jnp.inf, f))
        return f[t] - other

    @jax.jit
    def guess(x, t):
        m, g = jax.vmap(jax.value_and_grad(margin))(x, t)
        return m / jnp.maximum(dual_norm(g.reshape(g.shape[0], -1), norm, (1,)), 1e-30)

    x0, y = np.asarray(x0), np.asarray(y)
    n = x0.shape[0]
    batch = n if batch is None else batch
    r = np.concatenate([np.asarray(guess(jnp.asarray(_padded(x0[s:s + batch], batch)),
                                         jnp.asarray(_padded(y[s:s + batch], batch))),
                                   np.float64)[:min(batch, n - s)]
                        for s in range(0, n, batch)])
    return np.where(np.isfinite(r) & (r > 0), r, 1e-3)


def _slack(prop: Propagator, margins: np.ndarray) -> np.ndarray:
    """The acceptance margin of every bound: $\\sqrt{u}\\,(1 + |M(x_0)|)$, $u$ the machine
    epsilon of the last pass (see the module's docstring)."""
    return math.sqrt(float(jnp.finfo(prop.result_dtype).eps)) * (1.0 + np.abs(margins))


def _as_computed(eps: np.ndarray, dtype) -> np.ndarray:
    """The radii as the propagation's dtype holds them (float32 rounds them), in float64."""
    return np.asarray(np.asarray(eps, np.float64).astype(np.dtype(dtype)), np.float64)


def _round_down(r: np.ndarray, dtype) -> np.ndarray:
    """``r`` rounded down to values of ``dtype`` (as float64): the radius a user evaluates in
    that dtype is then never above the certified one."""
    q = r.astype(np.dtype(dtype))
    q = np.where(q.astype(np.float64) > r, np.nextafter(q, np.zeros_like(q)), q)
    return q.astype(np.float64)


def _above(values: np.ndarray, dtype) -> np.ndarray:
    """The smallest values of ``dtype`` strictly above ``values`` (as float64): a ball of that
    radius certified contains the closed ball of radius ``values``."""
    v = np.asarray(values, np.float64)
    q = v.astype(np.dtype(dtype))
    q = np.where(q.astype(np.float64) <= v, np.nextafter(q, np.full_like(q, np.inf)), q)
    return q.astype(np.float64)


def _snap(p: np.ndarray, best: np.ndarray, failed: np.ndarray,
          grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per example, the radius of its row of ``grid`` (k, m) still undecided (above the
    certified radius ``best``, below the failed one) nearest to the proposal ``p`` on a log
    scale, and whether none is left."""
    open_ = (grid > best[:, None]) & (grid < failed[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.abs(np.log(grid) - np.log(np.maximum(p, 1e-300))[:, None])
    j = np.argmin(np.where(open_, d, np.inf), axis=1)
    none = ~open_.any(axis=1)
    return np.where(none, p, grid[np.arange(grid.shape[0]), j]), none


def _grid_radii(grid: np.ndarray, shift: np.ndarray, dtype) -> np.ndarray:
    """Per example (n, m), the radii at which to evaluate the positive radii of ``grid``: the
    smallest values of ``dtype`` above them, and where the centre was moved by ``shift`` when
    rounded to ``dtype``, above that plus the shift (with a relative 1e-12 for the float64
    subtraction), so that the radius returned, the certified one less the shift rounded down
    to ``dtype``, is still above the radius of the grid."""
    a = _above(np.unique(grid[grid > 0]), dtype)
    moved = _above((a[None] + shift[:, None]) * (1 + 1e-12), dtype)
    return np.where(shift[:, None] > 0, moved, a[None])


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
    slack = _slack(prop, margins)
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


def _padded(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` with its first row repeated up to ``size`` rows (one compiled shape)."""
    if a.shape[0] == size:
        return a
    return np.concatenate([a, np.repeat(a[:1], size - a.shape[0], axis=0)])


def bracket(prop: Propagator, net_fn: Callable, x0: np.ndarray, y: np.ndarray,
            margins: np.ndarray, steps: int, *, batch: int, rtol: float = 0.02,
            grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The largest verified radius and the smallest radius at which the bound failed (inf if
    none) per example, after at most ``steps`` bound evaluations of each (fewer once the
    failed radius is within ``rtol`` of the verified one).

    With ``grid`` ((n, m): each example's sorted radii, values of the propagation's dtype)
    every evaluation is at a radius of the example's row, the undecided one nearest to the
    search's proposal, and an example stops when no radius of its row lies between its
    verified and its failed radius (each evaluation decides at least one), whatever ``rtol``.

    The examples share ``batch`` slots: each evaluation bounds the ``batch`` first examples
    whose search goes on, so an example that needs few evaluations frees its slot for the
    next one (the bound of an example does not depend on the others in its batch)."""
    n = x0.shape[0]
    best = np.zeros(n)
    failed = np.full(n, np.inf)
    slack_all = _slack(prop, margins)
    live_all = margins > 0
    # the bracket on m(e) = min_j lower bound of margin j at radius e, less the slack: a the
    # largest radius evaluated with m >= 0 (radius 0: the margin itself), b the smallest with
    # m < 0; side: which end the last evaluation moved (Illinois' rule)
    a_e, a_m = np.zeros(n), margins - slack_all
    b_e, b_m = np.full(n, np.inf), np.full(n, np.nan)
    a_g = np.full(n, np.inf)  # g at the certified end: where its linear bound reaches 0
    side = np.zeros(n, int)
    eps = _first_order(net_fn, x0, y, prop.norm, batch) / 8
    done = ~live_all
    if grid is not None:
        eps, none = _snap(eps, best, failed, grid)
        done |= none
    used = np.zeros(n, int)
    while True:
        todo = np.flatnonzero(~done & (used < steps))
        if todo.size == 0:
            break
        i = todo[:batch]
        k = i.size
        eps[i] = _as_computed(eps[i], prop.dtype)  # the radii the bounds are computed at
        out = prop.linear_margins(jnp.asarray(_padded(x0[i], batch)),
                                  jnp.asarray(_padded(eps[i], batch), prop.dtype),
                                  jnp.asarray(_padded(y[i], batch)))
        lb, centre, dn = (np.asarray(a, np.float64)[:k] for a in out[:3])
        used[i] += 1
        e, slack, live = eps[i], slack_all[i], live_all[i]
        cert = lb > slack[:, None]
        ok = np.all(cert, axis=1) & live
        # the linear bound of margin j is centre_j - e' dn_j for every radius e' <= e
        pos = dn > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            rad = np.where(pos, (centre - slack[:, None]) / np.where(pos, dn, 1.0),
                           np.where(centre > slack[:, None], np.inf, -np.inf))
        g = np.min(np.where(cert, np.maximum(rad, e[:, None]), rad), axis=1)
        best[i] = np.maximum(best[i], np.where(live, np.clip(np.minimum(g, e), 0.0, None), 0.0))
        failed[i] = np.where(ok | ~live, failed[i], np.minimum(failed[i], e))
        if prop.caps is not None:
            counts = {j: np.asarray(c)[:k] for j, c in out[3].items()}
            _grow_caps(prop, counts, live & ~done[i] & (e <= 2 * best[i]))
        m = np.min(lb, axis=1) - slack
        ae, am, be, bm, sd = a_e[i], a_m[i], b_e[i], b_m[i], side[i]
        up_a, up_b = ok & (e > ae), ~ok & (e < be)
        # Illinois: the end that stayed put twice has its value halved (no one-sided crawl)
        bm = np.where(up_a & (sd == 1), bm / 2, bm)
        am = np.where(up_b & (sd == -1), am / 2, am)
        ae, am = np.where(up_a, e, ae), np.where(up_a, m, am)
        be, bm = np.where(up_b, e, be), np.where(up_b, m, bm)
        ag = np.where(up_a, g, a_g[i])
        sd = np.where(up_a, 1, np.where(up_b, -1, sd))
        a_e[i], a_m[i], b_e[i], b_m[i], a_g[i], side[i] = ae, am, be, bm, ag, sd
        nxt = _next_radius(ae, am, be, bm, ag, margins[i] - slack, rtol)
        if grid is None:
            fin = done[i] | (be <= best[i] * (1 + rtol))
        else:
            nxt, none = _snap(nxt, best[i], failed[i], grid[i])
            fin = done[i] | none
        done[i] = fin
        eps[i] = np.where(fin, e, nxt)
    return np.where(live_all, best, 0.0), failed


def _next_radius(ae, am, be, bm, ag, m0, rtol):
    """The next radius per example. With no failure yet: the smaller of two overshooting
    guesses (m tends to fall faster as the radius grows), the chord from radius 0 through the
    certified end extended and the zero of that end's linear bound ``ag``, within 1.1 and 2
    times that end. Bracketed: regula falsi on m between the ends (with Illinois' halving,
    done by the caller), kept at least a quarter of the bracket above its lower end when the
    failed end's value is more than 10 times larger (m falls steeply near the radius, and
    the chord then lands far below it); once the ends are within ``(1 + rtol)^2``, the failed
    end over ``1 + rtol``, which ends the search whatever it gives."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        span = be - ae
        root = ae + span * am / (am - bm)
        low = np.where(-bm > 10 * np.abs(am), ae + 0.25 * span, ae + 0.03 * span)
        inside = np.clip(root, low, be - 0.03 * span)
        inside = np.where(np.isfinite(inside), inside, ae + span / 2)
        chord = np.where(m0 - am > 0, ae * m0 / (m0 - am), 4 * ae)
        grow = np.clip(np.minimum(chord, ag) * 1.02, 1.1 * ae, 2 * ae)
        last = be / (1 + rtol) * (1 - 1e-9)
        inside = np.where(be <= ae * (1 + rtol) ** 2, np.maximum(inside, last), inside)
    return np.where(np.isinf(be), grow, inside)


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
    grid: Any = None,
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
      search_steps: bound evaluations of the radius search per example (at most; the bracket
        stops once the failed radius is within 2% of the certified one, the grid search once
        every radius of the grid is decided).
      batch: examples bounded together (at most; the batches are made equal).
      unstable_only: with ``intermediate="crown"``, the CROWN pass of a pre-activation only
        for the neurons that cheaper bounds leave unstable (`Propagator`), at most as many
        per example as the search has met near the radii (default False: every neuron; on
        the benchmark's networks the unstable-only passes saved less than the forward bounds
        and recompilations cost).
      search: ``"bracket"`` (default: each evaluation also certifies every radius its linear
        bound covers, and brackets the radius), ``"bisection"`` (each evaluation only says
        whether its radius is certified; ``search_steps`` evaluations) or ``"grid"`` (the
        bracketing search with every evaluation at a radius of ``grid``: it decides, for every
        radius of the grid, whether the bound certifies it, in as few evaluations as it can,
        and stops there; radii above one that failed are not evaluated, and radii still
        undecided after ``search_steps`` count as not certified; the radius returned is the
        largest certified on the way, a lower bound of the other searches' where it falls
        between two radii of the grid).
      grid: with ``search="grid"``, the radii to decide (a 1-D array of finite values >= 0,
        at least one positive; radius 0 is ``terms["certified_at_zero"]``). Each is evaluated
        at the smallest value of the propagation's dtype above it (above it plus the centre's
        move where ``X`` was rounded to that dtype), so a radius of the grid counts as
        certified (``radius >`` it) exactly where an evaluation there, or another's linear
        bound, certified the closed ball around ``X``.
      dtype: the dtype of the propagation (`Propagator`): by default float32 where the bounds
        enclose their own rounding and the network's parameters and ``X`` are float32 values,
        float64 elsewhere (see the module's docstring); float64 costs about 2x the time on a
        CPU for radii about 0.3% larger (the enclosure widens the float32 intervals).

    Returns:
      A `genbounds.adversarial.CertifiedRadii` with ``method`` the bound used,
      ``terms["upper"]`` the smallest radius the bound failed to certify per example and
      ``terms["certified_at_zero"]`` whether the point itself is certified (a positive radius
      certified, or the margin of the records at ``X`` above the acceptance margin; the
      grid search may certify no positive radius of a correctly classified example).

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
    check_choice(search, "search", ("bracket", "bisection", "grid"))
    if (grid is None) != (search != "grid"):
        raise ValueError("grid must be given exactly when search='grid', got "
                         f"search={search!r} and grid={'None' if grid is None else 'an array'}")
    if grid is not None:
        grid = np.asarray(check_float_array(grid, "grid"), np.float64)
        if grid.ndim != 1 or np.any(grid < 0) or not np.any(grid > 0):
            raise ValueError("grid must be a 1-D array of radii >= 0 with at least one "
                             f"positive, got {np.asarray(grid).tolist()!r}")
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
    X64 = np.asarray(X, np.float64).reshape((n,) + prop.input_shape)
    Xn = jnp.asarray(np.asarray(X).astype(np.dtype(prop.dtype)).reshape(X64.shape))
    # the centres as the propagation holds them; a ball of radius r around them contains the
    # ball of radius r - shift around X (the shift 0 where X is exact in that dtype)
    moved = (X64 - np.asarray(Xn, np.float64)).reshape(n, -1)
    shift = (np.max(np.abs(moved), axis=1) if norm == "linf"
             else np.sqrt(np.sum(moved * moved, axis=1))) * (1 + 1e-12)

    net_fn = prop.logit_values

    radius, upper, margins = [], [], []
    batch = -(-n // -(-n // batch))  # equal batches of at most ``batch``
    for s in range(0, n, batch):
        x0 = Xn[s:s + batch]
        yy = np.asarray(y[s:s + batch])
        size = x0.shape[0]
        f = np.asarray(net_fn(jnp.asarray(_padded(np.asarray(x0), min(batch, n)))),
                       np.float64)[:size]
        own = f[np.arange(size), yy]
        rest = np.where(np.arange(f.shape[1])[None] == yy[:, None], -np.inf, f)
        margins.append(own - rest.max(1))
    m = np.concatenate(margins)
    if search in ("bracket", "grid"):
        lo, hi = bracket(prop, net_fn, np.asarray(Xn), np.asarray(y), m, search_steps,
                         batch=min(batch, n), grid=None if grid is None else _grid_radii(
                             grid, shift, prop.dtype))
        radius, upper = [lo], [hi]
    for s in range(0, n, batch) if search == "bisection" else ():
        x0 = _padded(np.asarray(Xn[s:s + batch]), min(batch, n))
        yy = _padded(np.asarray(y[s:s + batch]), min(batch, n))
        size = min(batch, n - s)
        lo, hi = bisection(prop, net_fn, jnp.asarray(x0), jnp.asarray(yy),
                           _padded(m[s:s + batch], min(batch, n)), search_steps)
        radius.append(lo[:size])
        upper.append(hi[:size])
    enclosed = bool(prop.enclose and prop.same_records)
    notes = list(net.notes) + prop.notes + [
        f"{method} bounds on the margins over {norm} balls, pre-activation intervals by "
        f"{'interval propagation' if method == 'ibp' else intermediate}, in "
        f"{np.dtype(prop.dtype).name}"
        f"{' with its rounding enclosed' if enclosed else ' (rounding not enclosed)'}; "
        f"radius by a {search} "
        f"search of at most {search_steps} bound evaluations per example (the largest "
        "verified)"]
    radius = _round_down(np.clip(np.concatenate(radius) - shift, 0.0, None), prop.dtype)
    # radius 0 is the point itself: a positive radius certified, or the records' margin there
    # past the acceptance margin (where the centre is X itself)
    at_zero = (radius > 0) | ((m > _slack(prop, m)) & (shift == 0))
    terms = {"upper": np.concatenate(upper), "notes": notes, "intermediate": intermediate,
             "certified_at_zero": at_zero,
             "search_steps": search_steps, "search": search,
             "dtype": np.dtype(prop.dtype).name,
             "rounding_enclosed": enclosed}
    return CertifiedRadii(radius=radius, norm=norm,
                          margins=m, lipschitz=math.nan,
                          lipschitz_tight=None, method=method, failure_probability=0.0,
                          terms=terms)
