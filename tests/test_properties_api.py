"""Property-based tests of the newer API (hypothesis, small examples): certificates, robustness,
rank statistics.

* certificates: ``kl_inverse`` is monotone in both arguments and >= q; the risk certificate and
  the Dziugaite-Roy bound are >= the empirical error, monotone in KL, error, n and delta, and
  below their Pinsker relaxation; the sample-convergence bound is >= the Monte-Carlo error and
  shrinks with N; ``diag_gaussian_kl(Q, Q)`` is exactly 0.
* robustness (a linear classifier, where the certified radius is the exact distance to the
  boundary): every point PGD finds misclassified lies at least the certified radius away; the
  attacks' points stay in the ball and the box.
* Kendall: tau in [-1, 1], antisymmetric, invariant under strictly increasing maps of either
  variable, with +-inf ranked as ordered values.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from genbounds import adversarial, kl_inverse, measures, pacbayes

FAST = settings(max_examples=25, deadline=None)
probs = st.floats(0.0, 1.0)
errs = st.floats(0.0, 0.9)
kls = st.floats(0.0, 1e4)
ns = st.integers(8, 10**6)
deltas = st.floats(1e-4, 0.5)


# -- certificates ------------------------------------------------------------------------------


@FAST
@given(q=probs, c1=st.floats(0.0, 5.0), c2=st.floats(0.0, 5.0), dq=st.floats(0.0, 0.5))
def test_kl_inverse_monotone_and_above_q(q, c1, c2, dq):
    lo, hi = sorted((c1, c2))
    a, b = float(kl_inverse(q, lo)), float(kl_inverse(q, hi))
    assert q - 1e-12 <= a <= b + 1e-12 <= 1.0 + 1e-12
    q2 = min(1.0, q + dq)
    assert float(kl_inverse(q2, lo)) >= a - 1e-9


@FAST
@given(kl=kls, dkl=st.floats(0.0, 100.0), e=errs, de=st.floats(0.0, 0.1), n=ns,
       delta=deltas)
def test_risk_certificate_from_terms_bounds_and_monotone(kl, dkl, e, de, n, delta):
    f = pacbayes.risk_certificate_from_terms
    b = f(kl=kl, error=e, n=n, delta=delta)
    assert e - 1e-12 <= b <= 1.0 + 1e-12
    assert f(kl=kl + dkl, error=e, n=n, delta=delta) >= b - 1e-12
    assert f(kl=kl, error=min(1.0, e + de), n=n, delta=delta) >= b - 1e-12
    assert f(kl=kl, error=e, n=2 * n, delta=delta) <= b + 1e-12
    assert f(kl=kl, error=e, n=n, delta=min(0.99, 2 * delta)) <= b + 1e-12
    # Pinsker: kl^{-1}(q, c) <= q + sqrt(c / 2) with c = (KL + ln(2 sqrt n / delta)) / n.
    c = (kl + math.log(2 * math.sqrt(n) / delta)) / n
    assert b <= e + math.sqrt(c / 2) + 1e-9


@FAST
@given(kl=kls, e=errs, n=st.integers(2, 10**6), j=st.integers(1, 10**4), delta=deltas)
def test_dziugaite_roy_from_terms_bounds(kl, e, n, j, delta):
    r = pacbayes.dziugaite_roy_from_terms(kl=kl, error=e, n=n, j=j, delta=delta)
    assert e - 1e-12 <= r["bound"] <= min(1.0, r["pinsker"]) + 1e-9
    r2 = pacbayes.dziugaite_roy_from_terms(kl=kl, error=e, n=n, j=j + 1, delta=delta)
    assert r2["bound"] >= r["bound"] - 1e-12 and r2["b_re"] > r["b_re"]


@FAST
@given(e=errs, n=st.integers(1, 10**6), dp=deltas)
def test_sample_convergence_bound_above_the_estimate(e, n, dp):
    b = pacbayes.sample_convergence_bound(e, num_samples=n, delta_prime=dp)
    assert e - 1e-12 <= b <= 1.0 + 1e-12
    assert pacbayes.sample_convergence_bound(e, num_samples=4 * n, delta_prime=dp) <= b + 1e-12


@FAST
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 5000), sp=st.floats(1e-4, 1e3))
def test_kl_of_q_with_itself_is_exactly_zero(seed, k, sp):
    w = {"w": jnp.asarray(np.random.default_rng(seed).normal(size=k))}
    q = pacbayes.DiagonalGaussian(w, {"w": jnp.full(k, sp)})
    assert pacbayes.diag_gaussian_kl(q, w, sp * sp) == 0.0
    # ... and >= 0 for any other prior variance.
    assert pacbayes.diag_gaussian_kl(q, w, 1.5 * sp * sp) > 0.0


# -- robustness --------------------------------------------------------------------------------


def linear(p, x):
    return x @ p["Dense_0"]["kernel"]


# l_inf in the default run; l_2 adds two more attack compilations (~8 s), marked slow.
@pytest.mark.parametrize("norm", ["linf", pytest.param("l2", marks=pytest.mark.slow)])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), eps=st.floats(0.05, 1.5))
def test_certified_radius_below_pgd_distance_and_attacks_stay_in_ball_and_box(norm, seed, eps):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(3, 3)).astype(np.float32)
    X = rng.uniform(-1.0, 1.0, size=(8, 3)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    params = {"Dense_0": {"kernel": W}}
    r = adversarial.certified_radius(params, X=X, y=y, apply_fn=linear, norm=norm)
    box = (-1.0, 1.0)
    for attack in ("pgd", "fgsm"):
        kw = {"steps": 10, "key": jax.random.key(seed)} if attack == "pgd" else {}
        a = getattr(adversarial, attack)(params, X=X, y=y, apply_fn=linear, eps=eps, norm=norm,
                                         box=box, **kw)
        d = a.x_adv.astype(np.float64) - X
        dist = np.max(np.abs(d), axis=1) if norm == "linf" else np.linalg.norm(d, axis=1)
        assert np.all(dist <= eps * (1 + 1e-5) + 1e-6)  # in the ball
        assert np.all(a.x_adv >= box[0] - 1e-6) and np.all(a.x_adv <= box[1] + 1e-6)
        broken = ~a.robust & (r.margins > 0)  # correctly classified, then broken
        # The certified radius is no larger than the distance of a misclassified point
        # (float32 margins: a relative slack of 1e-4).
        assert np.all(r.radius[broken] <= dist[broken] * (1 + 1e-4) + 1e-5)
        assert not np.any((r.radius > eps * (1 + 1e-4) + 1e-5) & ~a.robust)


# -- Kendall -----------------------------------------------------------------------------------

vals = st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=12)


def _increasing(v, data):
    """A strictly increasing map of the distinct values of `v`, drawn."""
    u = np.unique(v)
    steps = data.draw(st.lists(st.floats(1e-3, 1e3), min_size=len(u), max_size=len(u)))
    return np.cumsum(steps)[np.searchsorted(u, v)] - 50.0


@FAST
@given(data=st.data(), x=vals)
def test_kendall_range_antisymmetry_invariance(data, x):
    g = data.draw(st.lists(st.floats(-1.0, 1.0), min_size=len(x), max_size=len(x)))
    x, g = np.asarray(x), np.asarray(g)
    for variant in ("a", "b"):
        t = measures.kendall_tau(x, g, variant=variant)
        if variant == "b" and math.isnan(t):  # tau_b of a constant variable
            assume(False)
        assert -1.0 - 1e-12 <= t <= 1.0 + 1e-12
        assert measures.kendall_tau(-x, g, variant=variant) == -t
        assert measures.kendall_tau(g, x, variant=variant) == t
        # strictly increasing maps of either variable keep every pair's sign (drawn as an
        # increasing sequence on the distinct values, so that no rounding merges two of them)
        assert measures.kendall_tau(_increasing(x, data), g, variant=variant) == t
        assert measures.kendall_tau(x, _increasing(g, data), variant=variant) == t


@FAST
@given(x=st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=10, unique=True),
       g=st.lists(st.floats(-1.0, 1.0), min_size=10, max_size=10))
def test_kendall_infinities_are_ordered_values(x, g):
    x = np.asarray(x)
    g = np.asarray(g[: len(x)])
    t = measures.kendall_tau(x, g)
    hi, lo = np.argmax(x), np.argmin(x)
    y = x.copy()
    y[hi], y[lo] = np.inf, -np.inf  # the extremes become infinite: the ranks do not change
    assert measures.kendall_tau(y, g) == t
    hp = {"a": list(np.arange(len(x)) % 2), "b": list(np.arange(len(x)) // 2)}
    g1, g2 = measures.granulated_kendall(x, g, hp), measures.granulated_kendall(y, g, hp)
    assert g1.per_axis == g2.per_axis and g1.num_groups == g2.num_groups
    assert len(g2.notes) >= 1
