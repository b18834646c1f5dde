"""The first-order ("factor 2") bound: from the stochastic net Q to its majority vote.

A PAC-Bayes certificate bounds the Gibbs error $e(Q) = E_{h \\sim Q}[L(h)]$: a fresh network is
drawn for every prediction. The deterministic classifier it covers is the Q-weighted majority
vote $MV_Q(x) = \\arg\\max_c Q\\{h : h(x) = c\\}$ (the vote of infinitely many draws). If
$MV_Q$ errs on $(x, y)$, the label y holds at most half of Q's mass, so
$E_{h\\sim Q}[1\\{h(x) \\ne y\\}] \\ge 1/2$; Markov's inequality then gives

$$L(MV_Q) \\le P_{(x,y)}\\big(E_Q[1\\{h(x)\\ne y\\}] \\ge 1/2\\big) \\le 2\\, e(Q),$$

for any number of classes and any tie-breaking (a network whose top logits tie counts as
wrong, as everywhere in genbounds). Langford & Shawe-Taylor (2002) call it the folk theorem;
Masegosa, Lorenzen, Igel & Seldin (2020) its first-order oracle bound.

It bounds the majority vote of the posterior, not the network at the posterior's mean weights:
$f_\\mu$ is another classifier, covered by no theorem here (its test error is reported as a
measurement).
"""

from __future__ import annotations

import math
from typing import Any

from genbounds.core._bound import Bound

REFERENCE = (
    "Langford & Shawe-Taylor, PAC-Bayes & margins, NIPS 2002 (the factor-2 'folk theorem'); "
    "Masegosa, Lorenzen, Igel & Seldin, Second order PAC-Bayesian bounds for the weighted "
    "majority vote, NeurIPS 2020, arXiv:2007.13532 (first-order oracle bound)"
)


def majority_vote_first_order(gibbs: Bound | float) -> Bound:
    """The factor-2 bound on the error of the posterior's majority vote, $L(MV_Q) \\le 2\\,e(Q)$.

    Any upper bound on the stochastic (Gibbs) error $e(Q)$ that holds with probability
    $\\ge 1 - \\delta$ gives, on the same event, $L(MV_Q) \\le 2 \\times$ that bound, where
    $MV_Q(x) = \\arg\\max_c Q\\{h(x) = c\\}$ is the Q-weighted majority vote: if $MV_Q$ errs on
    (x, y), at least half of Q's mass errs there, and Markov's inequality bounds the
    probability of that by $2 e(Q)$ (module docs). No extra failure probability is spent.

    Args:
      gibbs: a stochastic certificate (`risk_certificate`, `perez_ortiz`, `dziugaite_roy`,
        `pac_bayes_kl_bound`, ...) or its value, a float in [0, 1].

    Returns:
      A `Bound` named ``"majority_vote_first_order"``: ``value`` = 2 x the certificate (not
      clipped: above 1 it is vacuous), with the certificate's ``n``, ``delta`` and
      ``estimated``; ``terms``: ``gibbs_bound``.

    Raises:
      TypeError, ValueError: `gibbs` is neither a `Bound` with a value nor a number in [0, 1].

    Examples:
      >>> majority_vote_first_order(0.07).value
      0.14

    References:
      Langford & Shawe-Taylor, PAC-Bayes & margins, NIPS 2002; Masegosa, Lorenzen, Igel &
      Seldin, Second order PAC-Bayesian bounds for the weighted majority vote, NeurIPS 2020,
      arXiv:2007.13532.
    """
    if isinstance(gibbs, Bound):
        if gibbs.value is None:
            raise ValueError(f"gibbs must be a bound with a value, got the measure {gibbs.name!r}")
        v, n, delta, est = float(gibbs.value), gibbs.n, gibbs.delta, gibbs.estimated
        name = gibbs.name
    elif isinstance(gibbs, (bool, str)) or gibbs is None:
        raise TypeError(f"gibbs must be a Bound or a number in [0, 1], got {gibbs!r}")
    else:
        v, n, delta, est, name = _as_error(gibbs), None, None, False, "given"
    if not 0.0 <= v <= 1.0 or math.isnan(v):
        raise ValueError(f"gibbs must bound an error in [0, 1], got {v!r}")
    return Bound(
        name="majority_vote_first_order",
        value=2.0 * v,
        complexity=None,
        terms={"gibbs_bound": v, "gibbs_name": name},
        n=n,
        delta=delta,
        estimated=est,
        reference=REFERENCE,
        notes=("bounds the error of the posterior's majority vote MV_Q (a deterministic "
               "classifier), on the event of the stochastic certificate; not the network at "
               "the posterior mean",),
    )


def _as_error(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        raise TypeError(f"gibbs must be a Bound or a number in [0, 1], got {x!r}") from None
