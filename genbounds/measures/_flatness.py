"""Flatness of a trained classifier (measures, not bounds): Jiang et al. (2020) sigma' and alpha'.

`pac_bayes_flatness` and `magnitude_aware_flatness` find the largest perturbation scales whose
expected training-error increase stays below a target (their measures 53/48/49 and 61/56/57),
by a bisection with common random numbers that reads the training set in chunks and stops a
step as soon as its outcome is certain (`_search`).

Each returns a `Bound` with ``value=None`` (a measure) whose `terms` carry the estimator's
uncertainty. The error is the 0-1 error on ``(X, y)``.
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
from genbounds.core._checks import check_key, check_positive, checked_result
from genbounds.linalg._host import on_cpu
from genbounds.losses._losses import zero_one
from genbounds.losses._margins import margins_core
from genbounds.pacbayes._gaussian import kl_log_det_term
from genbounds.pacbayes._montecarlo import check_finite_draws

from ._perturbation import JIANG_REFERENCE, check_flat_args

# Examples per chunk of the perturbed evaluations: the search reads the training set chunk by
# chunk and stops a step as soon as its decision is certain (see `_Evaluator`).
_CHUNK = 1024


@partial(jax.jit, static_argnums=(0, 1, 2))
def _chunk_counts(apply_fn, unravel, batched, x0, std, noise, Xc, yc, wc):
    """Misclassified examples of one chunk under each perturbed net x0 + std * noise_i.

    ``batched``: all `num_samples` nets at once (vmapped: one wide product per layer, the
    faster form on an accelerator), else one after the other (``lax.map``: on CPU the vmapped
    form is about 1.4x slower, XLA's batched products being less efficient there).
    ``wc`` is 1 for real examples, 0 for padding. Returns int32 counts of shape (num_samples,)
    and, per perturbed net, whether any of its logits on a real example was NaN or infinite
    (such a net has no margin: ``NaN <= 0`` is False would count it correct).
    """

    def count(z):
        logits = apply_fn(unravel(x0 + std * z), Xc)
        err = zero_one(logits, yc)
        finite = jnp.all(jnp.isfinite(logits.reshape(logits.shape[0], -1)), axis=1)
        bad = jnp.any(jnp.logical_and(wc > 0, jnp.logical_not(finite)))
        return jnp.sum(jnp.where(wc > 0, err, 0.0)).astype(jnp.int32), bad

    return jax.vmap(count)(noise) if batched else jax.lax.map(count, noise)


# The outcomes of one step of the search.
_ABOVE, _BELOW, _WITHIN = "above", "below", "within"


class _Evaluator:
    r"""Perturbed 0-1 error counts on the training set, in chunks, with exact early decisions.

    Deviation at scale s: $\Delta(s) = \frac1S\sum_i \hat e(w + u_i(s)) - \hat e(w)$, with
    $\hat e$ the error on all m examples; on the total error count $C$ over the m examples and
    S perturbations, "$\Delta(s) > t$" is the integer test $C > (t\,m + E_0) S$ ($E_0$ the
    unperturbed error count). After some chunks the partial count $c$ and the $r$ examples
    still unread give $c \le C \le c + rS$, so a comparison of $C$ with a threshold is decided
    (exactly: the same answer as reading everything) once $c$ exceeds it or $c + rS$ stays
    below it. The examples are read in increasing order of their unperturbed margin, where
    perturbed errors concentrate, so that "above target" steps stop early.
    """

    def __init__(self, apply_fn, unravel, x0, noise, X, y, logits=None, caller="flatness"):
        self.f, self.unravel, self.x0, self.noise = apply_fn, unravel, x0, noise
        self.caller = caller
        self.batched = not on_cpu(x0)
        if logits is None:
            logits = apply_fn(unravel(x0), X)
        m = np.asarray(margins_core(logits, y), np.float64)
        self.n = int(X.shape[0])
        self.S = int(noise.shape[0])
        self.base_count = int(np.sum(m <= 0))  # zero_one's convention: ties are errors
        order = np.argsort(m, kind="stable")
        nchunks = -(-self.n // _CHUNK)
        size = -(-self.n // nchunks)  # equal chunks: one compilation
        pad = nchunks * size - self.n
        idx = np.concatenate([order, np.zeros(pad, order.dtype)])
        w = np.concatenate([np.ones(self.n), np.zeros(pad)]).astype(np.float32)
        Xs, ys = jnp.take(X, jnp.asarray(idx), axis=0), jnp.take(y, jnp.asarray(idx), axis=0)
        self.chunks = [(Xs[i * size:(i + 1) * size], ys[i * size:(i + 1) * size],
                        jnp.asarray(w[i * size:(i + 1) * size])) for i in range(nchunks)]
        self.sizes = [int(w[i * size:(i + 1) * size].sum()) for i in range(nchunks)]
        self.evaluations = 0.0  # full-data evaluations spent (fractions for early stops)

    @property
    def base(self) -> float:
        return self.base_count / self.n

    def threshold(self, deviation: float) -> float:
        """The count threshold T of "Delta > deviation"  <=>  C > T."""
        return (float(deviation) * self.n + self.base_count) * self.S

    def counts(self, std) -> np.ndarray:
        """The per-perturbation error counts at per-parameter std ``std`` (all the data)."""
        return self._read(std, None)[0]

    def step(self, std, low: float, high: float) -> tuple[str, np.ndarray | None]:
        """One search step at per-parameter std ``std``: ``above`` when $C \\ge$ `high`,
        ``below`` when $C \\le$ `low`, else ``within``, with the counts when all data were read.
        """
        return self._read(std, (low, high))

    def _read(self, std, bracket):
        total = np.zeros(self.S, np.int64)
        left = self.n
        for (Xc, yc, wc), k in zip(self.chunks, self.sizes, strict=True):
            counts, bad = _chunk_counts(self.f, self.unravel, self.batched, self.x0, std,
                                        self.noise, Xc, yc, wc)
            check_finite_draws(bad, self.S, "perturbed networks of a search step",
                               self.caller)
            total += np.asarray(counts, np.int64)
            left -= k
            self.evaluations += k / self.n
            if bracket is not None and left > 0:
                c = int(total.sum())
                if c >= bracket[1]:
                    return _ABOVE, None
                if c + left * self.S <= bracket[0]:
                    return _BELOW, None
        if bracket is None:
            return total, None
        c = int(total.sum())
        return (_ABOVE if c >= bracket[1] else _BELOW if c <= bracket[0] else _WITHIN), total


def _search(
    apply_fn, unravel, x0, std_of, noise, X, y, *, target, depth, scale_max, tol=None,
    deviation_tol=None, logits=None, caller="flatness"
) -> dict[str, Any]:
    """Binary search for the largest scale whose mean error increase stays <= target.

    Common random numbers: the same standard normals are used at every scale, so the deviation
    is a deterministic (and in practice monotone) function of the scale. Each step evaluates
    all perturbations and stops reading the data once its decision is certain; the decisions,
    hence the result, are those of evaluating every example at every step.

    A step at scale s has three outcomes, tested in Jiang et al.'s order: *within* when
    ``|Delta(s) - target| < deviation_tol`` (the search returns s), else *above* when
    ``Delta(s) > target`` (s becomes the upper end) or *below* (the lower end). Without
    `deviation_tol` only the last two exist. The search also stops after `depth` steps (the
    scale is then the midpoint of the final bracket), or once ``hi - lo <= tol * hi`` when
    `tol` is given.
    """
    ev = _Evaluator(apply_fn, unravel, x0, noise, X, y, logits, caller)
    t = ev.threshold(target)
    if deviation_tol is None:
        # Above <=> C > t <=> C >= floor(t) + 1 (C an integer); below <=> C <= t.
        low, high = t, math.floor(t) + 1.0
    else:
        # Within <=> t - tol*m*S < C < t + tol*m*S; above (outside) <=> C >= the upper end.
        low, high = ev.threshold(target - deviation_tol), ev.threshold(target + deviation_tol)

    def step(s):
        return ev.step(std_of(s), low, high)

    lo, hi = 0.0, float(scale_max)
    outcome, counts = step(hi)
    reached = outcome != _BELOW
    within = outcome == _WITHIN
    scale, steps = hi, 0
    if outcome == _ABOVE:
        for _ in range(depth):
            if tol is not None and hi - lo <= tol * hi:
                break
            mid = 0.5 * (lo + hi)
            steps += 1
            outcome, counts = step(mid)
            if outcome == _WITHIN:
                scale, within = mid, True
                break
            if outcome == _ABOVE:
                hi = mid
            else:
                lo = mid
        if not within:
            scale, counts = 0.5 * (lo + hi), None
    elif outcome == _BELOW:
        lo, counts = hi, None
    if counts is None:
        counts = ev.counts(std_of(scale))
    errs = counts / ev.n
    return {
        "scale": scale,
        "bracket_low": lo,
        "bracket_high": hi,
        "deviation": float(errs.mean() - ev.base),
        "deviation_stderr": float(errs.std(ddof=1) / math.sqrt(len(errs))),
        "train_error": ev.base,
        "reached_target": bool(reached),
        "within_tolerance": bool(within),
        "search_steps": steps,
        "data_passes": ev.evaluations,
    }


def _jiang_search(apply_fn, params, X, y, *, key, init_params, target_deviation, num_samples,
                  search_depth, scale_max, std_of, search_tol=None, deviation_tol=None,
                  logits=None, caller="flatness"):
    """The shared part of Jiang et al.'s sigma' and alpha' searches.

    Checks the arguments, draws the common random perturbation directions once, and bisects on
    the scale with per-parameter std ``std_of(x0)(scale)``. Returns (scale, search terms, x0, m).
    """
    X, y, num_samples, depth, scale_max = check_flat_args(
        apply_fn, params, X, y, init_params, target_deviation, num_samples, search_depth,
        scale_max)
    if search_tol is not None:
        search_tol = check_positive(search_tol, "search_tol")
    if deviation_tol is not None:
        deviation_tol = check_positive(deviation_tol, "deviation_tol")
        if deviation_tol >= float(target_deviation):
            raise ValueError(f"deviation_tol must lie in (0, target_deviation = "
                             f"{float(target_deviation):g}), got {deviation_tol!r}")
    x0, unravel = ravel_pytree(params)
    noise = jax.random.normal(check_key(key), (num_samples, x0.shape[0]), x0.dtype)
    res = _search(apply_fn, unravel, x0, std_of(x0), noise, X, y,
                  target=float(target_deviation), depth=depth, scale_max=scale_max,
                  tol=search_tol, deviation_tol=deviation_tol, logits=logits, caller=caller)
    res["deviation_tol"] = deviation_tol
    return res.pop("scale"), res, x0, int(X.shape[0])


@checked_result
def pac_bayes_flatness(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    init_params: Any = None,
    target_deviation: float = 0.1,
    num_samples: int = 10,
    search_depth: int = 15,
    scale_max: float = 2.0,
    deviation_tol: float | None = 0.01,
    search_tol: float | None = None,
) -> Bound:
    """Jiang et al. (2020) PAC-Bayes flatness: the largest sigma' keeping the error within target.

    $\\sigma'$ is the largest $\\sigma$ with
    $E_{u \\sim N(0, \\sigma^2 I)}[\\hat e(w + u)] - \\hat e(w) \\le d$ ($\\hat e$ the 0-1 error on
    ``(X, y)``, $d$ = `target_deviation`, 0.1 in the paper), found by binary search on
    $[0, \\text{scale\\_max}]$ (at most `search_depth` steps), the expectation replaced by the mean over
    `num_samples` perturbations. The perturbation's standard deviation is $\\sigma$ (variance
    $\\sigma^2$). The same normal draws are used at every $\\sigma$ (common random numbers).

    The search is Jiang et al.'s: each step takes the midpoint $\\sigma$ of the bracket and
    estimates the deviation $\\hat\\Delta(\\sigma)$; it *returns* $\\sigma$ as soon as
    $|\\hat\\Delta(\\sigma) - d| <$ `deviation_tol` (0.01 in the code of Dziugaite et al. 2020,
    which says it adapts Jiang et al.'s code; the rule is taken from there, not from a listing
    in the paper), else halves the bracket (the upper end moves down when
    $\\hat\\Delta(\\sigma) > d$). After `search_depth` steps without that, $\\sigma'$ is the
    midpoint of the final bracket; ``deviation_tol=None`` always runs the full depth (a plain
    bisection for $\\hat\\Delta \\le d$); `search_tol` also stops it once the bracket is that tight.

    Each step evaluates all `num_samples` perturbed nets and reads the training set in chunks,
    in increasing order of the unperturbed margin, stopping as soon as the step's outcome is
    certain from the integer error counts so far: the same outcome, hence the same result, as
    reading all of it.

    Reported (Jiang's equation numbers; $\\omega$ = number of parameters, all perturbed):
    $\\mu_{53} = 1/\\sigma'^2$ (``complexity``), and with `init_params`
    $\\mu_{48} = \\|w - w_0\\|^2/(4\\sigma'^2) + \\ln(m/\\sigma') + 10$; always
    $\\mu_{49} = \\|w\\|^2/(4\\sigma'^2) + \\ln(m/\\sigma') + 10$, plus Jiang's final adjustment
    $\\sqrt{\\mu/m}$ of each.

    Args:
      params, X, y, apply_fn: as in `hessian_top_eigenvalues`; m = len(X).
      key: PRNG key for the perturbations.
      init_params: the initialisation $w_0$ (same tree as `params`), for $\\mu_{48}$.
      target_deviation: d in (0, 1).
      num_samples: perturbations per scale, >= 2.
      search_depth: bisection steps.
      scale_max: upper end of the search interval (2.0 in Jiang's code).
      deviation_tol: in (0, target_deviation): return the first midpoint whose deviation is
        within this of the target (None: the full `search_depth`).
      search_tol: optional relative tolerance > 0: the search also stops once the bracket
        satisfies ``high - low <= search_tol * high`` (default None).

    Returns:
      A measure with ``complexity`` = $1/\\sigma'^2$ and ``terms``: ``sigma_prime``, the search
      bracket, ``within_tolerance`` (True when the search stopped on `deviation_tol`),
      ``search_steps`` (bisection steps run), ``data_passes`` (training-set passes
      per perturbation spent, counting early-stopped steps by the fraction read), the achieved
      ``deviation`` at $\\sigma'$ and its Monte-Carlo ``deviation_stderr``,
      ``reached_target`` (False when even scale_max stays within the target: sigma' is then at
      least scale_max), ``mu_48``/``mu_49`` and their adjusted forms.

    Raises:
      ValueError, TypeError: bad shapes, labels, mismatched `init_params`, bad hyperparameters;
        a perturbed network whose logits are NaN or infinite (it would count as correct).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> params = {"w": jnp.array([[1.0], [-1.0]]), "b": jnp.zeros(1)}
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> X, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1, 0])
      >>> m = pac_bayes_flatness(params, X=X, y=y, apply_fn=f, key=jax.random.key(0),
      ...                       search_depth=5)
      >>> m.terms["sigma_prime"] > 0
      True

    References:
      Jiang, Neyshabur, Mobahi, Krishnan, Bengio, Fantastic Generalization Measures and Where to
      Find Them, ICLR 2020, arXiv:1912.02178 (measures 48, 49, 53); the tolerance rule as in
      Dziugaite, Drouin, Neal, Rajkumar, Caballero, Wang, Mitliagkas, Roy, In Search of Robust
      Measures of Generalization, NeurIPS 2020, arXiv:2010.11924 (their code).
    """
    return _sigma_prime(
        params, X=X, y=y, apply_fn=apply_fn, key=key, init_params=init_params,
        target_deviation=target_deviation, num_samples=num_samples, search_depth=search_depth,
        scale_max=scale_max, deviation_tol=deviation_tol, search_tol=search_tol
    )


@checked_result
def _sigma_prime(params, *, X, y, apply_fn, key, init_params=None, target_deviation=0.1,
                 num_samples=10, search_depth=15, scale_max=2.0, deviation_tol=0.01,
                 search_tol=None, logits=None) -> Bound:
    """`pac_bayes_flatness` (the same defaults), with the unperturbed ``logits`` when the
    caller computed them (`report`)."""
    s, res, x0, m = _jiang_search(
        apply_fn, params, X, y, key=key, init_params=init_params,
        target_deviation=target_deviation, num_samples=num_samples, search_depth=search_depth,
        scale_max=scale_max, std_of=lambda x0: (lambda s: jnp.asarray(s, x0.dtype)),
        search_tol=search_tol, deviation_tol=deviation_tol, logits=logits,
        caller="pac_bayes_flatness")
    terms: dict[str, Any] = {"sigma_prime": s, **res}
    tail = math.log(m / s) + 10.0
    xw = np.asarray(x0, np.float64)
    terms["mu_49"] = float(np.sum(xw**2)) / (4 * s * s) + tail
    terms["mu_49_adjusted"] = math.sqrt(max(terms["mu_49"], 0.0) / m)
    if init_params is not None:
        w0 = np.asarray(ravel_pytree(init_params)[0], np.float64)
        d2 = float(np.sum((xw - w0) ** 2))
        terms["mu_48"] = d2 / (4 * s * s) + tail
        terms["mu_48_adjusted"] = math.sqrt(max(terms["mu_48"], 0.0) / m)
    terms["mu_53_adjusted"] = math.sqrt(1.0 / (s * s) / m)
    return _flatness_measure("pac_bayes_flatness", s, terms, m, target_deviation,
                             "perturbation u ~ N(0, sigma^2 I) on all parameters (std sigma)")


@checked_result
def magnitude_aware_flatness(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    init_params: Any = None,
    epsilon: float = 1e-3,
    target_deviation: float = 0.1,
    num_samples: int = 10,
    search_depth: int = 15,
    scale_max: float = 2.0,
    deviation_tol: float | None = 0.01,
    search_tol: float | None = None,
) -> Bound:
    """Jiang et al. (2020) magnitude-aware flatness: the largest alpha' keeping the error within target.

    As `pac_bayes_flatness`, with the perturbation $u_i \\sim N(0, \\alpha^2 w_i^2 + \\epsilon^2)$:
    **variance** $\\alpha^2 w_i^2 + \\epsilon^2$, i.e. standard deviation
    $\\sqrt{\\alpha^2 w_i^2 + \\epsilon^2}$ (a peer implementation passes the variance as the
    standard deviation). Reported: $\\mu_{61} = 1/\\alpha'^2$ (``complexity``) and

    $$\\mu = \\frac14 \\sum_{i=1}^{\\omega} \\ln \\frac{\\epsilon^2 + (\\alpha'^2 + 1)\\|v\\|^2/\\omega}
    {\\epsilon^2 + \\alpha'^2 (w_i - w^0_i)^2} + \\ln\\frac{m}{\\alpha'} + 10$$

    with $v = w - w_0$ ($\\mu_{56}$, needs `init_params`) or $v = w$ ($\\mu_{57}$), and the
    denominator as in Jiang's code ($w - w_0$ in both; $w$ when no `init_params`).

    Args:
      params, X, y, apply_fn, key, init_params, target_deviation, num_samples, search_depth,
      scale_max, deviation_tol, search_tol: as in `pac_bayes_flatness`.
      epsilon: the additive floor of the standard deviation, > 0 (1e-3 in the paper).

    Returns:
      A measure with ``complexity`` = $1/\\alpha'^2$ and ``terms`` as in `pac_bayes_flatness`
      (``alpha_prime`` in place of ``sigma_prime``; ``mu_56``/``mu_57``).

    Raises:
      ValueError, TypeError: as in `pac_bayes_flatness`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> params = {"w": jnp.array([[1.0], [-1.0]]), "b": jnp.zeros(1)}
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> X, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1, 0])
      >>> m = magnitude_aware_flatness(params, X=X, y=y, apply_fn=f, key=jax.random.key(0),
      ...                             init_params=params, search_depth=5)
      >>> sorted(k for k in m.terms if k.startswith("mu_5"))  # mu_56 needs init_params
      ['mu_56', 'mu_56_adjusted', 'mu_57', 'mu_57_adjusted']

    References:
      Jiang, Neyshabur, Mobahi, Krishnan, Bengio, Fantastic Generalization Measures and Where to
      Find Them, ICLR 2020, arXiv:1912.02178 (measures 56, 57, 61).
    """
    eps = check_positive(epsilon, "epsilon")

    def std_of(x0):
        w2 = x0**2
        return lambda a: jnp.sqrt(a * a * w2 + eps * eps)  # std = sqrt(alpha^2 w^2 + eps^2)

    a, res, x0, m = _jiang_search(
        apply_fn, params, X, y, key=key, init_params=init_params,
        target_deviation=target_deviation, num_samples=num_samples, search_depth=search_depth,
        scale_max=scale_max, std_of=std_of, search_tol=search_tol,
        deviation_tol=deviation_tol, caller="magnitude_aware_flatness")
    omega = int(x0.shape[0])
    xw = np.asarray(x0, np.float64)
    v_den = xw if init_params is None else xw - np.asarray(ravel_pytree(init_params)[0], np.float64)
    tail = math.log(m / a) + 10.0

    def mu(v):
        num = eps**2 + (a * a + 1.0) * float(np.sum(v**2)) / omega
        return 0.5 * kl_log_det_term(eps**2 + a * a * v_den**2, num) + tail

    terms: dict[str, Any] = {"alpha_prime": a, **res, "epsilon": eps}
    terms["mu_57"] = mu(xw)
    terms["mu_57_adjusted"] = math.sqrt(max(terms["mu_57"], 0.0) / m)
    if init_params is not None:
        terms["mu_56"] = mu(v_den)
        terms["mu_56_adjusted"] = math.sqrt(max(terms["mu_56"], 0.0) / m)
    terms["mu_61_adjusted"] = math.sqrt(1.0 / (a * a) / m)
    return _flatness_measure(
        "magnitude_aware_flatness", a, terms, m, target_deviation,
        "perturbation u_i ~ N(0, alpha^2 w_i^2 + eps^2): variance, std = its square root")


def _flatness_measure(name, scale, terms, m, target_deviation, perturbation) -> Bound:
    """The measure $1/\\text{scale}^2$ of a finished search, with its terms and notes."""
    return Bound(
        name=name,
        value=None,
        complexity=1.0 / (scale * scale),
        terms=terms,
        n=m,
        estimated=True,
        reference=JIANG_REFERENCE,
        notes=(
            perturbation,
            f"target: mean 0-1 error increase <= {float(target_deviation):g}",
            "common random numbers across the binary search",
        ),
    )
