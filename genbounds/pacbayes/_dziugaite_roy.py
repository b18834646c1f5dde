"""Dziugaite & Roy (2017): a non-vacuous PAC-Bayes bound by optimising a Gaussian posterior.

The pieces (Dziugaite & Roy 2017, arXiv:1703.11008, Section 3; verified against the authors' code gkdziugaite/pacbayes-opt):

* PAC-Bayes-kl (Langford-Seeger / Maurer, with m - 1): with probability >= 1 - delta over the
  sample, for every posterior Q, $kl(\\hat e_S(Q) \\| e_D(Q)) \\le (KL(Q\\|P) + \\ln(m/\\delta))/(m-1)$.
* The prior $P_j = N(w_0, \\lambda_j I)$, $\\lambda_j = c\\, e^{-j/b}$, $j = 1, 2, \\dots$, centred at the
  (data-independent) initialisation, with $\\delta_j = 6\\delta/(\\pi^2 j^2)$; the union bound gives
  $B_{RE}(Q, j) = (KL(Q\\|P_j) + 2\\ln j + \\ln(\\pi^2 m/(6\\delta)))/(m-1)$ for all j at once.
* The stochastic training error $\\hat e_S(Q)$ is bounded from N sampled networks by the
  sample-convergence bound (Langford & Caruana 2002) at confidence $1-\\delta'$.

Total confidence $1 - \\delta - \\delta'$. The Gaussian and its KL are those of `_gaussian.py`, the
Monte-Carlo error that of `_montecarlo.py`, and the optimisation runs in the posterior-training
loop of `_posterior.py` with this module's surrogate objective.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    check_delta,
    check_finite_tree,
    check_key,
    check_n,
    check_positive,
)
from genbounds.losses._losses import check_classifier, check_same_tree, cross_entropy, zero_one

from ._diverged import check_progress, check_trained
from ._gaussian import DiagonalGaussian, Unravel, check_posterior, flat_kl, flatten, isotropic_kl
from ._kl import kl_inverse64
from ._montecarlo import check_error, mc_error, sample_convergence_bound
from ._options import (
    CERTIFICATE,
    DZIUGAITE_ROY_TRAINING,
    Certificate,
    DziugaiteRoyTraining,
    bundle_keywords,
    check_bundle,
)
from ._posterior import PosteriorLoop, init_state, run_posterior_loop
from ._risk_certificate import MAJORITY_VOTE_NOTE, majority_vote_terms
from ._tandem import tandem_from_rhs, tandem_upper
from ._trainable import trainable

_REFERENCE = (
    "Dziugaite, Roy. Computing Nonvacuous Generalization Bounds for Deep (Stochastic) Neural "
    "Networks with Many More Parameters than Training Data. UAI 2017, arXiv:1703.11008; "
    "Langford, Caruana. (Not) Bounding the True Error. NIPS 2002"
)
_LN2 = math.log(2.0)
# Number of Monte-Carlo networks when `Certificate.num_mc_samples` is None (the paper: 150 000).
_NUM_MC_SAMPLES = 10_000
_CERTIFICATE_KEYWORDS = {k: k for k in ("delta_prime", "num_mc_samples", "mc_subset", "mc_batch")}


def dziugaite_roy_from_terms(
    *, kl: float, error: float, n: int, j: int, delta: float = 0.025
) -> dict[str, float]:
    """The Dziugaite-Roy bound from its terms: KL, the (upper bound on the) training error, j.

    $$B_{RE} = \\frac{KL(Q\\|P_j) + 2\\ln j + \\ln\\frac{\\pi^2 m}{6\\delta}}{m - 1}, \\qquad
    e_D(Q) \\le \\overline{kl}^{-1}(\\hat e,\\ B_{RE})$$

    where $P_j = N(w_0, c\\,e^{-j/b} I)$ is the j-th prior of the grid and $\\hat e$ the training
    error of Q (or an upper bound on it, e.g. `sample_convergence_bound`). The inversion is
    bisection to float64 precision, returning the upper end of the final bracket.

    Args:
      kl: KL(Q || P_j) >= 0.
      error: training error in [0, 1].
      n: m, the number of training examples, >= 2.
      j: the prior's grid index, an integer >= 1.
      delta: failure probability of the PAC-Bayes bound, in (0, 1); default delta = 0.025 as in
        Dziugaite & Roy 2017, Section 3.1.

    Returns:
      dict with ``bound`` (kl^{-1}(error, B_RE)), ``b_re`` and ``pinsker`` (error +
      sqrt(B_RE/2), the relaxation that was optimised).

    Raises:
      ValueError, TypeError: on arguments out of range.

    Examples:
      >>> r = dziugaite_roy_from_terms(kl=5144.0, error=0.028, n=55_000, j=230)
      >>> round(r["bound"], 4)
      0.161

    References:
      Dziugaite & Roy, UAI 2017, arXiv:1703.11008, eq. (6) and §3.1.
    """
    kl = check_positive(kl, "kl", allow_zero=True)
    q = check_error(error)
    n = check_n(n, "n")
    if n < 2:
        raise ValueError(f"n must be >= 2 (the bound divides by n - 1), got {n}")
    j = check_n(j, "j")
    delta = check_delta(delta)
    # Union bound over the prior grid, delta_j = 6 delta / (pi^2 j^2) (D&R §3.1).
    b_re = (kl + 2.0 * math.log(j) + math.log(math.pi**2 * n / (6.0 * delta))) / (n - 1)
    return {
        "bound": float(kl_inverse64(q, b_re)),
        "b_re": b_re,
        "pinsker": q + math.sqrt(b_re / 2.0),
    }


# ----------------------------------------------------------------------------------------------
# The certificate for a given posterior.
# ----------------------------------------------------------------------------------------------


def _check_common(delta, delta_prime, b, c):
    delta = check_delta(delta)
    delta_prime = check_delta(delta_prime, "delta_prime")
    if delta + delta_prime >= 1.0:
        raise ValueError(f"delta + delta_prime must be < 1, got {delta} + {delta_prime}")
    b = check_positive(b, "b")
    c = check_positive(c, "c")
    return delta, delta_prime, b, c


@bundle_keywords(certificate=_CERTIFICATE_KEYWORDS)
def dziugaite_roy_certificate(
    posterior: DiagonalGaussian,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    init_params: Any,
    prior_variance: float,
    key: jax.Array,
    delta: float = 0.025,
    b: float = 100.0,
    c: float = 0.1,
    certificate: Certificate = CERTIFICATE,
) -> Bound:
    """The Dziugaite-Roy bound on the test error of a given stochastic network Q.

    With $\\lambda$ = `prior_variance` (e.g. the optimised one), $j^* = b \\ln(c/\\lambda)$ is
    rounded down and up (each clipped to >= 1); both are members of the union bound, so the
    smaller of the two bounds is valid. Then

    $$e_D(Q) \\le \\overline{kl}^{-1}\\Big(\\overline{kl}^{-1}\\big(\\hat e_N, \\tfrac{\\ln(2/\\delta')}{N}\\big),
    \\ \\frac{KL(Q\\|P_j) + 2\\ln j + \\ln\\frac{\\pi^2 m}{6\\delta}}{m-1}\\Big)$$

    with probability $\\ge 1 - \\delta - \\delta'$ over the training sample and the N networks,
    $P_j = N(w_0, c\\, e^{-j/b} I)$, $w_0$ = `init_params`, m = len(X).

    Args:
      posterior: Q; its mean has the structure of the network's parameters.
      X, y: the training set the bound is about (m examples).
      apply_fn: ``apply_fn(params, X) -> logits`` ((n,), (n, 1) or (n, K)).
      init_params: the prior mean w0, drawn independently of the training data.
      prior_variance: lambda > 0, snapped to the grid as above.
      key: PRNG key for the Monte-Carlo networks.
      delta: failure probability of the PAC-Bayes bound; default delta = 0.025 as in Dziugaite & Roy
        2017, Section 3.1 (not the library-wide 0.05).
      b, c: the prior grid lambda_j = c exp(-j/b) (100 and 0.1 in the paper).
      certificate: the Monte-Carlo estimate, a `Certificate`: ``num_mc_samples`` N networks
        drawn from Q (default 10 000; 150,000 in the paper), ``delta_prime`` the failure
        probability of the sample-convergence bound (0.01 as in Dziugaite & Roy 2017, Section
        4.4), ``mc_subset`` (each network on its own `mc_subset` training examples drawn
        uniformly with replacement; unbiased, the bound still counts N trials; None: the whole
        training set) and ``mc_batch`` (networks evaluated together; default 1 on CPU, 64 on
        an accelerator). The keywords ``delta_prime``, ``num_mc_samples``, ``mc_subset`` and
        ``mc_batch`` are accepted too and set these fields.

    Returns:
      A `Bound` with ``value`` the bound on the stochastic net's expected test error,
      ``complexity`` the KL and ``terms``: ``kl``, ``train_error_mc``, ``train_error_mc_stderr``,
      ``train_error_upper``, ``prior_variance`` (lambda_j used), ``j``, ``b_re``, ``pinsker``,
      ``num_mc_samples``, ``bound_floor_j``/``bound_ceil_j``; ``delta`` = delta + delta'.

    Raises:
      ValueError, TypeError: bad data, mismatched trees, non-positive posterior variance, delta
        outside (0, 1); a network drawn from Q whose logits are NaN or infinite (it would be
        neither correct nor wrong).
    """
    cert = check_bundle(certificate, Certificate, "certificate")
    key = check_key(key)
    mean, std = check_posterior(posterior)
    check_same_tree(posterior.mean, init_params, "posterior.mean", "init_params")
    check_finite_tree(init_params, "init_params")
    X, y, _ = check_classifier(apply_fn, posterior.mean, X, y)
    delta, delta_prime, b, c = _check_common(delta, cert.delta_prime, b, c)
    lam = check_positive(prior_variance, "prior_variance")
    num = _NUM_MC_SAMPLES if cert.num_mc_samples is None else cert.num_mc_samples
    N = check_n(num, "num_mc_samples")
    m = int(X.shape[0])
    if m < 2:
        raise ValueError(f"X must hold at least 2 examples, got {m}")

    mc = mc_error(apply_fn, posterior, X, y, key, N, cert.mc_subset, cert.mc_batch,
                  names=("mc_subset", "mc_batch"), caller="dziugaite_roy_certificate")
    e_up = sample_convergence_bound(mc["error"], num_samples=N, delta_prime=delta_prime)
    w0 = np.asarray(ravel_pytree(init_params)[0], np.float64)

    j_star = b * math.log(c / lam)
    candidates = sorted({max(1, math.floor(j_star)), max(1, math.ceil(j_star))})
    per_j = {}
    for j in candidates:
        lam_j = c * math.exp(-j / b)
        kl = flat_kl(mean, std, w0, lam_j)
        per_j[j] = (dziugaite_roy_from_terms(kl=kl, error=e_up, n=m, j=j, delta=delta), kl, lam_j)
    j_best = min(per_j, key=lambda j: per_j[j][0]["bound"])
    res, kl, lam_j = per_j[j_best]
    terms = {
        "kl": kl,
        "train_error_mc": mc["error"],
        "train_error_mc_stderr": mc["stderr"],
        "train_error_upper": e_up,
        "prior_variance": lam_j,
        "prior_variance_requested": lam,
        "j": j_best,
        "b_re": res["b_re"],
        "pinsker": res["pinsker"],
        "num_mc_samples": N,
        "mc_subset": 0 if cert.mc_subset is None else int(cert.mc_subset),
        "bound_floor_j": per_j[candidates[0]][0]["bound"],
        "bound_ceil_j": per_j[candidates[-1]][0]["bound"],
        "num_params": int(mean.size),
    }

    def tandem(t_hat):  # the same union bound over j, with KL(Q^2 || P_j^2) = 2 KL(Q || P_j)
        t_up = tandem_upper(t_hat, N, delta_prime)
        rhs = (2.0 * kl + 2.0 * math.log(j_best) + math.log(math.pi**2 * m / (6.0 * delta))) / (m - 1)
        return t_up, rhs, tandem_from_rhs(t_up, rhs)

    terms.update(majority_vote_terms(res["bound"], mc, kl, n=m, delta=delta,
                                     delta_prime=delta_prime, total_delta=delta + delta_prime,
                                     tandem=tandem))
    return Bound(
        name="dziugaite_roy",
        value=res["bound"],
        complexity=kl,
        terms=terms,
        n=m,
        delta=delta + delta_prime,
        estimated=False,
        reference=_REFERENCE,
        notes=(
            "bound on the expected 0-1 error of the stochastic net Q, not of the mean net",
            f"PAC-Bayes-kl at delta={delta:g}, union bound over lambda_j = {c:g} exp(-j/{b:g})",
            f"Monte-Carlo training error bounded by the sample-convergence bound at "
            f"delta'={delta_prime:g} over N={N} networks",
            "prior mean = init_params, which must not depend on the training data",
            MAJORITY_VOTE_NOTE,
        ),
    )


# ----------------------------------------------------------------------------------------------
# The optimisation: D&R's surrogate in the shared posterior-training loop.
# ----------------------------------------------------------------------------------------------


def _check_dtype(dtype: Any) -> Any:
    """The optimisation's dtype: float32, or float64 with jax_enable_x64. Half precision is
    refused: the posterior's log-standard-deviations, the KL's sums over every parameter and
    Adam's second moments leave its range (float16 overflows above 65504, and bfloat16 keeps 8
    bits of mantissa), so the optimisation would diverge for want of precision, not because
    of the network."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(
            f"dtype must be float32 or float64, got {dt.name}: the optimisation of the "
            "posterior (log-variances, a KL summed over every parameter, Adam's moments) needs "
            "at least float32's range and precision; the certificate itself is computed in "
            "float64 whatever this dtype"
        )
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("dtype float64 needs jax_enable_x64 (jax would compute in float32); "
                         "pass dtype=jnp.float32 or enable x64")
    return dt


def _surrogate(loop, theta, carry, eps, Xb, yb, w0, consts):
    """D&R's surrogate objective (D&R 2017, Section 3.1) of one sampled network on a minibatch."""
    m_f, b_f, log_b, log_c, log_const = consts
    mean, rho = theta["mean"], theta["rho"]
    # lambda is capped at the grid's first point c e^{-1/b} (j >= 1): above it no prior of the
    # union bound exists and the 2 ln j term would reward leaving the grid.
    log_lam = jnp.minimum(theta["log_lam"], log_c - 1.0 / b_f)
    w = mean + jnp.exp(rho) * eps
    # Surrogate of the 0-1 loss: cross-entropy / ln 2, one sampled network per step.
    emp = cross_entropy(loop.apply_fn(loop.unravel(w), Xb), yb).mean() / _LN2
    # KL(Q || N(w0, lam I)) with s = exp(2 rho), ln s = 2 rho, 1/lam = exp(-ln lam) exactly.
    kl = isotropic_kl(mean, jnp.exp(2.0 * rho), 2.0 * rho, w0, log_lam,
                      prior_precision=jnp.exp(-log_lam))
    # Continuous j = b ln(c / lam): 2 ln j = 2 ln b + 2 ln max(ln c - ln lam, 0.01).
    two_ln_j = 2.0 * log_b + 2.0 * jnp.log(jnp.maximum(log_c - log_lam, 0.01))
    b_re = (kl + two_ln_j + log_const) / (m_f - 1.0)
    return emp + jnp.sqrt(b_re / 2.0), (emp, kl, b_re)


def _record(loop, carry, f, aux, consts):
    """Each step records (surrogate, loss / ln 2, KL, B_RE); nothing is carried."""
    return carry, (f, *aux)


@bundle_keywords(
    training={k: k for k in (
        "steps", "batch_size", "lr", "init_log_prior_variance", "init_std_scale", "chunk", "dtype"
    )},
    certificate=_CERTIFICATE_KEYWORDS,
)
def dziugaite_roy(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    init_params: Any,
    key: jax.Array,
    delta: float = 0.025,
    b: float = 100.0,
    c: float = 0.1,
    training: DziugaiteRoyTraining = DZIUGAITE_ROY_TRAINING,
    certificate: Certificate = CERTIFICATE,
    verbose: bool = False,
) -> tuple[Bound, DiagonalGaussian]:
    """Dziugaite & Roy (2017): optimise a Gaussian posterior around a trained net, then bound it.

    Starting from the trained weights w (`params`), minimise over the posterior
    $Q = N(w, \\mathrm{diag}(s))$ and the prior variance $\\lambda$ the surrogate

    $$\\frac{1}{|B|}\\sum_{(x, y) \\in B} \\frac{\\ell_{CE}(f_{w + \\sqrt{s} \\odot \\varepsilon}(x), y)}{\\ln 2}
    + \\sqrt{\\frac{B_{RE}(Q, \\lambda)}{2}}, \\quad
    B_{RE} = \\frac{KL(Q \\| N(w_0, \\lambda I)) + 2\\ln(b \\ln(c/\\lambda)) + \\ln\\frac{\\pi^2 m}{6\\delta}}{m-1}$$

    (one sampled network per step, minibatch B, $\\varepsilon \\sim N(0, I)$) with Adam, then
    certify Q with `dziugaite_roy_certificate` (j discretised, Monte-Carlo sample-convergence
    bound, kl inversion to float64 precision). The surrogate is Pinsker's relaxation of the
    PAC-Bayes-kl bound with the cross-entropy/ln 2 >= 0-1 loss; only the certificate is a bound.

    Initialisation: posterior mean w, posterior std `init_std_scale` * |w| (floored at 1e-8 for
    exactly-zero weights), $\\ln\\lambda$ = `init_log_prior_variance` (D&R's code: prior std
    e^{-3}, i.e. -6). $\\lambda$ is capped at the grid's first point $c\\,e^{-1/b}$ (j = 1) during
    optimisation, since no prior of the union bound lies above it (D&R's code lets the 2 ln j
    term saturate instead, which lets the optimiser leave the grid); the cap matters in practice:
    on small data the optimum sits at it, so `c` is exposed.

    The optimisation runs in the shared jitted posterior-training loop; repeated calls with the
    same network, data shapes and settings compile it once.

    Args:
      params: the trained weights w (the SGD solution). Flax linen variables with other
        collections (``batch_stats``) are split: only the ``params`` collection is the
        posterior's mean and is perturbed; the others stay fixed at their trained values
        (stated in the result's notes), and the returned posterior is over ``params`` only.
      X, y: the m training examples the bound is about.
      apply_fn: ``apply_fn(params, X) -> logits`` ((n,) or (n, 1) with labels {0, 1}: logistic;
        (n, K): softmax). Must be pure JAX (it is traced under jit and vmap).
      init_params: the initialisation w0 (prior mean), same tree, independent of the data.
      key: PRNG key (optimisation noise and Monte-Carlo networks).
      delta: failure probability of the PAC-Bayes bound; default delta = 0.025 as in Dziugaite &
        Roy 2017, Section 3.1 (not the library-wide 0.05).
      b, c: the prior grid lambda_j = c exp(-j/b) (100 and 0.1 in the paper).
      training: a `DziugaiteRoyTraining`: ``steps`` Adam steps (a multiple of ``chunk`` is run;
        rounded up; 20 000), ``batch_size`` of the surrogate loss (100), ``lr`` Adam's learning
        rate (3e-3), ``init_log_prior_variance`` the starting ln lambda (-6),
        ``init_std_scale`` (posterior std at start = scale * |w|; 1), ``chunk`` steps per
        jitted call (1000), ``dtype`` of the optimisation (float32 by default, also under x64;
        the certificate is computed in float64).
      certificate: the Monte-Carlo estimate, a `Certificate` (see `dziugaite_roy_certificate`;
        N = 10 000 networks by default, delta_prime = 0.01 as in Dziugaite & Roy 2017, Section
        4.4).
      verbose: print progress per chunk.

    The earlier keywords are accepted and set the bundles' fields of the same name: ``steps``,
    ``batch_size``, ``lr``, ``init_log_prior_variance``, ``init_std_scale``, ``chunk``,
    ``dtype`` (`training`); ``delta_prime``, ``num_mc_samples``, ``mc_subset``, ``mc_batch``
    (`certificate`).

    Returns:
      ``(bound, posterior)``: the certificate (terms of `dziugaite_roy_certificate` plus
      ``surrogate``, ``optimised_prior_variance``, ``steps``, ``optimisation_seconds``,
      ``mean_net_train_error``) and the optimised `DiagonalGaussian` (in `dtype`).

    Raises:
      ValueError, TypeError: bad data, mismatched trees, delta outside (0, 1), bad settings.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from genbounds.pacbayes import Certificate, DziugaiteRoyTraining
      >>> X = jax.random.normal(jax.random.key(0), (200, 2)); y = (X[:, 0] > 0).astype(int)
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> w = {"w": jnp.array([[3.0], [0.0]]), "b": jnp.zeros(1)}
      >>> w0 = {"w": jnp.array([[0.1], [-0.1]]), "b": jnp.zeros(1)}
      >>> bnd, q = dziugaite_roy(w, X=X, y=y, apply_fn=f, init_params=w0, key=jax.random.key(1),
      ...                        training=DziugaiteRoyTraining(steps=200, chunk=100),
      ...                        certificate=Certificate(num_mc_samples=200))
      >>> 0.0 < bnd.value < 1.0
      True

    References:
      Dziugaite & Roy, Computing Nonvacuous Generalization Bounds for Deep (Stochastic) Neural
      Networks with Many More Parameters than Training Data, UAI 2017, arXiv:1703.11008.
    """
    opt = check_bundle(training, DziugaiteRoyTraining, "training")
    cert = check_bundle(certificate, Certificate, "certificate")
    key = check_key(key)
    _check_dtype(opt.dtype)
    params, apply_fn, init_params, fixed_note = trainable(params, apply_fn, init_params)
    X, y, _ = check_classifier(apply_fn, params, X, y)
    check_same_tree(params, init_params, "params", "init_params")
    check_finite_tree(init_params, "init_params")
    delta, delta_prime, b, c = _check_common(delta, cert.delta_prime, b, c)
    steps = check_n(opt.steps, "steps")
    chunk = min(check_n(opt.chunk, "chunk"), steps)
    batch_size = check_n(opt.batch_size, "batch_size")
    lr = check_positive(opt.lr, "lr")
    init_std_scale = check_positive(opt.init_std_scale, "init_std_scale")
    init_llv = float(opt.init_log_prior_variance)
    if not math.isfinite(init_llv):
        raise ValueError(
            f"init_log_prior_variance must be finite, got {opt.init_log_prior_variance}")
    m = int(X.shape[0])
    if m < 2:
        raise ValueError(f"X must hold at least 2 examples, got {m}")

    dtype = opt.dtype
    w_flat = flatten(params, dtype)
    w0 = flatten(init_params, dtype)
    unravel = Unravel(params, dtype)
    Xd = jnp.asarray(X, dtype) if jnp.issubdtype(X.dtype, jnp.floating) else X
    theta = {
        "mean": w_flat,
        "rho": jnp.log(jnp.maximum(init_std_scale * jnp.abs(w_flat), 1e-8)),
        "log_lam": jnp.asarray(init_llv, dtype),
    }
    loop = PosteriorLoop(apply_fn=apply_fn, unravel=unravel, objective=_surrogate,
                         after_step=_record, optimiser=("adam", lr), batch_size=batch_size,
                         steps=chunk)
    state = init_state(loop, theta)
    consts = tuple(
        jnp.asarray(v, dtype)
        for v in (m, b, math.log(b), math.log(c), math.log(math.pi**2 * m / (6.0 * delta)))
    )
    k_opt, k_mc = jax.random.split(key)
    n_chunks = -(-steps // chunk)
    settings = f"Adam with lr={lr:g}, dtype {np.dtype(dtype).name}, batch_size={batch_size}"
    t0 = time.perf_counter()
    hist = None
    for i in range(n_chunks):
        state, hist = run_posterior_loop(loop, state, w0, Xd, y, jax.random.fold_in(k_opt, i),
                                         consts)
        check_progress(hist[0], caller="dziugaite_roy", what="surrogate objective",
                       at=f"steps {i * chunk + 1}-{(i + 1) * chunk} of {n_chunks * chunk}",
                       settings=settings)
        if verbose:
            obj, emp, kl, bre = (float(v) for v in hist)
            print(
                f"[dziugaite_roy] step {(i + 1) * chunk}: surrogate {obj:.4f} "
                f"(loss/ln2 {emp:.4f}, KL {kl:.1f}, B_RE {bre:.5f}, "
                f"lambda {min(math.exp(float(state[0]['log_lam'])), c * math.exp(-1 / b)):.3g})"
            )
    theta = state[0]
    jax.block_until_ready(theta)
    t_opt = time.perf_counter() - t0
    check_trained({"posterior mean": theta["mean"], "posterior std": jnp.exp(theta["rho"]),
                   "log prior variance": theta["log_lam"]}, caller="dziugaite_roy",
                  settings=settings, positive=("posterior std",))

    posterior = DiagonalGaussian(mean=unravel(theta["mean"]), std=unravel(jnp.exp(theta["rho"])))
    lam = math.exp(min(float(theta["log_lam"]), math.log(c) - 1.0 / b))
    bound = dziugaite_roy_certificate(
        posterior, X=Xd, y=y, apply_fn=apply_fn, init_params=init_params, prior_variance=lam,
        key=k_mc, delta=delta, b=b, c=c, certificate=cert,
    )
    mean_err = float(zero_one(apply_fn(posterior.mean, Xd), y).mean())
    terms = dict(bound.terms)
    terms.update(
        surrogate=float(hist[0]),
        optimised_prior_variance=lam,
        steps=n_chunks * chunk,
        optimisation_seconds=t_opt,
        mean_net_train_error=mean_err,
    )
    notes = bound.notes + ((fixed_note,) if fixed_note else ())
    return dataclasses.replace(bound, terms=terms, notes=notes), posterior
