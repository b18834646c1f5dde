"""Bernoulli KL, its inverse, and the PAC-Bayes-kl / McAllester bounds.

References are float64 numpy/scipy (tests/helpers.py and the 80-digit decimal references
below), written from the formulas independently of genbounds.
"""

import math
from decimal import Decimal, getcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import kl_bernoulli_ref as kl_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from genbounds.internal import kl_inverse_core
from genbounds.pacbayes import kl_bernoulli, kl_inverse, mcallester_bound, pac_bayes_kl_bound

HYP = settings(max_examples=60, deadline=None)
probs = st.floats(0.0, 1.0, allow_nan=False)
divs = st.floats(0.0, 5.0, allow_nan=False)


getcontext().prec = 80
_ONE = Decimal(1)


def _dec_log_ratio(num, den, diff):
    """ln(num/den) in decimal, diff = num - den computed from q and p directly; a series in
    diff/den when the ratio is within 1e-20 of 1 (num/den or 1 - p would round at 80 digits)."""
    x = diff / den
    if abs(x) < Decimal("1e-20"):
        return x - x * x / 2 + x * x * x / 3
    return (num / den).ln()


def kl_exact(q, p):
    """kl(q||p) in 80-digit decimal arithmetic, from the exact values of the floats q and p."""
    q = Decimal(float(q))
    p = p if isinstance(p, Decimal) else Decimal(float(p))
    if q == 0:
        t1 = Decimal(0)
    else:
        t1 = q * _dec_log_ratio(q, p, q - p) if p > 0 else Decimal("Infinity")
    if q == 1:
        t2 = Decimal(0)
    else:
        t2 = (
            (_ONE - q) * _dec_log_ratio(_ONE - q, _ONE - p, p - q) if p < 1 else Decimal("Infinity")
        )
    return t1 + t2


def kl_inverse_exact(q, c):
    """sup{p in [q, 1]: kl(q||p) <= c} by 250 decimal bisection steps (to ~1e-75)."""
    cd = Decimal(float(c))
    lo, hi = Decimal(float(q)), _ONE
    for _ in range(250):
        mid = (lo + hi) / 2
        if kl_exact(q, mid) <= cd:
            lo = mid
        else:
            hi = mid
    return lo


# ----------------------------------------------------------------------------------------------
# kl_bernoulli


def test_kl_bernoulli_matches_scipy_on_a_grid():
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 1, 200)
    p = rng.uniform(0, 1, 200)
    np.testing.assert_allclose(np.asarray(kl_bernoulli(q, p)), kl_ref(q, p), rtol=1e-10)


def test_kl_bernoulli_accurate_near_p_equal_q():
    # kl ~ d^2 / (2 q (1 - q)) for p = q + d: the relative error stays ~1e-16 / d.
    for q in (0.03, 0.5, 0.9):
        for d in (1e-9, 1e-6, 1e-3):
            got = float(kl_bernoulli(q, q + d))
            ref = float(kl_exact(q, q + d))
            assert got == pytest.approx(ref, rel=1e-5)


def test_kl_bernoulli_edges():
    assert float(kl_bernoulli(0.0, 0.0)) == 0.0
    assert float(kl_bernoulli(1.0, 1.0)) == 0.0
    assert float(kl_bernoulli(0.3, 0.3)) == pytest.approx(0.0, abs=1e-15)
    assert float(kl_bernoulli(0.0, 0.5)) == pytest.approx(math.log(2.0), rel=1e-14)
    assert math.isinf(float(kl_bernoulli(0.5, 0.0))) and math.isinf(float(kl_bernoulli(0.5, 1.0)))
    # Tiny p: ln(1 - p) must not round to 0.
    assert float(kl_bernoulli(0.0, 1e-20)) == pytest.approx(1e-20, rel=1e-12)


def test_kl_bernoulli_bad_input():
    with pytest.raises(ValueError, match="q must lie in"):
        kl_bernoulli(1.5, 0.5)
    with pytest.raises(ValueError, match="p must not be NaN"):
        kl_bernoulli(0.5, float("nan"))
    with pytest.raises(TypeError, match="q"):
        kl_bernoulli("0.5", 0.5)


# ----------------------------------------------------------------------------------------------
# kl_inverse


def test_kl_inverse_oracle_and_pinsker():
    # formulas.md section 11: kl^-1(0.03, 0.1) = 0.1708495; Pinsker gives 0.2536068.
    assert float(kl_inverse(0.03, 0.1)) == pytest.approx(0.1708495, abs=5e-8)
    assert 0.03 + math.sqrt(0.1 / 2) == pytest.approx(0.2536068, abs=5e-8)


def test_kl_inverse_never_below_and_close_to_exact_supremum():
    rng = np.random.default_rng(1)
    qs = np.concatenate(
        [
            [0.0, 1e-6, 0.5, 0.999, 0.009227566498386039],
            rng.uniform(0, 1, 30),
            10 ** rng.uniform(-12, 0, 15),
            1 - 10 ** rng.uniform(-12, -0.3, 15),
        ]
    )
    cs = np.concatenate(
        [[1e-9, 1e-3, 0.1, 2.0, 0.0013517829651641113], 10 ** rng.uniform(-40, 1.5, 60)]
    )
    got = np.asarray(kl_inverse(qs, cs))
    for q, c, p in zip(qs, cs, got, strict=True):
        ref = kl_inverse_exact(q, c)
        assert Decimal(float(p)) >= ref  # never below the supremum
        assert float((Decimal(float(p)) - ref) / max(ref, Decimal("1e-300"))) <= 1e-13


def test_kl_inverse_q_zero_closed_form():
    # kl(0 || p) = -ln(1 - p), so the inverse is 1 - exp(-c), also for tiny c.
    c = np.array([1e-300, 1e-30, 1e-8, 0.01, 1.0, 10.0])
    np.testing.assert_allclose(np.asarray(kl_inverse(0.0, c)), -np.expm1(-c), rtol=1e-14)


def test_kl_inverse_edge_cases():
    assert float(kl_inverse(0.37, 0.0)) == 0.37
    assert float(kl_inverse(1.0, 0.5)) == 1.0
    assert float(kl_inverse(0.2, 1e4)) == 1.0
    assert float(kl_inverse(0.2, float("inf"))) == 1.0
    assert float(kl_inverse(0.0, 0.0)) == 0.0


def test_kl_inverse_broadcasts_and_matches_scalar_calls():
    q = jnp.array([[0.0], [0.1], [0.6]])
    c = jnp.array([0.0, 0.01, 0.5, 3.0])
    out = kl_inverse(q, c)
    assert out.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert float(out[i, j]) == float(kl_inverse(float(q[i, 0]), float(c[j])))


def test_kl_inverse_jits_without_recompiling():
    traces = []

    def f(q, c):
        traces.append(1)
        return kl_inverse(q, c)

    jf = jax.jit(f)
    a = jf(jnp.array([0.03, 0.2]), jnp.array([0.1, 0.1]))
    b = jf(jnp.array([0.05, 0.3]), jnp.array([0.2, 0.01]))
    assert len(traces) == 1
    np.testing.assert_array_equal(np.asarray(a), np.asarray(kl_inverse([0.03, 0.2], [0.1, 0.1])))
    assert b.shape == (2,)


def test_kl_inverse_float32():
    # float32 inputs are computed in float64 (x64 is on in the tests: the result is float64).
    q32, c32 = np.float32(0.03), np.float32(0.1)
    p = kl_inverse(q32, c32)
    assert p.dtype == jnp.float64
    assert float(p) == float(kl_inverse(np.float64(q32), np.float64(c32)))
    assert Decimal(float(p)) >= kl_inverse_exact(float(q32), float(c32))


def test_kl_inverse_without_x64_rounds_the_float64_result_up():
    with jax.enable_x64(False):
        p = kl_inverse(0.03, 0.1)
    assert p.dtype == jnp.float32
    exact = kl_inverse_exact(0.03, 0.1)  # Python floats enter as float64
    assert Decimal(float(p)) >= exact
    # at most one float32 ulp above the supremum (float32 bisection was up to ~4e-6 above)
    assert float(p) - float(exact) <= float(np.spacing(np.float32(float(exact))))


@HYP
@given(q=probs, c=divs)
def test_kl_inverse_properties(q, c):
    p = float(kl_inverse(q, c))
    assert q <= p <= 1.0
    assert p <= q + math.sqrt(c / 2.0) + 1e-13  # Pinsker (+ the documented 3e-14 excess)
    k = float(kl_exact(q, p))
    if p < 1.0:
        assert k >= c  # not below the supremum: kl is increasing on [q, 1]
        if p < 0.99:
            assert abs(k - c) <= 1e-12


@HYP
@given(q1=probs, q2=probs, c1=divs, c2=divs)
def test_kl_inverse_monotone(q1, q2, c1, c2):
    q1, q2 = sorted((q1, q2))
    c1, c2 = sorted((c1, c2))
    assert float(kl_inverse(q1, c1)) <= float(kl_inverse(q2, c1))
    assert float(kl_inverse(q1, c1)) <= float(kl_inverse(q1, c2))


def test_kl_inverse_core_does_not_raise():
    # The jittable core does no validation: bad values come back as data, the wrapper raises.
    assert float(kl_inverse_core(0.03, 0.1)) == float(kl_inverse(0.03, 0.1))
    kl_inverse_core(0.03, float("nan"))  # no exception


@pytest.mark.parametrize(
    ("q", "c", "exc", "match"),
    [
        (-0.1, 0.1, ValueError, "q must lie in"),
        (1.1, 0.1, ValueError, "q must lie in"),
        (float("nan"), 0.1, ValueError, "q must not be NaN"),
        (0.1, -1e-3, ValueError, "c must be >= 0"),
        (0.1, float("nan"), ValueError, "c must not be NaN"),
        (0.1, None, TypeError, "c must be"),
        ("a", 0.1, TypeError, "q must be"),
        ([0.1, 2.0], 0.1, ValueError, "q must lie in"),
    ],
)
def test_kl_inverse_bad_input(q, c, exc, match):
    with pytest.raises(exc, match=match):
        kl_inverse(q, c)


# ----------------------------------------------------------------------------------------------
# PAC-Bayes-kl (Maurer) and McAllester forms


def maurer_ref(e, kl, n, delta):
    rhs = (kl + np.log(2.0 * np.sqrt(n) / delta)) / n  # ln(2 sqrt(n)/delta): one logarithm
    return float(kl_inverse_exact(e, rhs)), rhs


def test_pac_bayes_kl_matches_reference():
    rng = np.random.default_rng(2)
    for _ in range(30):
        e, kl = rng.uniform(0, 0.5), rng.uniform(0, 5000)
        n, delta = int(rng.integers(8, 100_000)), rng.uniform(1e-4, 0.5)
        b = pac_bayes_kl_bound(e, kl, n=n, delta=delta)
        ref, rhs = maurer_ref(e, kl, n, delta)
        assert b.value == pytest.approx(ref, rel=1e-10)
        assert b.terms["rhs"] == pytest.approx(rhs, rel=1e-12)
        assert b.complexity == kl and b.n == n and b.delta == delta and b.name == "pac_bayes_kl"


def test_pac_bayes_kl_log_term_has_delta_inside_one_log():
    b = pac_bayes_kl_bound(0.03, 100.0, n=10_000, delta=0.05)
    assert b.terms["log_term"] == pytest.approx(math.log(4000.0), rel=1e-14)
    # The misreading ln(2 sqrt n) / delta (seen in a peer library) gives a different number.
    wrong_rhs = (100.0 + math.log(200.0) / 0.05) / 10_000
    assert abs(b.terms["rhs"] - wrong_rhs) > 1e-3
    ref = float(kl_inverse_exact(0.03, (100.0 + math.log(4000.0)) / 1e4))
    assert b.value == pytest.approx(ref, rel=1e-10)


def test_mcallester_matches_reference_and_dominates_kl_form():
    rng = np.random.default_rng(3)
    for _ in range(30):
        e, kl = rng.uniform(0, 1), rng.uniform(0, 1000)
        n, delta = int(rng.integers(8, 50_000)), rng.uniform(1e-4, 0.5)
        m = mcallester_bound(e, kl, n=n, delta=delta)
        rhs = (kl + np.log(2.0 * np.sqrt(n) / delta)) / n
        assert m.value == pytest.approx(e + np.sqrt(rhs / 2.0), rel=1e-12)
        assert m.value >= pac_bayes_kl_bound(e, kl, n=n, delta=delta).value - 1e-15


def test_pac_bayes_values_are_not_clipped():
    b = mcallester_bound(0.4, 1e6, n=100, delta=0.05)
    assert b.value > 1 and b.vacuous
    assert pac_bayes_kl_bound(0.4, 1e6, n=100, delta=0.05).value == 1.0


@HYP
@given(
    e=st.floats(0.0, 1.0),
    kl=st.floats(0.0, 1e4),
    n1=st.integers(8, 10**6),
    n2=st.integers(8, 10**6),
    d1=st.floats(1e-6, 0.99),
    d2=st.floats(1e-6, 0.99),
)
def test_pac_bayes_monotone_in_n_and_delta(e, kl, n1, n2, d1, d2):
    n1, n2 = sorted((n1, n2))
    d1, d2 = sorted((d1, d2))
    for fn in (pac_bayes_kl_bound, mcallester_bound):
        # non-increasing in n
        assert fn(e, kl, n=n2, delta=d1).value <= fn(e, kl, n=n1, delta=d1).value + 1e-15
        # non-decreasing as delta shrinks
        assert fn(e, kl, n=n1, delta=d1).value >= fn(e, kl, n=n1, delta=d2).value - 1e-15


@pytest.mark.parametrize("fn", [pac_bayes_kl_bound, mcallester_bound])
@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((0.1, 1.0), {"n": 7}, ValueError, "n must be >= 8"),
        ((0.1, 1.0), {"n": 0}, ValueError, "n must be an integer >= 1"),
        ((0.1, 1.0), {"n": 100, "delta": 1.0}, ValueError, "delta must lie in"),
        ((0.1, 1.0), {"n": 100, "delta": 0.0}, ValueError, "delta must lie in"),
        ((1.1, 1.0), {"n": 100}, ValueError, "emp_error must lie in"),
        ((0.1, -1.0), {"n": 100}, ValueError, "kl must be"),
        ((0.1, float("nan")), {"n": 100}, ValueError, "kl must not be NaN"),
        ((0.1, np.ones(2)), {"n": 100}, TypeError, "kl must be a scalar"),
    ],
)
def test_pac_bayes_bad_input(fn, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def test_kl_inverse_subnormal_and_signed_zero_inputs():
    # XLA on CPU flushes subnormals inconsistently; the core rounds them up (sound).
    assert float(kl_inverse(2.2250738585e-313, 1.0)) >= 1 - math.exp(-1.0)
    assert float(kl_inverse(0.0, 5e-324)) >= 5e-324
    assert float(kl_inverse(0.3, -0.0)) == 0.3
    assert float(kl_inverse(-0.0, 0.1)) == pytest.approx(1 - math.exp(-0.1), rel=1e-13)
