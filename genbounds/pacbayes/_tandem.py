"""The second-order ("tandem") bound on the posterior's majority vote, Masegosa, Lorenzen, Igel &
Seldin (NeurIPS 2020, arXiv:2007.13532).

The **tandem loss** of a pair of networks on an example is 1 when *both* err:
$\\ell((h, h'), (x, y)) = 1\\{h(x) \\ne y\\}\\,1\\{h'(x) \\ne y\\}$, with $L(h, h')$ its expectation over
the data and $\\hat L_S(h, h')$ its mean over the n examples of S. Two steps:

Step 1. **Second-order oracle bound** (Masegosa et al., Section 3; any number of classes). If the Q-weighted
majority vote $MV_Q$ errs on (x, y), then $Z = E_{h\\sim Q}[1\\{h(x) \\ne y\\}] \\ge 1/2$, so
$Z^2 \\ge 1/4$; Markov's inequality on $Z^2$, and $E[Z^2] = E_{Q^2}[L(h, h')]$ (h, h' drawn
independently from Q), give

$$L(MV_Q) \\le 4\\, E_{(h,h')\\sim Q^2}[L(h, h')].$$

Step 2. **PAC-Bayes-kl for the tandem loss.** The tandem loss is a 0-1 loss of the *pair* (h, h'):
Maurer's (2004, Theorem 5) PAC-Bayes-kl bound over the space of pairs, with prior $P^2$
(independent of S) and posterior $Q^2$, $KL(Q^2 \\| P^2) = 2\\,KL(Q \\| P)$, gives with probability
$\\ge 1 - \\delta$ over S, for all Q (n >= 8):

$$kl\\big(E_{Q^2}[\\hat L_S(h, h')] \\,\\|\\, E_{Q^2}[L(h, h')]\\big) \\le
\\frac{2\\,KL(Q\\|P) + \\ln(2\\sqrt n/\\delta)}{n}.$$

This is the paper's PAC-Bayes-kl tandem ("TND") bound.

**Monte Carlo.** $E_{Q^2}[\\hat L_S(h, h')]$ is estimated from the same N networks as the Gibbs
error: $\\hat T_N$ is the U-statistic over all N(N-1) ordered pairs of distinct networks
(`tandem_error` of the Monte-Carlo counter, from the per-example error counts). By Hoeffding's
(1963, §5) representation a U-statistic of order 2 is an average of means of floor(N/2)
independent pairs, so its exponential moments, and with them the kl-Chernoff (sample-
convergence) bound of Langford & Caruana (2002), hold with floor(N/2) trials in place of N:
with probability $\\ge 1 - \\delta'$ over the networks,
$E_{Q^2}[\\hat L_S] \\le \\overline{kl}^{-1}(\\hat T_N, \\ln(2/\\delta')/\\lfloor N/2 \\rfloor)$.

Altogether, with probability $\\ge 1 - \\delta - \\delta'$,

$$L(MV_Q) \\le 4\\,\\overline{kl}^{-1}\\Big(\\overline{kl}^{-1}\\big(\\hat T_N, \\tfrac{\\ln(2/\\delta')}{\\lfloor N/2\\rfloor}\\big),
\\ \\frac{2\\,KL(Q\\|P) + \\ln(2\\sqrt n/\\delta)}{n}\\Big).$$

It is tighter than the factor-2 bound when the networks' errors are weakly correlated
($E_{Q^2}[L(h,h')] \\ll e(Q)/2$); it pays 2 KL instead of KL. As the factor-2 bound, it covers
the majority vote $MV_Q$, not the network at the posterior's mean weights.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from genbounds.core._bound import Bound
from genbounds.core._checks import check_delta, check_n, check_positive, check_unit_interval

from ._kl import kl_inverse64
from ._montecarlo import sample_convergence_bound

REFERENCE = (
    "Masegosa, Lorenzen, Igel & Seldin, Second order PAC-Bayesian bounds for the weighted "
    "majority vote, NeurIPS 2020, arXiv:2007.13532 (second-order oracle bound and its "
    "PAC-Bayes-kl form); Maurer, A note on the PAC Bayesian theorem, 2004, arXiv:cs/0411099; "
    "Langford & Caruana, (Not) Bounding the True Error, NIPS 2002; Hoeffding, Probability "
    "inequalities for sums of bounded random variables, JASA 1963, §5"
)
_NOTE = ("bounds the error of the posterior's majority vote MV_Q (a deterministic classifier: "
         "the vote of Q's networks), not the network at the posterior mean")


def tandem_upper(tandem_error: float, num_samples: int | None, delta_prime: float) -> float:
    """$\\hat T_N$ bounded at $\\delta'$ with floor(N/2) trials (module docs); the value itself
    when N is None (an exact tandem error)."""
    if num_samples is None:
        return tandem_error
    k = check_n(num_samples, "num_samples")
    if k < 2:
        raise ValueError(f"num_samples must be >= 2 (a pair of networks), got {k}")
    return sample_convergence_bound(tandem_error, num_samples=k // 2, delta_prime=delta_prime)


def tandem_from_rhs(t_upper: float, rhs: float) -> float:
    """$4\\,\\overline{kl}^{-1}(\\bar T, c)$ in float64: the majority-vote bound from the bounded
    empirical tandem error and the PAC-Bayes right-hand side c (with 2 KL in it)."""
    with jax.enable_x64(True):
        return 4.0 * float(kl_inverse64(t_upper, rhs))


def majority_vote_tandem(
    tandem_error: Any,
    kl: Any,
    *,
    n: int,
    num_samples: int | None,
    delta: float = 0.025,
    delta_prime: float = 0.01,
) -> Bound:
    """Masegosa et al.'s (2020) tandem bound on the error of the posterior's majority vote.

    With probability $\\ge 1 - \\delta - \\delta'$ over the n examples (independent of the prior
    P) and the N networks drawn from Q (module docs):

    $$L(MV_Q) \\le 4\\,\\overline{kl}^{-1}\\Big(\\overline{kl}^{-1}\\big(\\hat T_N, \\tfrac{\\ln(2/\\delta')}{\\lfloor N/2\\rfloor}\\big),
    \\ \\frac{2\\,KL(Q\\|P) + \\ln(2\\sqrt n/\\delta)}{n}\\Big)$$

    where $MV_Q(x) = \\arg\\max_c Q\\{h(x) = c\\}$ and $\\hat T_N$ is the Monte-Carlo tandem error
    (the fraction of examples on which both networks of a pair err, averaged over the pairs of
    N networks; `stochastic_error`'s networks give it). With ``num_samples=None``,
    `tandem_error` is taken as the exact $E_{Q^2}[\\hat L_S(h, h')]$ and $\\delta'$ is not spent.

    Args:
      tandem_error: $\\hat T_N$ in [0, 1].
      kl: KL(Q || P) >= 0 in nats (the bound uses 2 KL, the divergence of the pairs).
      n: the number of examples, >= 8 (Maurer 2004, Theorem 5).
      num_samples: N >= 2 networks behind $\\hat T_N$ (floor(N/2) independent trials), or None.
      delta: failure probability of the PAC-Bayes-kl step, in (0, 1); default delta = 0.025
        as the risk certificates of Pérez-Ortiz et al. 2021 (their experiments), not the
        library-wide 0.05.
      delta_prime: failure probability of the Monte-Carlo step; default 0.01.

    Returns:
      A `Bound` named ``"majority_vote_tandem"``: ``value`` the bound on $L(MV_Q)$ (not
      clipped; above 1 vacuous), ``complexity`` 2 KL, ``delta`` = delta + delta' (delta when
      N is None), ``terms``: ``tandem_error``, ``tandem_error_upper``, ``num_pairs``, ``kl``,
      ``rhs``, ``tandem_bound`` (the bound on $E_{Q^2}[L(h, h')]$).

    Raises:
      TypeError, ValueError: arguments out of range.

    Examples:
      >>> b = majority_vote_tandem(0.005, 2.0, n=10_000, num_samples=None, delta=0.05)
      >>> round(b.value, 4)
      0.0374

    References:
      Masegosa, Lorenzen, Igel & Seldin, Second order PAC-Bayesian bounds for the weighted
      majority vote, NeurIPS 2020, arXiv:2007.13532; Maurer 2004, arXiv:cs/0411099; Langford &
      Caruana, NIPS 2002; Hoeffding, JASA 1963.
    """
    t = check_unit_interval(tandem_error, "tandem_error")
    k = check_positive(kl, "kl", allow_zero=True)
    n = check_n(n, "n")
    if n < 8:
        raise ValueError(f"n must be >= 8: Maurer's (2004) bound is proved for n >= 8; got n={n}")
    d = check_delta(delta)
    dp = check_delta(delta_prime, "delta_prime")
    t_up = tandem_upper(t, num_samples, dp)
    log_term = math.log(2.0 * math.sqrt(n) / d)
    rhs = (2.0 * k + log_term) / n
    value = tandem_from_rhs(t_up, rhs)
    return Bound(
        name="majority_vote_tandem",
        value=value,
        complexity=2.0 * k,
        terms={"tandem_error": t, "tandem_error_upper": t_up,
               "num_pairs": None if num_samples is None else int(num_samples) // 2,
               "kl": k, "rhs": rhs, "tandem_bound": value / 4.0},
        n=n,
        delta=d if num_samples is None else d + dp,
        estimated=False,
        reference=REFERENCE,
        notes=(_NOTE,),
    )
