"""The risk certificate of Pérez-Ortiz et al. (2021) for a Gaussian posterior, and the random
prior/bound split it rests on.

The 0-1 error of the stochastic net on the *bound set*, $\\hat e_n(Q)$, is estimated from N
networks drawn from Q and bounded by the sample-convergence bound at $\\delta'$ (Langford &
Caruana 2002), then the PAC-Bayes-kl bound of Maurer (2004) at $\\delta$ is inverted:

$$e(Q) \\le \\overline{kl}^{-1}\\Big(\\overline{kl}^{-1}\\big(\\hat e_N, \\tfrac{\\ln(2/\\delta')}{N}\\big),
\\ \\frac{KL(Q\\|P) + \\ln(2\\sqrt n/\\delta)}{n}\\Big)$$

with probability at least $1 - \\delta - \\delta'$ over the bound set and the N networks,
conditionally on the prior set. With K candidate posteriors each is certified at $\\delta/K$ and
$\\delta'/K$ (union bound).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    check_delta,
    check_finite_tree,
    check_int,
    check_key,
    check_n,
    check_positive,
    check_unit_interval,
)
from genbounds.losses._losses import check_classifier, check_same_tree

from ._gaussian import DiagonalGaussian, check_posterior, diag_gaussian_kl
from ._kl import pac_bayes_kl_bound
from ._montecarlo import mc_error, sample_convergence_bound
from ._options import CERTIFICATE, Certificate, bundle_keywords, check_bundle
from ._tandem import majority_vote_tandem

REFERENCE = (
    "Pérez-Ortiz, Rivasplata, Shawe-Taylor, Szepesvári. Tighter risk certificates for neural "
    "networks. JMLR 22(227), 2021, arXiv:2007.12911; Maurer, A note on the PAC Bayesian "
    "theorem, 2004, arXiv:cs/0411099; Langford & Caruana, (Not) Bounding the True Error, NIPS 2002"
)
# Number of Monte-Carlo networks when `Certificate.num_mc_samples` is None (the paper: 150 000).
NUM_MC_SAMPLES = 1000
CERTIFICATE_KEYWORDS = {k: k for k in ("delta_prime", "num_mc_samples", "mc_subset", "mc_batch")}


def stochastic_error_f32(apply_fn, q, X, y, key, N, subset, batch,
                         caller="risk_certificate", votes=False) -> dict[str, Any]:
    """`stochastic_error` (the same Monte Carlo) in float32, on checked data."""
    return mc_error(apply_fn, q, X, y, key, N, subset, batch, dtype=jnp.float32,
                    names=("mc_subset", "mc_batch"), caller=caller, votes=votes)


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



@bundle_keywords(certificate=CERTIFICATE_KEYWORDS)
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
    certificate: Certificate = CERTIFICATE,
    num_candidates: int = 1,
    finite_check: bool = True,
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
      certificate: the Monte-Carlo estimate, a `Certificate`: ``num_mc_samples`` N networks
        (default 1 000; the paper uses 150,000), ``delta_prime`` the failure probability of
        the sample-convergence bound (0.01 in the paper), ``mc_subset`` (each network on its
        own `mc_subset` bound-set examples drawn uniformly with replacement; unbiased, the
        bound still counts N trials; None: all) and ``mc_batch`` (networks evaluated together;
        default 1 on CPU, 64 on an accelerator). The keywords ``delta_prime``,
        ``num_mc_samples``, ``mc_subset`` and ``mc_batch`` are accepted too and set these
        fields.
      num_candidates: K >= 1, see above.
      finite_check: check first that the network at the posterior mean has finite logits on X
        (one forward pass); a drawn network with non-finite logits is refused either way.

    Returns:
      A `Bound` named ``"risk_certificate"`` on the expected 0-1 error of the *stochastic* net
      Q (a fresh network drawn for each prediction), not of its mean; ``delta`` = delta +
      delta'; ``terms``: ``kl``, ``bound_set_error_mc`` (+ ``_stderr``), ``bound_set_error_upper``,
      ``n_bound``, ``prior_std``, ``num_candidates``, ``delta_each``, ``delta_prime_each``,
      ``rhs``, ``num_mc_samples``, ``num_params``.

    Raises:
      ValueError, TypeError: mismatched trees, bad data, n < 8, parameters out of range; a
        network drawn from Q whose logits are NaN or infinite (neither correct nor wrong).
    """
    cert = check_bundle(certificate, Certificate, "certificate")
    key = check_key(key)
    check_posterior(posterior)  # names posterior.mean / .std, not the classifier's params
    check_same_tree(posterior.mean, prior_mean, "posterior.mean", "prior_mean")
    check_finite_tree(prior_mean, "prior_mean")
    X, y, _ = check_classifier(apply_fn, posterior.mean, X, y, dtype=jnp.float32,
                               finite_check=finite_check)
    delta = check_delta(delta)
    delta_prime = check_delta(cert.delta_prime, "delta_prime")
    if delta + delta_prime >= 1.0:
        raise ValueError(f"delta + delta_prime must be < 1, got {delta} + {delta_prime}")
    sp = check_positive(prior_std, "prior_std")
    if not 0.0 < sp * sp < math.inf:
        raise ValueError(f"prior_std must have a finite, non-zero square (the prior variance) in "
                         f"float64, got {prior_std!r}")
    K = check_n(num_candidates, "num_candidates")
    num = NUM_MC_SAMPLES if cert.num_mc_samples is None else cert.num_mc_samples
    N = check_n(num, "num_mc_samples")
    n = int(X.shape[0])
    if n < 8:
        raise ValueError(f"X must hold at least 8 examples (Maurer's bound), got {n}")
    kl = diag_gaussian_kl(posterior, prior_mean, sp * sp)
    mc = stochastic_error_f32(apply_fn, posterior, X, y, key, N, cert.mc_subset, cert.mc_batch)
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
        "mc_subset": 0 if cert.mc_subset is None else int(cert.mc_subset),
        "num_params": sum(int(np.size(a)) for a in jax.tree.leaves(posterior.mean)),
    }
    terms.update(majority_vote_terms(value, mc, kl, n=n, delta=d_each, delta_prime=dp_each,
                                     total_delta=delta + delta_prime))
    return Bound(
        name="risk_certificate",
        value=value,
        complexity=kl,
        terms=terms,
        n=n,
        delta=delta + delta_prime,
        estimated=False,
        reference=REFERENCE,
        notes=(
            "bounds the expected 0-1 error of the stochastic net Q (a network drawn from Q per "
            "prediction), not of the mean network",
            f"PAC-Bayes-kl (Maurer) at delta/K = {d_each:g} on the n = {n} bound-set examples; "
            f"sample-convergence bound at delta'/K = {dp_each:g} over N = {N} networks; K = {K}",
            "holds conditionally on the prior set: the prior mean must not depend on the bound set",
            MAJORITY_VOTE_NOTE,
        ),
    )


MAJORITY_VOTE_NOTE = (
    "majority_vote_* terms bound the error of the posterior's majority vote MV_Q (the "
    "deterministic classifier argmax_c Q{h(x) = c}): first_order = 2 x the certificate (same "
    "event), tandem = Masegosa et al. 2020 from the same networks' pairs (its own event at the "
    "same delta, delta'); majority_vote_certificate, the smaller, holds w.p. >= 1 - "
    "majority_vote_delta; the network at the posterior's mean weights is covered by neither"
)


def majority_vote_terms(gibbs: float, mc: dict[str, Any], kl: float, *, n: int, delta: float,
                        delta_prime: float, total_delta: float,
                        tandem: Any = None) -> dict[str, Any]:
    """The majority-vote certificates beside a stochastic certificate `gibbs` (the same N
    networks, `mc`; each of the two at `delta`, `delta_prime`): the factor-2 bound, the tandem
    bound when the counter gave a tandem error (every network on the whole set), their minimum
    and its failure probability 2 x `total_delta`. `tandem(t_upper)` overrides the tandem's
    PAC-Bayes step (Dziugaite & Roy's form)."""
    out: dict[str, Any] = {"majority_vote_first_order": 2.0 * gibbs}
    if "tandem_error" in mc:
        if tandem is None:
            tb = majority_vote_tandem(mc["tandem_error"], kl, n=n, num_samples=mc["num_samples"],
                                      delta=delta, delta_prime=delta_prime)
            t_up, rhs, value = tb.terms["tandem_error_upper"], tb.terms["rhs"], tb.value
        else:
            t_up, rhs, value = tandem(mc["tandem_error"])
        out.update(majority_vote_tandem=value, tandem_error_mc=mc["tandem_error"],
                   tandem_error_upper=t_up, tandem_num_pairs=mc["num_pairs"], tandem_rhs=rhs)
    else:
        out["majority_vote_tandem"] = None  # needs every network on the whole set
    cands = [v for v in (out["majority_vote_first_order"], out["majority_vote_tandem"])
             if v is not None]
    out["majority_vote_certificate"] = min(cands)
    out["majority_vote_delta"] = 2.0 * total_delta if len(cands) > 1 else total_delta
    return out


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
      ValueError, TypeError: prior_fraction outside [0, 1), `seed` not an integer >= 0,
        mismatched lengths, fewer than 8 bound examples.

    Examples:
      >>> import numpy as np
      >>> s = split_data(np.zeros((10, 2)), np.zeros(10, int), prior_fraction=0.2)
      >>> len(s.X_prior), len(s.X_bound)
      (2, 8)
    """
    f = check_unit_interval(prior_fraction, "prior_fraction")
    seed = check_int(seed, "seed", minimum=0)
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


