"""Tight risk certificates: data-dependent priors and PAC-Bayes training objectives.

Pérez-Ortiz, Rivasplata, Shawe-Taylor & Szepesvári, "Tighter risk certificates for neural
networks", JMLR 22(227), 2021, arXiv:2007.12911 ("PAC-Bayes with Backprop"). The protocol:

1. **Split** the m training examples at random into a *prior set* (a fraction
   `prior_fraction`) and a *bound set* of n = m - n_prior examples.
2. **Prior**: $P = N(w_P, \\sigma_P^2 I)$ with the mean $w_P$ learnt on the prior set only (by
   ERM, or as the mean of a PAC-Bayes posterior trained there against a data-free prior at the
   initialisation). $P$ is a function of the prior set (and of independent randomness), hence
   independent of the bound set: the bound set is an i.i.d. sample given $P$.
3. **Posterior**: $Q = N(\\mu, \\mathrm{diag}(\\sigma^2))$, $\\sigma = \\ln(1 + e^\\rho)$, initialised
   at $P$ and trained by SGD on one of the objectives below (evaluated with the bounded
   cross-entropy on minibatches, one weight sample per step, the reparametrisation trick). The
   PAC-Bayes bound holds for all posteriors at once, so $Q$ may be trained on any data: the
   default (as the authors' code) trains it on the whole training set.
4. **Certificate** (the only number here that is a bound): the 0-1 error of the stochastic
   net on the *bound set*, $\\hat e_n(Q)$, is estimated from N networks drawn from Q and bounded
   by the sample-convergence bound at $\\delta'$ (Langford & Caruana 2002), then the PAC-Bayes-kl
   bound of Maurer (2004) at $\\delta$ is inverted:
   $$e(Q) \\le \\overline{kl}^{-1}\\Big(\\overline{kl}^{-1}\\big(\\hat e_N, \\tfrac{\\ln(2/\\delta')}{N}\\big),
   \\ \\frac{KL(Q\\|P) + \\ln(2\\sqrt n/\\delta)}{n}\\Big)$$
   with probability at least $1 - \\delta - \\delta'$ over the bound set and the N networks,
   conditionally on the prior set. With a grid of K prior scales $\\sigma_P$, each candidate is
   certified at $\\delta/K$ and $\\delta'/K$ and the smallest certificate is reported (union
   bound). The $\\lambda$ of `f_lambda` needs no union bound: it only shapes training; the
   certificate is the kl inversion, which holds for every Q simultaneously.

Training objectives, with $\\hat L$ the bounded cross-entropy on the minibatch and
$\\kappa = KL(Q\\|P) + \\ln(2\\sqrt n/\\delta)$ (paper §3, eqs. for $f_{quad}$, $f_\\lambda$, $f_{classic}$):

* $f_{quad} = \\big(\\sqrt{\\hat L + \\kappa/(2n)} + \\sqrt{\\kappa/(2n)}\\big)^2$ (the PAC-Bayes-quadratic
  bound, new in the paper);
* $f_\\lambda = \\hat L/(1 - \\lambda/2) + \\kappa/(n\\lambda(1 - \\lambda/2))$, $\\lambda \\in (0, 2)$
  (Thiemann, Igel, Wintenberger & Seldin 2017); here $\\lambda$ is set after every step to its
  closed-form minimiser $2/(\\sqrt{2n\\hat L/\\kappa + 1} + 1)$ (alternating minimisation);
* $f_{classic} = \\hat L + \\sqrt{\\kappa/(2n)}$ (McAllester/Maurer);
* ``"dziugaite_roy"``: $\\hat L + \\sqrt{B/2}$, $B = (KL + \\ln(n/\\delta))/(n - 1)$, Dziugaite &
  Roy's (2017) Pinsker relaxation for one fixed prior.

The bounded cross-entropy (paper §3, "bounded cross-entropy loss"; the authors' code clamps the
log-probabilities at $\\ln p_{min}$): $\\ell(z, y) = \\min(-\\ln p_y(z), \\ln(1/p_{min}))/\\ln(1/p_{min})
\\in [0, 1]$, $p_{min} = 10^{-5}$ by default as in their MNIST runs.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    check_choice,
    check_delta,
    check_finite_tree,
    check_n,
    check_positive,
    check_unit_interval,
)
from genbounds.losses._losses import check_classifier, check_same_tree, cross_entropy, zero_one

from ._dziugaite_roy import (
    DiagonalGaussian,
    _mc_errors,
    diag_gaussian_kl,
    mc_batch_size,
    sample_convergence_bound,
)
from ._kl import pac_bayes_kl_bound

_REFERENCE = (
    "Pérez-Ortiz, Rivasplata, Shawe-Taylor, Szepesvári. Tighter risk certificates for neural "
    "networks. JMLR 22(227), 2021, arXiv:2007.12911; Maurer, A note on the PAC Bayesian "
    "theorem, 2004, arXiv:cs/0411099; Langford & Caruana, (Not) Bounding the True Error, NIPS 2002"
)

OBJECTIVES = ("quad", "lambda", "classic", "dziugaite_roy")
_OBJ_INDEX = {name: i for i, name in enumerate(OBJECTIVES)}


# ----------------------------------------------------------------------------------------------
# The surrogate loss and the objectives (jittable).
# ----------------------------------------------------------------------------------------------


def bounded_cross_entropy(logits: Any, y: Any, *, p_min: float = 1e-5) -> jax.Array:
    """Per-example bounded cross-entropy in [0, 1] (Pérez-Ortiz et al. 2021, §3).

    $$\\ell(z, y) = \\frac{\\min\\big(-\\ln p_y(z),\\ \\ln(1/p_{min})\\big)}{\\ln(1/p_{min})}$$

    with $p_y$ the softmax probability of the label (K >= 2 logits) or the logistic one (one
    output unit, labels {0, 1}). Clamping the log-probability at $\\ln p_{min}$ makes the loss
    bounded, so the PAC-Bayes bounds behind the objectives apply to it. It is a training
    surrogate, not an upper bound on the 0-1 loss (a misclassified example may cost less than 1).

    Args:
      logits: (n,), (n, 1) or (n, K) network outputs.
      y: (n,) integer labels.
      p_min: the probability floor in (0, 1).

    Returns:
      (n,) losses in [0, 1].

    Examples:
      >>> import jax.numpy as jnp
      >>> l = bounded_cross_entropy(jnp.array([[0.0, 0.0], [30.0, -30.0]]), jnp.array([0, 1]),
      ...                           p_min=1e-4)
      >>> [round(float(v), 4) for v in l]
      [0.0753, 1.0]
    """
    p_min = check_unit_interval(p_min, "p_min", closed=False)
    return _bounded_ce(jnp.asarray(logits), jnp.asarray(y), math.log(1.0 / p_min))


def _bounded_ce(logits, y, log_inv_pmin):
    # cross_entropy is -ln p_y (logistic for one output unit, softmax otherwise).
    return jnp.minimum(cross_entropy(logits, y), log_inv_pmin) / log_inv_pmin


def optimal_lambda(empirical_risk: Any, kl: Any, *, n: int, delta: float = 0.025) -> float:
    """The minimiser over $\\lambda \\in (0, 2)$ of $f_\\lambda$ (Thiemann et al. 2017).

    $$\\lambda^* = \\frac{2}{\\sqrt{2n\\hat L/\\kappa + 1} + 1}, \\qquad
    \\kappa = KL + \\ln(2\\sqrt n/\\delta).$$

    Default delta = 0.025 as in Pérez-Ortiz et al. 2021 (their experiments; the value of
    Dziugaite & Roy 2017, Section 3.1), not the library-wide 0.05.

    Examples:
      >>> round(optimal_lambda(0.0, 10.0, n=1000), 6)
      1.0
    """
    L = check_unit_interval(empirical_risk, "empirical_risk")
    k = check_positive(kl, "kl", allow_zero=True)
    n = check_n(n)
    d = check_delta(delta)
    kappa = k + math.log(2.0 * math.sqrt(n) / d)
    return 2.0 / (math.sqrt(2.0 * n * L / kappa + 1.0) + 1.0)


def _lambda_star(L, kappa, n):
    return 2.0 / (jnp.sqrt(2.0 * n * L / kappa + 1.0) + 1.0)


def _objective_core(index, L, kl, n, log_term, log_dr, lam):
    """The objective number `index` of OBJECTIVES (static)."""
    kappa = kl + log_term
    if index == 0:  # f_quad
        r = kappa / (2.0 * n)
        return (jnp.sqrt(L + r) + jnp.sqrt(r)) ** 2
    if index == 1:  # f_lambda
        return L / (1.0 - lam / 2.0) + kappa / (n * lam * (1.0 - lam / 2.0))
    if index == 2:  # f_classic
        return L + jnp.sqrt(kappa / (2.0 * n))
    return L + jnp.sqrt((kl + log_dr) / (2.0 * (n - 1.0)))  # Dziugaite & Roy, one prior


def pac_bayes_objective(
    empirical_risk: Any,
    kl: Any,
    *,
    n: int,
    delta: float = 0.025,
    objective: str = "quad",
    lam: float | None = None,
) -> float:
    """One of the PAC-Bayes training objectives of Pérez-Ortiz et al. (2021), as a number.

    With $\\kappa = KL + \\ln(2\\sqrt n/\\delta)$: ``"quad"`` $(\\sqrt{\\hat L + \\kappa/2n} +
    \\sqrt{\\kappa/2n})^2$; ``"lambda"`` $\\hat L/(1-\\lambda/2) + \\kappa/(n\\lambda(1-\\lambda/2))$
    (``lam`` in (0, 2), default its minimiser `optimal_lambda`); ``"classic"``
    $\\hat L + \\sqrt{\\kappa/2n}$; ``"dziugaite_roy"`` $\\hat L + \\sqrt{(KL + \\ln(n/\\delta))/(2(n-1))}$.
    Each is an upper bound on the risk of Q for a loss in [0, 1] when $\\hat L$ is the exact
    empirical risk on n examples independent of the prior (the certificate itself uses the
    tighter kl inversion, `risk_certificate_from_terms`).

    Args:
      empirical_risk: $\\hat L$ in [0, 1].
      kl: KL(Q || P) >= 0 in nats.
      n: the number of bound-set examples, >= 2.
      delta: confidence parameter in (0, 1); default delta = 0.025 as in Pérez-Ortiz et al. 2021
        (their experiments; the value of Dziugaite & Roy 2017, Section 3.1).
      objective: one of ``"quad"``, ``"lambda"``, ``"classic"``, ``"dziugaite_roy"``.
      lam: lambda for ``"lambda"``.

    Returns:
      The objective's value, a float.

    Examples:
      >>> round(pac_bayes_objective(0.02, 50.0, n=30_000, objective="quad"), 5)
      0.03111
    """
    L = check_unit_interval(empirical_risk, "empirical_risk")
    k = check_positive(kl, "kl", allow_zero=True)
    n = check_n(n)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    d = check_delta(delta)
    objective = check_choice(objective, "objective", OBJECTIVES)
    log_term = math.log(2.0 * math.sqrt(n) / d)
    if objective == "lambda":
        lam = optimal_lambda(L, k, n=n, delta=d) if lam is None else float(lam)
        if not 0.0 < lam < 2.0:
            raise ValueError(f"lam must lie in (0, 2), got {lam!r}")
    else:
        lam = 1.0
    with jax.enable_x64(True):
        v = _objective_core(
            _OBJ_INDEX[objective],
            np.float64(L),
            np.float64(k),
            np.float64(n),
            np.float64(log_term),
            np.float64(math.log(n / d)),
            np.float64(lam),
        )
    return float(v)


# ----------------------------------------------------------------------------------------------
# The certificate.
# ----------------------------------------------------------------------------------------------


def risk_certificate_from_terms(*, kl: float, error: float, n: int, delta: float) -> float:
    """$\\overline{kl}^{-1}(\\hat e, (KL + \\ln(2\\sqrt n/\\delta))/n)$: Maurer's PAC-Bayes-kl bound.

    Args:
      kl: KL(Q || P) >= 0, P independent of the n examples.
      error: the empirical 0-1 error of Q on them (or an upper bound on it), in [0, 1].
      n: the number of examples, >= 8 (Maurer 2004, Theorem 5).
      delta: failure probability in (0, 1).

    Returns:
      The bound on the expected 0-1 error of the stochastic classifier Q, a float.

    Examples:
      >>> round(risk_certificate_from_terms(kl=100.0, error=0.03, n=10_000, delta=0.05), 4)
      0.0621
    """
    with jax.enable_x64(True):  # float64 whatever the caller's jax_enable_x64 setting
        return float(pac_bayes_kl_bound(error, kl, n=n, delta=delta).value)


def risk_certificate(
    posterior: DiagonalGaussian,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    prior_mean: Any,
    prior_std: float,
    key: jax.Array,
    delta: float = 0.025,
    delta_prime: float = 0.01,
    num_mc_samples: int = 1000,
    mc_subset: int | None = None,
    mc_batch: int | None = None,
    num_candidates: int = 1,
) -> Bound:
    """The risk certificate of a Gaussian posterior Q against the prior $N(w_P, \\sigma_P^2 I)$.

    $$e(Q) \\le \\overline{kl}^{-1}\\Big(\\overline{kl}^{-1}\\big(\\hat e_N, \\tfrac{\\ln(2K/\\delta')}{N}\\big),
    \\ \\frac{KL(Q\\|P) + \\ln(2K\\sqrt n/\\delta)}{n}\\Big)$$

    with probability $\\ge 1 - \\delta - \\delta'$ over the bound set (n = len(X) examples)
    and the N sampled networks, *conditionally on whatever determined P* (the prior set). K =
    `num_candidates` is the number of posteriors among which the caller will pick the smallest
    certificate (e.g. one per prior scale): each is then charged $\\delta/K$ and $\\delta'/K$
    (union bound). $\\hat e_N$ is the mean 0-1 error on the bound set of N networks drawn from Q
    (Langford & Caruana's sample-convergence bound; Pérez-Ortiz et al. 2021, §5, eq. for the
    "risk certificate"; Maurer 2004, Theorem 5, n >= 8).

    Args:
      posterior: Q, a `DiagonalGaussian` over the parameter tree.
      X, y: the bound set, independent of the prior.
      apply_fn: ``apply_fn(params, X) -> logits`` ((n,), (n, 1) or (n, K)).
      prior_mean: $w_P$, same tree; must not depend on (X, y).
      prior_std: $\\sigma_P > 0$.
      key: PRNG key of the Monte-Carlo networks.
      delta: failure probability of the PAC-Bayes-kl bound; default delta = 0.025 as in Pérez-Ortiz
        et al. 2021 (their experiments; the value of Dziugaite & Roy 2017, Section 3.1), not the
        library-wide 0.05.
      delta_prime: failure probability of the sample-convergence bound (0.01 in the paper).
      num_mc_samples: N networks (the paper uses 150,000).
      mc_subset: evaluate each network on its own `mc_subset` bound-set examples drawn
        uniformly with replacement (unbiased; the bound still counts N trials); None: all.
      mc_batch: networks evaluated together (default: 1 on CPU, 64 on an accelerator).
      num_candidates: K >= 1, see above.

    Returns:
      A `Bound` named ``"risk_certificate"`` on the expected 0-1 error of the *stochastic* net
      Q (a fresh network drawn for each prediction), not of its mean; ``delta`` = delta +
      delta'; ``terms``: ``kl``, ``bound_set_error_mc`` (+ ``_stderr``), ``bound_set_error_upper``,
      ``n_bound``, ``prior_std``, ``num_candidates``, ``delta_each``, ``delta_prime_each``,
      ``rhs``, ``num_mc_samples``, ``num_params``.

    Raises:
      ValueError, TypeError: mismatched trees, bad data, n < 8, parameters out of range.
    """
    check_same_tree(posterior.mean, prior_mean, "posterior.mean", "prior_mean")
    check_finite_tree(prior_mean, "prior_mean")
    X, y, _ = check_classifier(apply_fn, posterior.mean, X, y)
    delta = check_delta(delta)
    delta_prime = check_delta(delta_prime, "delta_prime")
    if delta + delta_prime >= 1.0:
        raise ValueError(f"delta + delta_prime must be < 1, got {delta} + {delta_prime}")
    sp = check_positive(prior_std, "prior_std")
    K = check_n(num_candidates, "num_candidates")
    N = check_n(num_mc_samples, "num_mc_samples")
    n = int(X.shape[0])
    if n < 8:
        raise ValueError(f"X must hold at least 8 examples (Maurer's bound), got {n}")
    kl = diag_gaussian_kl(posterior, prior_mean, sp**2)
    mc = _stochastic_error(apply_fn, posterior, X, y, key, N, mc_subset, mc_batch)
    d_each, dp_each = delta / K, delta_prime / K
    e_up = sample_convergence_bound(mc["error"], num_samples=N, delta_prime=dp_each)
    with jax.enable_x64(True):  # the inversion in float64 whatever jax_enable_x64 says
        inner = pac_bayes_kl_bound(e_up, kl, n=n, delta=d_each)
    value = float(inner.value)
    terms = {
        "kl": kl,
        "bound_set_error_mc": mc["error"],
        "bound_set_error_mc_stderr": mc["stderr"],
        "bound_set_error_upper": e_up,
        "n_bound": n,
        "prior_std": sp,
        "num_candidates": K,
        "delta_each": d_each,
        "delta_prime_each": dp_each,
        "rhs": inner.terms["rhs"],
        "num_mc_samples": N,
        "mc_subset": 0 if mc_subset is None else int(mc_subset),
        "num_params": int(ravel_pytree(posterior.mean)[0].size),
    }
    return Bound(
        name="risk_certificate",
        value=value,
        complexity=kl,
        terms=terms,
        n=n,
        delta=delta + delta_prime,
        estimated=False,
        reference=_REFERENCE,
        notes=(
            "bounds the expected 0-1 error of the stochastic net Q (a network drawn from Q per "
            "prediction), not of the mean network",
            f"PAC-Bayes-kl (Maurer) at delta/K = {d_each:g} on the n = {n} bound-set examples; "
            f"sample-convergence bound at delta'/K = {dp_each:g} over N = {N} networks; K = {K}",
            "holds conditionally on the prior set: the prior mean must not depend on the bound set",
        ),
    )


# ----------------------------------------------------------------------------------------------
# Training: the prior by ERM, the posterior by a PAC-Bayes objective (one jitted scan per epoch).
# ----------------------------------------------------------------------------------------------


class DataSplit(NamedTuple):
    """A random split of the training set into a prior set and a bound set.

    ``prior_indices`` and ``bound_indices`` are disjoint positions into the original arrays.
    """

    X_prior: np.ndarray
    y_prior: np.ndarray
    X_bound: np.ndarray
    y_bound: np.ndarray
    prior_indices: np.ndarray
    bound_indices: np.ndarray


def split_data(X: Any, y: Any, *, prior_fraction: float, seed: int = 0) -> DataSplit:
    """Splits (X, y) uniformly at random: ``round(prior_fraction * m)`` examples form the prior set.

    The split is drawn independently of the data values (a permutation from `seed`), so given the
    prior set the bound set is an i.i.d. sample from the data distribution.

    Raises:
      ValueError: prior_fraction outside [0, 1), mismatched lengths, fewer than 8 bound examples.

    Examples:
      >>> import numpy as np
      >>> s = split_data(np.zeros((10, 2)), np.zeros(10, int), prior_fraction=0.2)
      >>> len(s.X_prior), len(s.X_bound)
      (2, 8)
    """
    f = check_unit_interval(prior_fraction, "prior_fraction")
    if f >= 1.0:
        raise ValueError(f"prior_fraction must lie in [0, 1), got {prior_fraction!r}")
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X and y must have the same length, got {len(X)} and {len(y)}")
    m = len(X)
    n_prior = int(round(f * m))
    if m - n_prior < 8:
        raise ValueError(
            f"the bound set must hold at least 8 examples; m={m}, prior_fraction={f} leaves "
            f"{m - n_prior}"
        )
    perm = np.random.default_rng(seed).permutation(m)
    pi, bi = np.sort(perm[:n_prior]), np.sort(perm[n_prior:])
    return DataSplit(X[pi], y[pi], X[bi], y[bi], pi, bi)


def _as_f32(X):
    X = jnp.asarray(X)
    return X.astype(jnp.float32) if jnp.issubdtype(X.dtype, jnp.floating) else X


class _Unravel:
    """Flat float32 vector -> parameter tree (the inverse of `ravel_pytree`'s ordering).

    Hashable by tree structure and leaf shapes, so the jitted epochs, which take it as a static
    argument, compile once per network rather than once per call (`ravel_pytree` returns a
    fresh closure every time).
    """

    def __init__(self, tree):
        leaves, self.treedef = jax.tree.flatten(tree)
        self.shapes = tuple(tuple(np.shape(a)) for a in leaves)
        self.bounds = tuple(int(b) for b in np.cumsum([int(np.prod(s)) for s in self.shapes]))

    def __call__(self, flat):
        starts = (0,) + self.bounds[:-1]
        leaves = [flat[a:b].reshape(s).astype(jnp.float32)
                  for a, b, s in zip(starts, self.bounds, self.shapes, strict=True)]
        return jax.tree.unflatten(self.treedef, leaves)

    def _key(self):
        return (self.treedef, self.shapes)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, _Unravel) and self._key() == other._key()


def _flat(tree):
    return jnp.concatenate([jnp.ravel(a).astype(jnp.float32) for a in jax.tree.leaves(tree)])


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _erm_epoch(apply_fn, unravel, sgd, batch, state, X, y, key):
    tx = optax.sgd(sgd[0], momentum=sgd[1])
    w, opt = state
    m = X.shape[0]
    steps = m // batch
    perm = jax.random.permutation(key, m)[: steps * batch].reshape(steps, batch)

    def loss(w, xb, yb):
        return cross_entropy(apply_fn(unravel(w), xb), yb).mean()

    def step(carry, idx):
        w, opt = carry
        val, g = jax.value_and_grad(loss)(w, X[idx], y[idx])
        u, opt = tx.update(g, opt, w)
        return (optax.apply_updates(w, u), opt), val

    (w, opt), losses = jax.lax.scan(step, (w, opt), perm)
    return (w, opt), losses.mean()


def learn_prior(
    init_params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 0.01,
    momentum: float = 0.95,
    objective: str = "erm",
    prior_std: float = 0.03,
    p_min: float = 1e-5,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> Any:
    """Learns the prior mean $w_P$ on the prior set only.

    ``objective="erm"``: SGD with momentum on the (unbounded) cross-entropy from `init_params`.
    Any other objective of `OBJECTIVES`: train a Gaussian posterior on the prior set by that
    PAC-Bayes objective against the data-free prior $N(\\text{init\\_params}, \\sigma_P^2 I)$ (n =
    the prior-set size) and return its mean. Either way the result depends on the prior set, the
    initialisation and `key` only.

    Args:
      init_params: the initial parameter tree.
      X, y: the prior set (it must not overlap the bound set).
      apply_fn: ``apply_fn(params, X) -> logits``.

    Returns:
      The prior mean, a tree like `init_params` (float32).
    """
    objective = check_choice(objective, "objective", ("erm",) + OBJECTIVES)
    X, y, _ = check_classifier(apply_fn, init_params, X, y)
    epochs = check_n(epochs, "epochs")
    batch_size = min(check_n(batch_size, "batch_size"), int(X.shape[0]))
    if objective != "erm":
        q, _ = train_posterior(
            init_params, X=X, y=y, apply_fn=apply_fn, n_bound=int(X.shape[0]),
            prior_std=prior_std, key=key, objective=objective, epochs=epochs,
            batch_size=batch_size, lr=lr, momentum=momentum, p_min=p_min, callback=callback,
        )
        return q.mean
    w, unravel = _flat(init_params), _Unravel(init_params)
    sgd = (check_positive(lr, "lr"), float(momentum))
    state = (w, optax.sgd(*sgd).init(w))
    Xf = _as_f32(X)
    for e in range(epochs):
        state, loss = _erm_epoch(apply_fn, unravel, sgd, batch_size, state, Xf, y,
                                 jax.random.fold_in(key, e))
        if callback is not None:
            callback(e, {"cross_entropy": float(loss)})
    return unravel(state[0])


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _pbb_epoch(apply_fn, unravel, sgd, obj_index, batch, state, w_p, X, y, key, consts):
    """One epoch of SGD on a PAC-Bayes objective; `state` = (theta, opt_state, lam)."""
    tx = optax.sgd(sgd[0], momentum=sgd[1])
    n, log_term, log_dr, log_sp2, log_inv_pmin, kl_penalty = consts
    m = X.shape[0]
    steps = m // batch
    k_perm, k_eps = jax.random.split(key)
    perm = jax.random.permutation(k_perm, m)[: steps * batch].reshape(steps, batch)
    keys = jax.random.split(k_eps, steps)
    sp2 = jnp.exp(log_sp2)
    d = w_p.shape[0]

    def kl_fn(theta):
        # 2 KL(N(mu, diag s) || N(w_p, sp2 I)), s = softplus(rho)^2 (formulas of diag_gaussian_kl).
        s = jax.nn.softplus(theta["rho"]) ** 2
        two_kl = (
            jnp.sum(s) / sp2 + jnp.sum((theta["mean"] - w_p) ** 2) / sp2 - d + d * log_sp2
            - jnp.sum(jnp.log(s))
        )
        return 0.5 * two_kl

    def objective(theta, lam, eps, xb, yb):
        w = theta["mean"] + jax.nn.softplus(theta["rho"]) * eps
        logits = apply_fn(unravel(w), xb)
        L = _bounded_ce(logits, yb, log_inv_pmin).mean()
        kl = kl_fn(theta)
        f = _objective_core(obj_index, L, kl_penalty * kl, n, log_term, log_dr, lam)
        return f, (L, kl, zero_one(logits, yb).mean())

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def step(carry, inp):
        theta, opt, lam = carry
        idx, k = inp
        eps = jax.random.normal(k, w_p.shape, w_p.dtype)
        (f, (L, kl, err)), g = grad_fn(theta, lam, eps, X[idx], y[idx])
        u, opt = tx.update(g, opt, theta)
        theta = optax.apply_updates(theta, u)
        if obj_index == 1:  # f_lambda: alternating minimisation, lambda at its closed form
            lam = _lambda_star(L, kl_penalty * kl + log_term, n)
        return (theta, opt, lam), (f, L, kl, err, lam)

    state, hist = jax.lax.scan(step, state, (perm, keys))
    return state, jax.tree.map(jnp.mean, hist)


def train_posterior(
    prior_mean: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    n_bound: int,
    prior_std: float,
    key: jax.Array,
    objective: str = "quad",
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 0.001,
    momentum: float = 0.95,
    delta: float = 0.025,
    p_min: float = 1e-5,
    kl_penalty: float = 1.0,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[DiagonalGaussian, dict[str, list[float]]]:
    """Trains $Q = N(\\mu, \\mathrm{diag}(\\ln(1+e^\\rho)^2))$ by SGD on a PAC-Bayes objective.

    Q starts at the prior ($\\mu = w_P$, std $\\sigma_P$). Each step draws one weight sample
    $w = \\mu + \\sigma \\odot \\varepsilon$ (reparametrisation), takes the bounded cross-entropy on a
    minibatch of (X, y) and the closed-form KL to $N(w_P, \\sigma_P^2 I)$, and applies SGD with
    momentum to the objective (see `pac_bayes_objective`; n = `n_bound`, the size of the set the
    certificate will use). One jitted `lax.scan` per epoch; `callback(epoch, metrics)` after
    each. Training is in float32 whatever jax_enable_x64 says.

    Args:
      prior_mean: $w_P$, a parameter tree.
      X, y: the training data of Q (the PAC-Bayes bound allows any data here).
      apply_fn: ``apply_fn(params, X) -> logits``; pure JAX (traced under jit).
      n_bound: n in the objective, >= 2.
      prior_std: $\\sigma_P > 0$.
      key: PRNG key.
      objective: ``"quad"``, ``"lambda"``, ``"classic"`` or ``"dziugaite_roy"``.
      epochs, batch_size, lr, momentum: SGD settings (paper: lr 0.001-0.005, momentum 0.95-0.99).
      delta: the delta inside the objective; default delta = 0.025 as in Pérez-Ortiz et al. 2021
        (their experiments; the value of Dziugaite & Roy 2017, Section 3.1).
      p_min: floor of the bounded cross-entropy.
      kl_penalty: multiplies the KL inside the objective (1 for the paper's certificates).
      callback: called as ``callback(epoch, metrics)`` with the epoch means of ``objective``,
        ``loss`` (bounded CE), ``kl``, ``error`` (0-1 of the sampled nets) and ``lam``.

    Returns:
      ``(posterior, history)``: the `DiagonalGaussian` and the per-epoch metrics.
    """
    objective = check_choice(objective, "objective", OBJECTIVES)
    X, y, _ = check_classifier(apply_fn, prior_mean, X, y)
    n = check_n(n_bound, "n_bound")
    if n < 2:
        raise ValueError(f"n_bound must be >= 2, got {n}")
    sp = check_positive(prior_std, "prior_std")
    epochs = check_n(epochs, "epochs")
    batch_size = min(check_n(batch_size, "batch_size"), int(X.shape[0]))
    delta = check_delta(delta)
    p_min = check_unit_interval(p_min, "p_min", closed=False)
    kl_penalty = check_positive(kl_penalty, "kl_penalty")
    w_p, unravel = _flat(prior_mean), _Unravel(prior_mean)
    # softplus(rho) = sp  <=>  rho = ln(e^sp - 1).
    rho0 = math.log(math.expm1(sp))
    theta = {"mean": w_p, "rho": jnp.full_like(w_p, rho0)}
    sgd = (check_positive(lr, "lr"), float(momentum))
    log_term = math.log(2.0 * math.sqrt(n) / delta)
    state = (theta, optax.sgd(*sgd).init(theta), jnp.asarray(1.0, jnp.float32))
    consts = tuple(
        jnp.asarray(v, jnp.float32)
        for v in (n, log_term, math.log(n / delta), 2.0 * math.log(sp), math.log(1.0 / p_min),
                  kl_penalty)
    )
    Xf = _as_f32(X)
    hist: dict[str, list[float]] = {k: [] for k in ("objective", "loss", "kl", "error", "lam")}
    for e in range(epochs):
        state, h = _pbb_epoch(apply_fn, unravel, sgd, _OBJ_INDEX[objective], batch_size, state,
                              w_p, Xf, y, jax.random.fold_in(key, e), consts)
        metrics = dict(zip(hist, (float(v) for v in h), strict=True))
        for k, v in metrics.items():
            hist[k].append(v)
        if callback is not None:
            callback(e, metrics)
    theta = state[0]
    post = DiagonalGaussian(
        mean=unravel(theta["mean"]), std=unravel(jax.nn.softplus(theta["rho"]))
    )
    return post, hist


# ----------------------------------------------------------------------------------------------
# The whole protocol.
# ----------------------------------------------------------------------------------------------


def _stochastic_error(apply_fn, q, X, y, key, N, subset, batch) -> dict[str, float]:
    """`genbounds.stochastic_error` (same Monte Carlo) with a hashable unravel: one compile per
    network and data shape, however many posteriors are certified."""
    sub = 0 if subset is None else check_n(subset, "mc_subset")
    errs = np.asarray(
        _mc_errors(apply_fn, _Unravel(q.mean), N, mc_batch_size(batch, X, "mc_batch"), sub,
                   _flat(q.mean), _flat(q.std), _as_f32(X), jnp.asarray(y), key),
        np.float64,
    )
    se = float(errs.std(ddof=1) / math.sqrt(N)) if N > 1 else float("nan")
    return {"error": float(errs.mean()), "stderr": se, "num_samples": N}


def _error(apply_fn, params, X, y) -> float:
    return float(zero_one(apply_fn(params, _as_f32(X)), jnp.asarray(y)).mean())


def perez_ortiz(
    init_params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    prior_fraction: float = 0.5,
    prior_stds: Sequence[float] = (0.03,),
    objective: str = "quad",
    prior_objective: str = "erm",
    posterior_data: str = "all",
    prior_epochs: int = 20,
    prior_lr: float = 0.01,
    prior_momentum: float = 0.95,
    epochs: int = 20,
    lr: float = 0.001,
    momentum: float = 0.95,
    batch_size: int = 128,
    delta: float = 0.025,
    delta_prime: float = 0.01,
    p_min: float = 1e-5,
    num_mc_samples: int = 1000,
    mc_subset: int | None = None,
    mc_batch: int | None = None,
    X_test: Any = None,
    y_test: Any = None,
    test_mc_samples: int = 200,
    test_mc_subset: int | None = None,
    split_seed: int = 0,
    callback: Callable[[str, int, dict[str, float]], None] | None = None,
) -> tuple[Bound, DiagonalGaussian]:
    """A tight risk certificate for a Flax net: data-dependent prior, PAC-Bayes training, bound.

    The protocol of Pérez-Ortiz, Rivasplata, Shawe-Taylor & Szepesvári (2021) (see the module
    docs and docs/bounds/risk_certificates.md):

    1. split (X, y) at random into a prior set (`prior_fraction`) and a bound set of n examples;
    2. learn the prior mean on the prior set only (`learn_prior`, from `init_params`;
       ``prior_fraction=0`` keeps the data-free prior at `init_params`);
    3. for each prior scale $\\sigma_P$ in `prior_stds` (K of them) train a posterior
       (`train_posterior`) on the whole training set (``posterior_data="all"``) or on the bound
       set only (``"bound"``), with n = the bound-set size in the objective;
    4. certify each (`risk_certificate`, at $\\delta/K$ and $\\delta'/K$) and keep the smallest.

    The result bounds, with probability $\\ge 1 - \\delta - \\delta'$ over the bound set and the
    Monte-Carlo networks (conditionally on the prior set), the expected 0-1 error of the
    stochastic net Q. Given test data, the terms also report beside it the stochastic test error
    (Monte Carlo), the test errors of the posterior mean and of the prior net.

    Args:
      init_params: the initialisation (data-free), a parameter tree.
      X, y: the training set.
      apply_fn: ``apply_fn(params, X) -> logits`` of a Flax net (MLP, CNN, ...); pure JAX.
      key: PRNG key (prior training, posterior training, Monte Carlo).
      prior_fraction: fraction of X for the prior, in [0, 1) (paper: 0.5 for MNIST).
      prior_stds: grid of prior scales $\\sigma_P$ (paper's MNIST runs: 0.03 or so); each one
        costs a posterior training and log K in the bound.
      objective: posterior objective, one of ``"quad"``, ``"lambda"``, ``"classic"``,
        ``"dziugaite_roy"``.
      prior_objective: ``"erm"`` or a PAC-Bayes objective for the prior mean.
      posterior_data: ``"all"`` (the authors' choice) or ``"bound"``.
      prior_epochs, prior_lr, prior_momentum: prior training (SGD with momentum).
      epochs, lr, momentum, batch_size: posterior training.
      delta, delta_prime: confidences of the PAC-Bayes-kl and sample-convergence bounds;
        default delta = 0.025 as in Pérez-Ortiz et al. 2021 (their experiments; the value of
        Dziugaite & Roy 2017, Section 3.1), and delta_prime = 0.01 (not the library-wide 0.05).
      p_min: floor of the bounded cross-entropy.
      num_mc_samples, mc_subset, mc_batch: Monte-Carlo networks of the certificate.
      X_test, y_test: optional held-out data for the reported (not certified) test errors.
      test_mc_samples, test_mc_subset: Monte Carlo of the stochastic test error.
      split_seed: seed of the prior/bound split.
      callback: ``callback(stage, epoch, metrics)``, stage ``"prior"`` or ``"posterior[i]"``.

    Returns:
      ``(bound, posterior)``: the smallest certificate (terms of `risk_certificate` plus
      ``n_prior``, ``n_train_posterior``, ``prior_fraction``, ``objective``, the per-scale
      certificates ``candidates``, ``prior_net_bound_set_error``, ``mean_net_train_error`` and,
      with test data, ``stochastic_test_error`` (+ ``_stderr``), ``mean_net_test_error``,
      ``prior_net_test_error``; timings) and the chosen posterior.

    Raises:
      ValueError, TypeError: bad data or settings.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> X = np.random.default_rng(0).normal(size=(400, 2)); y = (X[:, 0] > 0).astype(int)
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> w0 = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
      >>> b, q = perez_ortiz(w0, X=X, y=y, apply_fn=f, key=jax.random.key(0), prior_epochs=5,
      ...                    epochs=5, num_mc_samples=100)
      >>> 0.0 < b.value < 0.5
      True

    References:
      Pérez-Ortiz, Rivasplata, Shawe-Taylor, Szepesvári, Tighter risk certificates for neural
      networks, JMLR 22(227), 2021, arXiv:2007.12911.
    """
    X, y, _ = check_classifier(apply_fn, init_params, X, y)
    check_choice(objective, "objective", OBJECTIVES)
    check_choice(prior_objective, "prior_objective", ("erm",) + OBJECTIVES)
    check_choice(posterior_data, "posterior_data", ("all", "bound"))
    stds = [check_positive(s, "prior_stds[i]") for s in np.atleast_1d(np.asarray(prior_stds))]
    if not stds:
        raise ValueError("prior_stds must hold at least one scale, got an empty sequence")
    if (X_test is None) != (y_test is None):
        raise ValueError("X_test and y_test must be given together")
    t_all = time.perf_counter()
    split = split_data(np.asarray(X), np.asarray(y), prior_fraction=prior_fraction,
                       seed=split_seed)
    k_prior, k_post, k_mc, k_test = jax.random.split(key, 4)
    n_prior, n = len(split.X_prior), len(split.X_bound)

    t0 = time.perf_counter()
    if n_prior > 0:
        prior_mean = learn_prior(
            init_params, X=split.X_prior, y=split.y_prior, apply_fn=apply_fn, key=k_prior,
            epochs=prior_epochs, batch_size=batch_size, lr=prior_lr, momentum=prior_momentum,
            objective=prior_objective, prior_std=stds[0], p_min=p_min,
            callback=None if callback is None else partial(callback, "prior"),
        )
    else:
        prior_mean = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), init_params)
    t_prior = time.perf_counter() - t0

    X_post, y_post = (X, y) if posterior_data == "all" else (split.X_bound, split.y_bound)
    K = len(stds)
    cands = []
    t0 = time.perf_counter()
    for i, sp in enumerate(stds):
        q, hist = train_posterior(
            prior_mean, X=X_post, y=y_post, apply_fn=apply_fn, n_bound=n, prior_std=sp,
            key=jax.random.fold_in(k_post, i), objective=objective, epochs=epochs,
            batch_size=batch_size, lr=lr, momentum=momentum, delta=delta, p_min=p_min,
            callback=None if callback is None else partial(callback, f"posterior[{i}]"),
        )
        b = risk_certificate(
            q,
            X=split.X_bound,
            y=split.y_bound,
            apply_fn=apply_fn,
            prior_mean=prior_mean,
            prior_std=sp,
            key=jax.random.fold_in(k_mc, i),
            delta=delta,
            delta_prime=delta_prime,
            num_mc_samples=num_mc_samples,
            mc_subset=mc_subset,
            mc_batch=mc_batch,
            num_candidates=K,
        )
        cands.append((b, q, hist))
    t_post = time.perf_counter() - t0
    best = min(range(K), key=lambda i: cands[i][0].value)
    bound, q, hist = cands[best]
    terms = dict(bound.terms)
    terms.update(
        n_prior=n_prior,
        n_train_posterior=int(X_post.shape[0]),
        prior_fraction=float(prior_fraction),
        objective=objective,
        prior_objective=prior_objective if n_prior else "none (data-free prior at init)",
        posterior_data=posterior_data,
        candidates=[{"prior_std": s, "certificate": c[0].value, "kl": c[0].terms["kl"]}
                    for s, c in zip(stds, cands, strict=True)],
        final_objective=hist["objective"][-1],
        prior_net_bound_set_error=_error(apply_fn, prior_mean, split.X_bound, split.y_bound),
        mean_net_train_error=_error(apply_fn, q.mean, X, y),
        seconds_prior=t_prior,
        seconds_posterior_and_certificate=t_post,
    )
    if X_test is not None:
        Xt, yt, _ = check_classifier(apply_fn, init_params, X_test, y_test, x_name="X_test",
                                     y_name="y_test")
        st = _stochastic_error(apply_fn, q, Xt, yt, k_test,
                               check_n(test_mc_samples, "test_mc_samples"), test_mc_subset,
                               mc_batch)
        terms.update(
            stochastic_test_error=st["error"],
            stochastic_test_error_stderr=st["stderr"],
            mean_net_test_error=_error(apply_fn, q.mean, Xt, yt),
            prior_net_test_error=_error(apply_fn, prior_mean, Xt, yt),
        )
    terms["seconds_total"] = time.perf_counter() - t_all
    notes = bound.notes + (
        f"prior mean learnt on {n_prior} examples (prior set) by {terms['prior_objective']}; "
        f"posterior trained on {terms['n_train_posterior']} examples ({posterior_data}); "
        f"certificate on the other {n} (bound set)",
        "test errors in terms are measurements on held-out data, not part of the bound",
    )
    return dataclasses.replace(bound, terms=terms, notes=notes), q
