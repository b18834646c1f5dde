"""Sharpness of a trained classifier (measures, not bounds): the largest loss or error increase
in a box around the weights, found by projected sign-gradient ascent.

* `sharpness`: Keskar et al. (2017) epsilon-sharpness; the result is a **lower** estimate of
  the maximum it defines.
* `worst_case_sharpness` and `magnitude_aware_sharpness`: Jiang et al. (2020) alpha', the
  largest box (absolute, or relative to the weights) whose worst-case training-error increase
  stays below a target (their measures 50-52 and 58-60); the ascent under-estimates the worst
  case, so alpha' is an over-estimate.

Each returns a `Bound` with ``value=None`` (a measure). The loss is the mean cross-entropy over
``(X, y)``; the error is the 0-1 error.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from genbounds.core._bound import Bound
from genbounds.core._checks import check_key, check_n, check_positive, checked_result
from genbounds.losses._losses import check_classifier, cross_entropy, zero_one
from genbounds.pacbayes._gaussian import kl_log_det_term
from genbounds.pacbayes._montecarlo import check_finite_draws

from ._perturbation import JIANG_REFERENCE, check_flat_args, mean_loss_flat

_KESKAR = (
    "Keskar, Mudigere, Nocedal, Smelyanskiy, Tang. On Large-Batch Training for Deep Learning: "
    "Generalization Gap and Sharp Minima. ICLR 2017, arXiv:1609.04836"
)


# ----------------------------------------------------------------------------------------------
# Keskar et al. epsilon-sharpness.
# ----------------------------------------------------------------------------------------------


@checked_result
def sharpness(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    epsilon: float = 1e-3,
    steps: int = 20,
    step_size: float = 0.25,
    key: jax.Array | None = None,
) -> Bound:
    """Keskar et al. (2017) epsilon-sharpness in the full parameter space (a lower estimate).

    $$\\phi_{w}(\\epsilon) = \\frac{\\max_{z \\in C_\\epsilon} \\hat L(w + z) - \\hat L(w)}
    {1 + \\hat L(w)} \\times 100, \\qquad
    C_\\epsilon = \\{ z : |z_i| \\le \\epsilon (|w_i| + 1) \\}$$

    with $\\hat L$ the mean cross-entropy over ``(X, y)`` and $A = I$ (full space). The inner
    maximum is approximated by `steps` of projected sign-gradient ascent,
    $z \\leftarrow \\Pi_{C_\\epsilon}(z + \\eta\\, \\epsilon(|w|+1) \\odot \\mathrm{sign}\\nabla \\hat L(w+z))$
    (Keskar et al. used 10 iterations of L-BFGS-B); the best loss seen is kept. An approximate
    maximiser gives a **lower** estimate of the sharpness the definition asks for.

    Args:
      params, X, y, apply_fn: as in `hessian_top_eigenvalues`.
      epsilon: box size, > 0 (the paper uses 1e-3 and 5e-4).
      steps: ascent steps >= 1.
      step_size: eta, the fraction of the box moved per step, > 0.
      key: optional PRNG key; with a key the ascent starts from a uniform point of the box,
        without one from z = 0.

    Returns:
      A measure with ``complexity`` = $\\phi$ (in percent) and ``terms``: ``loss``,
      ``max_loss``, ``epsilon``, ``steps``.

    Raises:
      ValueError, TypeError: bad shapes, labels or hyperparameters.

    Examples:
      >>> import jax.numpy as jnp
      >>> params = {"w": jnp.array([[1.0], [-1.0]]), "b": jnp.zeros(1)}
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> X, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1, 0])
      >>> sharpness(params, X=X, y=y, apply_fn=f, epsilon=1e-2).complexity > 0
      True

    References:
      Keskar, Mudigere, Nocedal, Smelyanskiy, Tang, On Large-Batch Training for Deep Learning:
      Generalization Gap and Sharp Minima, ICLR 2017, arXiv:1609.04836.
    """
    if key is not None:
        key = check_key(key)
    X, y, _ = check_classifier(apply_fn, params, X, y)
    epsilon = check_positive(epsilon, "epsilon")
    step_size = check_positive(step_size, "step_size")
    steps = check_n(steps, "steps")
    x0, unravel = ravel_pytree(params)
    box = epsilon * (jnp.abs(x0) + 1.0)
    if key is None:
        z0 = jnp.zeros_like(x0)
    else:
        z0 = jax.random.uniform(check_key(key), x0.shape, x0.dtype, -1.0, 1.0) * box
    base, best, bad = _keskar(apply_fn, unravel, steps, x0, box, z0, step_size, X, y)
    check_finite_draws(bad, steps + 1, "points of the ascent (perturbed weights)", "sharpness")
    base, best = float(base), float(best)
    phi = (best - base) / (1.0 + base) * 100.0
    return Bound(
        name="sharpness",
        value=None,
        complexity=phi,
        terms={"loss": base, "max_loss": best, "epsilon": epsilon, "steps": steps},
        n=int(X.shape[0]),
        estimated=True,
        reference=_KESKAR,
        notes=(
            "full space (A = I); box eps(|w|+1)",
            "projected sign-gradient ascent: a lower estimate of the maximum",
        ),
    )


@partial(jax.jit, static_argnums=(0, 1, 2))
def _keskar(apply_fn, unravel, steps, x0, box, z0, step_size, X, y):
    f = partial(mean_loss_flat, apply_fn, unravel, X=X, y=y)
    vg = jax.value_and_grad(f)

    def body(carry, _):
        z, best, bad = carry
        val, g = vg(x0 + z)
        best = jnp.maximum(best, val)
        bad = bad + jnp.logical_not(jnp.isfinite(val)).astype(jnp.int32)
        z = jnp.clip(z + step_size * box * jnp.sign(g), -box, box)
        return (z, best, bad), None

    base = f(x0)
    (z, best, bad), _ = jax.lax.scan(body, (z0, base, jnp.zeros((), jnp.int32)), None,
                                     length=steps)
    last = f(x0 + z)
    # The non-finite losses among the steps + 1 perturbed points, for the caller to refuse.
    return base, jnp.maximum(best, last), bad + jnp.logical_not(jnp.isfinite(last)).astype(
        jnp.int32)


# ----------------------------------------------------------------------------------------------
# Jiang et al. worst-case sharpness (alpha') and magnitude-aware worst-case sharpness.
# ----------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnums=(0, 1, 2))
def _ascent_worst_error(apply_fn, unravel, steps, x0, box, starts, step_size, X, y):
    """Worst 0-1 training error seen by projected sign-gradient ascent inside |z_i| <= box_i.

    One ascent per row of ``starts`` (directions in [-1, 1]^omega, scaled by the box); the
    ascent climbs the mean cross-entropy (the 0-1 error has no gradient) and the largest 0-1
    error over every iterate of every restart is returned, with the number of iterates whose
    logits were NaN or infinite (their 0-1 error would count them correct).
    """

    def ce(x):
        return cross_entropy(apply_fn(unravel(x), X), y).mean()

    def err(x):
        logits = apply_fn(unravel(x), X)
        return zero_one(logits, y).mean(), jnp.logical_not(
            jnp.all(jnp.isfinite(logits))).astype(jnp.int32)

    grad = jax.grad(ce)

    def one(start):
        def body(carry, _):
            z, worst, bad = carry
            e, b = err(x0 + z)
            worst = jnp.maximum(worst, e)
            z = jnp.clip(z + step_size * box * jnp.sign(grad(x0 + z)), -box, box)
            return (z, worst, bad + b), None

        z0 = start * box
        e0, b0 = err(x0 + z0)
        (z, worst, bad), _ = jax.lax.scan(body, (z0, e0, b0), None, length=steps)
        e, b = err(x0 + z)
        return jnp.maximum(worst, e), bad + b

    worst, bad = jax.lax.map(one, starts)
    return jnp.max(worst), jnp.sum(bad)


def _worst_case_search(apply_fn, params, X, y, *, key, init_params, target_deviation, steps,
                       step_size, restarts, search_depth, scale_max, box_of,
                       caller="worst_case_sharpness"):
    """Bisection for the largest scale whose worst-case (ascent) error increase <= target."""
    X, y, _, depth, scale_max = check_flat_args(
        apply_fn, params, X, y, init_params, target_deviation, 2, search_depth, scale_max)
    restarts = check_n(restarts, "restarts")
    steps = check_n(steps, "steps")
    step_size = check_positive(step_size, "step_size")
    x0, unravel = ravel_pytree(params)
    # Common random numbers: the same start directions (half-way into the box, uniform) at
    # every scale, so the deviation is a deterministic function of the scale.
    starts = 0.5 * jax.random.uniform(check_key(key), (restarts, x0.shape[0]), x0.dtype, -1.0, 1.0)
    base = float(zero_one(apply_fn(unravel(x0), X), y).mean())
    unit = box_of(x0)

    def deviation(s):
        worst, bad = _ascent_worst_error(apply_fn, unravel, steps, x0, unit(s), starts,
                                         jnp.asarray(step_size, x0.dtype), X, y)
        check_finite_draws(bad, restarts * (steps + 2), "points of the ascents (perturbed "
                           f"weights) at scale {s:g}", caller)
        return float(worst) - base

    target = float(target_deviation)
    lo, hi = 0.0, float(scale_max)
    reached = deviation(hi) > target
    if reached:
        for _ in range(depth):
            mid = 0.5 * (lo + hi)
            if deviation(mid) > target:
                hi = mid
            else:
                lo = mid
        scale = 0.5 * (lo + hi)
    else:
        lo = scale = hi
    terms = {"bracket_low": lo, "bracket_high": hi, "deviation": deviation(scale),
             "train_error": base, "reached_target": bool(reached), "steps": steps,
             "restarts": restarts, "step_size": step_size}
    return scale, terms, x0, int(X.shape[0])


def worst_case_sharpness(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    init_params: Any = None,
    target_deviation: float = 0.1,
    steps: int = 10,
    step_size: float = 0.25,
    restarts: int = 1,
    search_depth: int = 15,
    scale_max: float = 2.0,
) -> Bound:
    """Jiang et al. (2020) worst-case sharpness: the largest alpha' whose box keeps the error within target.

    $\\alpha'$ is the largest $\\alpha$ with
    $\\max_{|u_i| \\le \\alpha} \\hat e(w + u) - \\hat e(w) \\le d$ ($\\hat e$ the 0-1 error on
    ``(X, y)``, $d$ = `target_deviation`, 0.1 in the paper), by binary search on
    $[0, \\text{scale\\_max}]$ to depth `search_depth`. The inner maximum is approximated, as in
    the sharpness search of Jiang et al.'s appendix, by `steps` of projected sign-gradient ascent on the training
    cross-entropy, $u \\leftarrow \\Pi(u + \\eta\\,\\alpha\\,\\mathrm{sign}\\nabla\\hat L(w+u))$,
    from `restarts` uniform starts half-way into the box (the same at every $\\alpha$); the
    largest 0-1 error seen is kept. Ascent finds a **lower** estimate of the maximum, so
    $\\alpha'$ is an over-estimate (the net looks flatter than it is).

    Reported ($\\omega$ = number of parameters, all perturbed; $m$ = len(X)):
    $\\mu_{52} = 1/\\alpha'^2$ (``complexity``, "sharpness flatness"),
    $\\mu_{51} = \\|w\\|^2 \\ln(2\\omega)/(4\\alpha'^2) + \\ln(m/\\alpha') + 10$ ("sharpness-orig")
    and with `init_params` $\\mu_{50}$, the same with $\\|w - w_0\\|^2$ ("sharpness-init"), each
    also with Jiang's adjustment $\\sqrt{\\mu/m}$. The $\\ln(2\\omega)$ comes from the maximum of
    $\\omega$ Gaussian coordinates: a box of half-width $\\alpha$ holds $N(0,\\sigma^2)$ with
    $\\sigma \\approx \\alpha/\\sqrt{2\\ln(2\\omega)}$, which turns the PAC-Bayes measures 48/49
    into 50/51.

    Args:
      params, X, y, apply_fn: as in `hessian_top_eigenvalues`.
      key: PRNG key for the ascent's starting points.
      init_params: the initialisation $w_0$ (same tree as `params`), for $\\mu_{50}$.
      target_deviation: d in (0, 1).
      steps: ascent steps per evaluation, >= 1.
      step_size: eta, the fraction of the box moved per step, > 0.
      restarts: ascents per scale (the worst is kept), >= 1.
      search_depth: bisection steps.
      scale_max: upper end of the search interval.

    Returns:
      A measure with ``complexity`` = $1/\\alpha'^2$ and ``terms``: ``alpha_prime``, the
      bracket, the achieved ``deviation``, ``reached_target`` (False: even scale_max stays
      within the target), ``mu_50``/``mu_51``/``mu_52`` and their ``_adjusted`` forms.

    Raises:
      ValueError, TypeError: bad shapes, labels, mismatched `init_params`, bad hyperparameters.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> params = {"w": jnp.array([[1.0], [-1.0]]), "b": jnp.zeros(1)}
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> X, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1, 0])
      >>> m = worst_case_sharpness(params, X=X, y=y, apply_fn=f, key=jax.random.key(0),
      ...                         search_depth=5)
      >>> 0 < m.terms["alpha_prime"] <= 2
      True

    References:
      Jiang, Neyshabur, Mobahi, Krishnan, Bengio, Fantastic Generalization Measures and Where to
      Find Them, ICLR 2020, arXiv:1912.02178, eqs. (50)-(52) and the appendix's sharpness search.
    """
    a, res, x0, m = _worst_case_search(
        apply_fn, params, X, y, key=key, init_params=init_params,
        target_deviation=target_deviation, steps=steps, step_size=step_size, restarts=restarts,
        search_depth=search_depth, scale_max=scale_max,
        box_of=lambda x0: (lambda s: jnp.full_like(x0, s)))
    omega = int(x0.shape[0])
    xw = np.asarray(x0, np.float64)
    tail = math.log(m / a) + 10.0
    lg = math.log(2.0 * omega)
    terms: dict[str, Any] = {"alpha_prime": a, **res}
    terms["mu_51"] = float(np.sum(xw**2)) * lg / (4 * a * a) + tail
    if init_params is not None:
        w0 = np.asarray(ravel_pytree(init_params)[0], np.float64)
        terms["mu_50"] = float(np.sum((xw - w0) ** 2)) * lg / (4 * a * a) + tail
    terms["mu_52"] = 1.0 / (a * a)
    for k in [k for k in ("mu_50", "mu_51", "mu_52") if k in terms]:
        terms[k + "_adjusted"] = math.sqrt(max(terms[k], 0.0) / m)
    return Bound(
        name="worst_case_sharpness", value=None, complexity=1.0 / (a * a), terms=terms, n=m,
        estimated=True, reference=JIANG_REFERENCE + ", eqs. (50)-(52)",
        notes=("box |u_i| <= alpha on all parameters",
               f"target: worst-case 0-1 error increase <= {float(target_deviation):g}",
               "projected sign-gradient ascent on the cross-entropy: a lower estimate of the "
               "worst case, so alpha' is an over-estimate"),
    )


def magnitude_aware_sharpness(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    init_params: Any = None,
    epsilon: float = 1e-3,
    target_deviation: float = 0.1,
    steps: int = 10,
    step_size: float = 0.25,
    restarts: int = 1,
    search_depth: int = 15,
    scale_max: float = 2.0,
) -> Bound:
    """Jiang et al. (2020) magnitude-aware worst-case sharpness: the largest alpha' for a relative box.

    As `worst_case_sharpness` with the box $|u_i| \\le \\alpha|w_i| + \\epsilon$. Reported:
    $\\mu_{60} = 1/\\alpha'^2$ (``complexity``) and

    $$\\mu = \\frac14 \\sum_{i=1}^{\\omega} \\ln \\frac{\\epsilon^2 + (\\alpha'^2 + 4\\ln(2\\omega))
    \\|v\\|^2/\\omega}{\\epsilon^2 + \\alpha'^2 (w_i - w^0_i)^2} + \\ln\\frac{m}{\\alpha'} + 10$$

    with $v = w - w_0$ ($\\mu_{58}$, needs `init_params`) or $v = w$ ($\\mu_{59}$); the
    denominator uses $w - w_0$ in both, as `magnitude_aware_flatness` does for $\\mu_{56}$/
    $\\mu_{57}$ ($w$ when no `init_params`).

    Args:
      params, X, y, apply_fn, key, init_params, target_deviation, steps, step_size, restarts,
      search_depth, scale_max: as in `worst_case_sharpness`.
      epsilon: the additive floor of the box, > 0 (1e-3 in the paper).

    Returns:
      A measure with ``complexity`` = $1/\\alpha'^2$ and ``terms`` as in
      `worst_case_sharpness` (``mu_58``/``mu_59``/``mu_60``).

    Raises:
      ValueError, TypeError: as in `worst_case_sharpness`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> params = {"w": jnp.array([[1.0], [-1.0]]), "b": jnp.zeros(1)}
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> X, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1, 0])
      >>> m = magnitude_aware_sharpness(params, X=X, y=y, apply_fn=f, key=jax.random.key(0),
      ...                              init_params=params, epsilon=1e-2, search_depth=5)
      >>> m.terms["epsilon"], "mu_58" in m.terms  # mu_58 needs init_params
      (0.01, True)

    References:
      Jiang, Neyshabur, Mobahi, Krishnan, Bengio, Fantastic Generalization Measures and Where to
      Find Them, ICLR 2020, arXiv:1912.02178, eqs. (58)-(60).
    """
    eps = check_positive(epsilon, "epsilon")

    def box_of(x0):
        aw = jnp.abs(x0)
        return lambda a: a * aw + eps

    a, res, x0, m = _worst_case_search(
        apply_fn, params, X, y, key=key, init_params=init_params,
        target_deviation=target_deviation, steps=steps, step_size=step_size, restarts=restarts,
        search_depth=search_depth, scale_max=scale_max, box_of=box_of,
        caller="magnitude_aware_sharpness")
    omega = int(x0.shape[0])
    xw = np.asarray(x0, np.float64)
    v_den = xw if init_params is None else xw - np.asarray(ravel_pytree(init_params)[0], np.float64)
    tail = math.log(m / a) + 10.0
    c = a * a + 4.0 * math.log(2.0 * omega)

    def mu(v):
        num = eps**2 + c * float(np.sum(v**2)) / omega
        return 0.5 * kl_log_det_term(eps**2 + a * a * v_den**2, num) + tail

    terms: dict[str, Any] = {"alpha_prime": a, **res, "epsilon": eps}
    terms["mu_59"] = mu(xw)
    if init_params is not None:
        terms["mu_58"] = mu(v_den)
    terms["mu_60"] = 1.0 / (a * a)
    for k in [k for k in ("mu_58", "mu_59", "mu_60") if k in terms]:
        terms[k + "_adjusted"] = math.sqrt(max(terms[k], 0.0) / m)
    return Bound(
        name="magnitude_aware_sharpness", value=None, complexity=1.0 / (a * a), terms=terms,
        n=m, estimated=True, reference=JIANG_REFERENCE + ", eqs. (58)-(60)",
        notes=("box |u_i| <= alpha |w_i| + eps on all parameters",
               f"target: worst-case 0-1 error increase <= {float(target_deviation):g}",
               "projected sign-gradient ascent on the cross-entropy: a lower estimate of the "
               "worst case, so alpha' is an over-estimate"),
    )
