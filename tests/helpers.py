"""Float64 references shared by the tests, written from the formulas, not from genbounds.

Plain functions on numpy/scipy in float64. Each test file imports what it needs from here
(``from helpers import kl_bernoulli_ref``) instead of keeping its own copy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, special

# ---------------------------------------------------------------------------------------------
# The Bernoulli kl and its inverse.
# ---------------------------------------------------------------------------------------------


def kl_bernoulli_ref(q, p):
    """kl(q || p) = q ln(q/p) + (1-q) ln((1-q)/(1-p)) from scipy's relative entropy
    (x ln(x/y), with its limits 0 ln 0 = 0 and +inf where y = 0 < x); broadcasts, float64."""
    return special.rel_entr(q, p) + special.rel_entr(1.0 - q, 1.0 - p)


def kl_inverse_ref(q, c):
    """sup{p in [q, 1]: kl(q || p) <= c} by plain float64 bisection (200 halvings); returns the
    upper end of the final bracket."""
    if kl_bernoulli_ref(q, 1.0 - 1e-300) <= c:
        return 1.0
    lo, hi = q, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if kl_bernoulli_ref(q, mid) <= c:
            lo = mid
        else:
            hi = mid
    return hi


# ---------------------------------------------------------------------------------------------
# The KL divergence between Gaussians.
# ---------------------------------------------------------------------------------------------


def gaussian_kl_ref(mu_q, sd_q, mu_p, sd_p):
    """KL(N(mu_q, diag sd_q^2) || N(mu_p, diag sd_p^2)), summed over coordinates of the 1-D
    closed form ln(sd_p/sd_q) + (sd_q^2 + (mu_q - mu_p)^2) / (2 sd_p^2) - 1/2; the arguments
    broadcast (a scalar sd_p is an isotropic prior), float64."""
    mu_q, sd_q = np.asarray(mu_q, np.float64), np.asarray(sd_q, np.float64)
    mu_p, sd_p = np.asarray(mu_p, np.float64), np.asarray(sd_p, np.float64)
    var_p = sd_p**2
    return float(np.sum(np.log(sd_p / sd_q) + (sd_q**2 + (mu_q - mu_p) ** 2) / (2 * var_p) - 0.5))


def gaussian_kl_quad(mu_q, sd_q, mu_p, sd_p):
    """1-D KL(N(mu_q, sd_q^2) || N(mu_p, sd_p^2)) by numerical integration of q ln(q/p) over
    mu_q +- 12 sd_q (no closed form used)."""

    def integrand(x):
        lq = -0.5 * ((x - mu_q) / sd_q) ** 2 - math.log(sd_q)
        lp = -0.5 * ((x - mu_p) / sd_p) ** 2 - math.log(sd_p)
        return math.exp(lq) / math.sqrt(2 * math.pi) * (lq - lp)

    return integrate.quad(
        integrand, mu_q - 12 * sd_q, mu_q + 12 * sd_q, epsabs=1e-13, epsrel=1e-12
    )[0]


# ---------------------------------------------------------------------------------------------
# User code under strict dtype promotion.
# ---------------------------------------------------------------------------------------------


def promoting(fn):
    """`fn` (a user's model: ``model.init``, ``model.apply``, a module's ``__call__`` under
    ``@nn.compact``, an optax update) run under jax's standard dtype promotion.

    The suite runs with ``jax_numpy_dtype_promotion="strict"`` (conftest.py), which is about the
    library's own arithmetic. A Flax layer with float32 parameters applied to float64 data (the
    default under ``jax_enable_x64``), Flax's ``avg_pool`` (divides by a numpy integer) and
    optax's Adam (a Python float to an int32 power) rely on implicit promotion inside user code;
    wrapping it keeps the numbers those of the standard mode while the library around it stays
    strict.
    """
    import functools

    import jax

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.numpy_dtype_promotion("standard"):
            return fn(*args, **kwargs)

    return wrapped
