"""Flatness and sharpness measures of a trained classifier (measures, not bounds).

* `sharpness`: Keskar et al. (2017) epsilon-sharpness, maximised by projected gradient ascent;
  the result is a **lower** estimate of the maximum it defines.
* `pac_bayes_flatness` and `magnitude_aware_flatness`: Jiang et al. (2020) sigma' and alpha',
  the largest perturbation scales whose expected training-error increase stays below a target
  (their measures 53/48/49 and 61/56/57).
* `hessian_top_eigenvalues` (Lanczos) and `hessian_trace` (Hutchinson) of the training loss.

Each returns a `Bound` with ``value=None`` (a measure) whose `terms` carry the estimator's
uncertainty. The loss is the mean cross-entropy over ``(X, y)`` (logistic for a net with one
output unit and labels in {0, 1}, softmax otherwise); the error is the 0-1 error.
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
from genbounds.core._checks import (
    check_finite_tree,
    check_key,
    check_n,
    check_positive,
    checked_result,
)
from genbounds.linalg._hessian import (
    check_classifier,
    check_same_tree,
    cross_entropy,
    flat_hvp,
    hutchinson_trace,
    lanczos_top_eigenvalues,
    zero_one,
)
from genbounds.linalg._spectral_norm import on_cpu
from genbounds.losses._margins import margins_core
from genbounds.pacbayes._gaussian import kl_log_det_term

_KESKAR = (
    "Keskar, Mudigere, Nocedal, Smelyanskiy, Tang. On Large-Batch Training for Deep Learning: "
    "Generalization Gap and Sharp Minima. ICLR 2017, arXiv:1609.04836"
)
_JIANG = (
    "Jiang, Neyshabur, Mobahi, Krishnan, Bengio. Fantastic Generalization Measures and Where to "
    "Find Them. ICLR 2020, arXiv:1912.02178"
)
_LANCZOS = (
    "Lanczos (1950); Ghorbani, Krishnan, Xiao. An Investigation into Neural Net Optimization via "
    "Hessian Eigenvalue Density. ICML 2019, arXiv:1901.10159"
)
_HUTCHINSON = (
    "Hutchinson. A stochastic estimator of the trace of the influence matrix for Laplacian "
    "smoothing splines. 1990; Yao, Gholami, Keutzer, Mahoney. PyHessian. 2020, arXiv:1912.07145"
)


def _key(key: Any) -> jax.Array:
    return check_key(key)


@partial(jax.jit, static_argnums=(0, 1))
def _mean_loss_flat(apply_fn, unravel, x, X, y):
    return cross_entropy(apply_fn(unravel(x), X), y).mean()


# ----------------------------------------------------------------------------------------------
# Hessian spectrum and trace.
# ----------------------------------------------------------------------------------------------


@checked_result
def hessian_top_eigenvalues(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    k: int = 1,
    num_iters: int = 30,
) -> Bound:
    """Largest eigenvalues of the Hessian of the training loss, by Lanczos on Hessian-vector products.

    The matrix is $\\nabla^2_w \\hat L(w)$ with $\\hat L$ the mean cross-entropy over ``(X, y)``;
    its products with vectors are ``jax.jvp`` of ``jax.grad`` (never forming the matrix). After
    $m$ = `num_iters` Lanczos steps with full re-orthogonalisation the Ritz values
    $\\theta_1 \\ge \\dots$ satisfy $\\theta_1 \\le \\lambda_{\\max}$: a **lower** estimate. Each
    Ritz value lies within its residual $r_i = |\\beta_m s_{m,i}|$ of some eigenvalue.

    Args:
      params: the trained parameters (pytree).
      X: inputs, (n, ...).
      y: integer labels (n,), in {0, 1} for one output unit, in [0, K) otherwise.
      apply_fn: ``apply_fn(params, X) -> logits`` of shape (n,), (n, 1) or (n, K).
      key: PRNG key for the Lanczos start vector.
      k: number of eigenvalues, 1 <= k <= num_iters.
      num_iters: Lanczos steps m, <= the number of parameters.

    Returns:
      A measure (``value=None``) with ``complexity`` = the top Ritz value and ``terms``:
      ``eigenvalues`` (top k, descending), ``residuals``, ``smallest_ritz``, ``loss``.

    Raises:
      ValueError, TypeError: bad shapes, labels or hyperparameters.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> params = {"w": jnp.array([[1.0], [-1.0]]), "b": jnp.zeros(1)}
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> X, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1, 0])
      >>> m = hessian_top_eigenvalues(params, X=X, y=y, apply_fn=f, key=jax.random.key(0),
      ...                             num_iters=3)
      >>> m.is_measure
      True

    References:
      Lanczos (1950); Ghorbani, Krishnan & Xiao, An Investigation into Neural Net Optimization
      via Hessian Eigenvalue Density, ICML 2019, arXiv:1901.10159.
    """
    X, y, _ = check_classifier(apply_fn, params, X, y)
    x0, unravel = ravel_pytree(params)
    dim = int(x0.shape[0])
    k = check_n(k, "k")
    num_iters = check_n(num_iters, "num_iters")
    if num_iters > dim:
        raise ValueError(f"num_iters must be <= the number of parameters {dim}, got {num_iters}")
    if k > num_iters:
        raise ValueError(f"k must be <= num_iters = {num_iters}, got {k}")
    out = _top_eig(apply_fn, unravel, k, num_iters, x0, X, y, _key(key))
    eig = np.asarray(out["eigenvalues"])
    return Bound(
        name="hessian_top_eigenvalue",
        value=None,
        complexity=float(eig[0]),
        terms={
            "eigenvalues": eig,
            "residuals": np.asarray(out["residuals"]),
            "smallest_ritz": float(out["smallest"]),
            "loss": float(out["loss"]),
            "num_iters": num_iters,
        },
        n=int(X.shape[0]),
        estimated=True,
        reference=_LANCZOS,
        notes=(
            "Lanczos Ritz values approach the top eigenvalue from below (lower estimate)",
            "residuals bound the distance to some eigenvalue, not necessarily the top one",
            "loss: mean cross-entropy over (X, y)",
        ),
    )


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _top_eig(apply_fn, unravel, k, num_iters, x0, X, y, key):
    f = partial(_mean_loss_flat, apply_fn, unravel, X=X, y=y)
    out = lanczos_top_eigenvalues(
        flat_hvp(f, x0), x0.shape[0], x0.dtype, k=k, num_iters=num_iters, key=key
    )
    out["loss"] = f(x0)
    return out


@checked_result
def hessian_trace(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    num_samples: int = 64,
) -> Bound:
    """Trace of the Hessian of the training loss, by Hutchinson's estimator.

    $\\mathrm{tr}\\,\\nabla^2 \\hat L(w) = E_z[z^\\top \\nabla^2 \\hat L(w) z]$ for Rademacher $z$;
    the estimate averages `num_samples` quadratic forms (each one Hessian-vector product) and
    reports the standard error of that mean. Unbiased; the error is statistical, not one-sided.

    Args:
      params, X, y, apply_fn: as in `hessian_top_eigenvalues`.
      key: PRNG key for the probes.
      num_samples: number of probes N >= 2.

    Returns:
      A measure with ``complexity`` = the trace estimate and ``terms``: ``trace``, ``stderr``,
      ``num_samples``, ``loss``.

    Raises:
      ValueError, TypeError: bad shapes, labels or hyperparameters.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> params = {"w": jnp.array([[1.0], [-1.0]]), "b": jnp.zeros(1)}
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> X, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1, 0])
      >>> m = hessian_trace(params, X=X, y=y, apply_fn=f, key=jax.random.key(0), num_samples=8)
      >>> m.terms["stderr"] >= 0
      True

    References:
      Hutchinson, A stochastic estimator of the trace of the influence matrix for Laplacian
      smoothing splines, 1990; Yao et al., PyHessian, 2020, arXiv:1912.07145.
    """
    X, y, _ = check_classifier(apply_fn, params, X, y)
    x0, unravel = ravel_pytree(params)
    num_samples = check_n(num_samples, "num_samples")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 for a standard error, got {num_samples}")
    tr, se, loss = _trace(apply_fn, unravel, num_samples, x0, X, y, _key(key))
    return Bound(
        name="hessian_trace",
        value=None,
        complexity=float(tr),
        terms={
            "trace": float(tr),
            "stderr": float(se),
            "num_samples": num_samples,
            "loss": float(loss),
        },
        n=int(X.shape[0]),
        estimated=True,
        reference=_HUTCHINSON,
        notes=("Hutchinson estimator with Rademacher probes; stderr = sd / sqrt(N)",),
    )


@partial(jax.jit, static_argnums=(0, 1, 2))
def _trace(apply_fn, unravel, num_samples, x0, X, y, key):
    f = partial(_mean_loss_flat, apply_fn, unravel, X=X, y=y)
    tr, se = hutchinson_trace(
        flat_hvp(f, x0), x0.shape[0], x0.dtype, num_samples=num_samples, key=key
    )
    return tr, se, f(x0)


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
    X, y, _ = check_classifier(apply_fn, params, X, y)
    epsilon = check_positive(epsilon, "epsilon")
    step_size = check_positive(step_size, "step_size")
    steps = check_n(steps, "steps")
    x0, unravel = ravel_pytree(params)
    box = epsilon * (jnp.abs(x0) + 1.0)
    if key is None:
        z0 = jnp.zeros_like(x0)
    else:
        z0 = jax.random.uniform(key, x0.shape, x0.dtype, -1.0, 1.0) * box
    base, best = _keskar(apply_fn, unravel, steps, x0, box, z0, step_size, X, y)
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
    f = partial(_mean_loss_flat, apply_fn, unravel, X=X, y=y)
    vg = jax.value_and_grad(f)

    def body(carry, _):
        z, best = carry
        val, g = vg(x0 + z)
        best = jnp.maximum(best, val)
        z = jnp.clip(z + step_size * box * jnp.sign(g), -box, box)
        return (z, best), None

    base = f(x0)
    (z, best), _ = jax.lax.scan(body, (z0, base), None, length=steps)
    return base, jnp.maximum(best, f(x0 + z))


# ----------------------------------------------------------------------------------------------
# Jiang et al. PAC-Bayes flatness (sigma') and magnitude-aware flatness (alpha').
# ----------------------------------------------------------------------------------------------


# Examples per chunk of the perturbed evaluations: the search reads the training set chunk by
# chunk and stops a step as soon as its decision is certain (see `_Evaluator`).
_CHUNK = 1024


@partial(jax.jit, static_argnums=(0, 1, 2))
def _chunk_counts(apply_fn, unravel, batched, x0, std, noise, Xc, yc, wc):
    """Misclassified examples of one chunk under each perturbed net x0 + std * noise_i.

    ``batched``: all `num_samples` nets at once (vmapped: one wide product per layer, the
    faster form on an accelerator), else one after the other (``lax.map``: on CPU the vmapped
    form is about 1.4x slower, XLA's batched products being less efficient there).
    ``wc`` is 1 for real examples, 0 for padding. Returns int32 counts of shape (num_samples,).
    """

    def count(z):
        err = zero_one(apply_fn(unravel(x0 + std * z), Xc), yc)
        return jnp.sum(jnp.where(wc > 0, err, 0.0)).astype(jnp.int32)

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

    def __init__(self, apply_fn, unravel, x0, noise, X, y, logits=None):
        self.f, self.unravel, self.x0, self.noise = apply_fn, unravel, x0, noise
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
            total += np.asarray(_chunk_counts(self.f, self.unravel, self.batched, self.x0, std,
                                              self.noise, Xc, yc, wc), np.int64)
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
    deviation_tol=None, logits=None
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
    ev = _Evaluator(apply_fn, unravel, x0, noise, X, y, logits)
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
                  logits=None):
    """The shared part of Jiang et al.'s sigma' and alpha' searches.

    Checks the arguments, draws the common random perturbation directions once, and bisects on
    the scale with per-parameter std ``std_of(x0)(scale)``. Returns (scale, search terms, x0, m).
    """
    X, y, num_samples, depth, scale_max = _check_flat_args(
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
    noise = jax.random.normal(_key(key), (num_samples, x0.shape[0]), x0.dtype)
    res = _search(apply_fn, unravel, x0, std_of(x0), noise, X, y,
                  target=float(target_deviation), depth=depth, scale_max=scale_max,
                  tol=search_tol, deviation_tol=deviation_tol, logits=logits)
    res["deviation_tol"] = deviation_tol
    return res.pop("scale"), res, x0, int(X.shape[0])


def _check_flat_args(apply_fn, params, X, y, init_params, target, num_samples, depth, scale_max):
    X, y, _ = check_classifier(apply_fn, params, X, y)
    if init_params is not None:
        check_same_tree(params, init_params, "params", "init_params")
        check_finite_tree(init_params, "init_params")
    if not 0.0 < float(target) < 1.0:
        raise ValueError(f"target_deviation must lie in (0, 1), got {target!r}")
    num_samples = check_n(num_samples, "num_samples")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    depth = check_n(depth, "search_depth")
    scale_max = check_positive(scale_max, "scale_max")
    return X, y, num_samples, depth, scale_max


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
      ValueError, TypeError: bad shapes, labels, mismatched `init_params`, bad hyperparameters.

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
        search_tol=search_tol, deviation_tol=deviation_tol, logits=logits)
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
    return Bound(
        name="pac_bayes_flatness",
        value=None,
        complexity=1.0 / (s * s),
        terms=terms,
        n=m,
        estimated=True,
        reference=_JIANG,
        notes=(
            "perturbation u ~ N(0, sigma^2 I) on all parameters (std sigma)",
            f"target: mean 0-1 error increase <= {float(target_deviation):g}",
            "common random numbers across the binary search",
        ),
    )


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
      ...                             search_depth=5)
      >>> m.terms["alpha_prime"] > 0
      True

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
        deviation_tol=deviation_tol)
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
    return Bound(
        name="magnitude_aware_flatness",
        value=None,
        complexity=1.0 / (a * a),
        terms=terms,
        n=m,
        estimated=True,
        reference=_JIANG,
        notes=(
            "perturbation u_i ~ N(0, alpha^2 w_i^2 + eps^2): variance, std = its square root",
            f"target: mean 0-1 error increase <= {float(target_deviation):g}",
            "common random numbers across the binary search",
        ),
    )


# ----------------------------------------------------------------------------------------------
# Jiang et al. worst-case sharpness (alpha') and magnitude-aware worst-case sharpness.
# ----------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnums=(0, 1, 2))
def _ascent_worst_error(apply_fn, unravel, steps, x0, box, starts, step_size, X, y):
    """Worst 0-1 training error seen by projected sign-gradient ascent inside |z_i| <= box_i.

    One ascent per row of ``starts`` (directions in [-1, 1]^omega, scaled by the box); the
    ascent climbs the mean cross-entropy (the 0-1 error has no gradient) and the largest 0-1
    error over every iterate of every restart is returned.
    """

    def ce(x):
        return cross_entropy(apply_fn(unravel(x), X), y).mean()

    def err(x):
        return zero_one(apply_fn(unravel(x), X), y).mean()

    grad = jax.grad(ce)

    def one(start):
        def body(carry, _):
            z, worst = carry
            worst = jnp.maximum(worst, err(x0 + z))
            z = jnp.clip(z + step_size * box * jnp.sign(grad(x0 + z)), -box, box)
            return (z, worst), None

        z0 = start * box
        (z, worst), _ = jax.lax.scan(body, (z0, err(x0 + z0)), None, length=steps)
        return jnp.maximum(worst, err(x0 + z))

    return jnp.max(jax.lax.map(one, starts))


def _worst_case_search(apply_fn, params, X, y, *, key, init_params, target_deviation, steps,
                       step_size, restarts, search_depth, scale_max, box_of):
    """Bisection for the largest scale whose worst-case (ascent) error increase <= target."""
    X, y, _, depth, scale_max = _check_flat_args(
        apply_fn, params, X, y, init_params, target_deviation, 2, search_depth, scale_max)
    restarts = check_n(restarts, "restarts")
    steps = check_n(steps, "steps")
    step_size = check_positive(step_size, "step_size")
    x0, unravel = ravel_pytree(params)
    # Common random numbers: the same start directions (half-way into the box, uniform) at
    # every scale, so the deviation is a deterministic function of the scale.
    starts = 0.5 * jax.random.uniform(_key(key), (restarts, x0.shape[0]), x0.dtype, -1.0, 1.0)
    base = float(zero_one(apply_fn(unravel(x0), X), y).mean())
    unit = box_of(x0)

    def deviation(s):
        worst = _ascent_worst_error(apply_fn, unravel, steps, x0, unit(s), starts,
                                    jnp.asarray(step_size, x0.dtype), X, y)
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
        estimated=True, reference=_JIANG + ", eqs. (50)-(52)",
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
      ...                              search_depth=5)
      >>> m.terms["alpha_prime"] > 0
      True

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
        search_depth=search_depth, scale_max=scale_max, box_of=box_of)
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
        n=m, estimated=True, reference=_JIANG + ", eqs. (58)-(60)",
        notes=("box |u_i| <= alpha |w_i| + eps on all parameters",
               f"target: worst-case 0-1 error increase <= {float(target_deviation):g}",
               "projected sign-gradient ascent on the cross-entropy: a lower estimate of the "
               "worst case, so alpha' is an over-estimate"),
    )
