r"""The certificate of the randomised spectral-norm bound: failure probability and step count.

After k Golub-Kahan-Lanczos steps from a start uniform on the sphere, the top Ritz value
$\theta_k$ of $W^\top W$ lies below $(1 - \varepsilon)\lambda_1$ with probability at most a
regularised incomplete beta function (Kuczyński & Woźniakowski 1992, with the probability computed
exactly). Everything here runs on the host in float64 and depends on the matrix's smaller side,
the failure probability and the target slack only, never on the matrix. Derivation:
docs/spectral_norms.md.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.optimize
import scipy.special


def _log_chebyshev(m: int, x: float) -> float:
    """log T_m(x) for x > 1, without overflow: T_m(x) = cosh(m acosh x)."""
    d = x - 1.0
    a = math.log1p(d + math.sqrt(d * (2.0 + d)))  # acosh(1 + d), accurate for small d
    return m * a + math.log1p(math.exp(-2.0 * m * a)) - math.log(2.0)


def _certificate_failure(k: int, eps: float, q: int) -> float:
    """P(theta_k < (1 - eps) lambda_1) is at most this, for a start uniform on S^{q-1}.

    With x = (1 + eps)/(1 - eps) and T_{k-1} the Chebyshev polynomial, the failure event lies in
    {c_1^2 < tau}, tau = (1 - eps) / (eps T_{k-1}(x)^2 + 1 - eps), and c_1^2 ~ Beta(1/2, (q-1)/2),
    so the probability is the regularised incomplete beta function I_tau(1/2, (q-1)/2).
    Derivation: docs/spectral_norms.md.
    """
    if q <= 1:
        return 0.0  # c_1^2 = 1 surely, and tau < 1
    log_t = _log_chebyshev(k - 1, (1.0 + eps) / (1.0 - eps))
    log_tau = math.log1p(-eps) - float(np.logaddexp(math.log(eps) + 2.0 * log_t, math.log1p(-eps)))
    return float(scipy.special.betainc(0.5, 0.5 * (q - 1), math.exp(log_tau)))


@functools.lru_cache(maxsize=256)
def _certificate_plan(q: int, eta: float, rtol: float) -> tuple[int, float]:
    """The number of Lanczos steps k and the slack eps of the certified bound.

    k is the smallest number of steps whose failure probability at eps_target is <= eta, where
    eps_target = 1 - (1 + rtol)^-2 makes sqrt(theta/(1 - eps_target)) = (1 + rtol) sqrt(theta).
    eps is then the smallest slack with failure probability <= eta after k steps (<= eps_target).
    Both depend on (q, eta, rtol) only, never on W.
    """
    eps_t = 1.0 - (1.0 + rtol) ** -2
    if q <= 1:
        return 1, eps_t
    # First guess from the closed form tau(k, eps_t) <= tau*, then exact integer search.
    tau_star = float(scipy.special.betaincinv(0.5, 0.5 * (q - 1), eta))
    x = (1.0 + eps_t) / (1.0 - eps_t)
    acosh_x = math.log1p((x - 1.0) + math.sqrt((x - 1.0) * (x + 1.0)))
    if tau_star > 0.0:
        ratio = max((1.0 / tau_star - 1.0) * (1.0 - eps_t) / eps_t, 1.0)
        k = 1 + max(0, math.ceil(math.acosh(math.sqrt(ratio)) / acosh_x))
    else:
        k = 1
    while k > 1 and _certificate_failure(k - 1, eps_t, q) <= eta:
        k -= 1
    while _certificate_failure(k, eps_t, q) > eta:
        k += 1
    # Smallest eps with failure(k, eps) <= eta: failure decreases in eps; solve in log eps.
    lo, hi = math.log(1e-300), math.log(eps_t)
    if _certificate_failure(k, math.exp(lo), q) <= eta:
        return k, math.exp(lo)
    root = scipy.optimize.brentq(
        lambda t: _certificate_failure(k, math.exp(t), q) - eta, lo, hi, xtol=1e-13, rtol=1e-13
    )
    eps = math.exp(root)
    while _certificate_failure(k, eps, q) > eta:  # guard the root against rounding
        eps = min(eps * (1.0 + 1e-12), eps_t)
        if eps == eps_t:
            break
    return k, eps

