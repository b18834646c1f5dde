"""Generalisation bounds from a Rademacher complexity (Mohri et al. Thm 3.3; BFT Lemma 3.1)."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genbounds.bounds import margin_rademacher_bound, rademacher_bound

HYP = settings(max_examples=80, deadline=None)


def empirical_ref(train_loss, rad, n, delta):
    """E g <= E_S g + 2 Rad_S + 3 sqrt(ln(2/delta) / (2n)) (empirical complexity)."""
    return train_loss + 2 * rad + 3 * np.sqrt(np.log(2 / delta) / (2 * n))


def expected_ref(train_loss, rad, n, delta):
    """E g <= E_S g + 2 Rad_n + sqrt(ln(1/delta) / (2n)) (expected complexity)."""
    return train_loss + 2 * rad + np.sqrt(np.log(1 / delta) / (2 * n))


def test_both_forms_match_reference():
    rng = np.random.default_rng(0)
    for _ in range(50):
        loss, rad = rng.uniform(0, 1), rng.uniform(0, 2)
        n, delta = int(rng.integers(1, 10**6)), rng.uniform(1e-6, 0.99)
        emp = rademacher_bound(rad, n=n, delta=delta, train_loss=loss)
        exp = rademacher_bound(rad, n=n, delta=delta, train_loss=loss, empirical=False)
        assert emp.value == pytest.approx(empirical_ref(loss, rad, n, delta), rel=1e-12)
        assert exp.value == pytest.approx(expected_ref(loss, rad, n, delta), rel=1e-12)
        assert emp.complexity == rad and emp.n == n and emp.delta == delta
        assert not emp.estimated


def test_empirical_form_is_the_conservative_one():
    # BFT's Lemma 3.1 prints ln(1/delta) in the empirical form; we use ln(2/delta).
    b = rademacher_bound(0.05, n=10_000, delta=0.05, train_loss=0.02)
    bft_printed = 0.02 + 2 * 0.05 + 3 * math.sqrt(math.log(1 / 0.05) / (2 * 10_000))
    assert b.value > bft_printed
    assert b.value == pytest.approx(0.02 + 0.1 + 3 * math.sqrt(math.log(40) / 20_000), rel=1e-14)
    # the empirical form always costs more than the expected one at equal complexity
    assert b.value > rademacher_bound(0.05, n=10_000, train_loss=0.02, empirical=False).value


def _exact_empirical_rademacher(values):
    """(1/n) E_sigma max_g sum_i sigma_i g(z_i), by enumerating all 2^n sign vectors."""
    values = np.asarray(values, np.float64)  # (num_functions, n)
    n = values.shape[1]
    total = 0.0
    for signs in itertools.product((-1.0, 1.0), repeat=n):
        total += np.max(values @ np.array(signs))
    return total / (2**n * n)


def test_bound_from_an_enumerated_complexity():
    # Loss class of thresholds on 6 sorted points: g_t(z_i) = 1[i < t]; an exact complexity.
    n = 6
    values = np.array([[1.0 if i < t else 0.0 for i in range(n)] for t in range(n + 1)])
    rad = _exact_empirical_rademacher(values)
    assert 0 < rad < 0.5
    b = rademacher_bound(rad, n=n, delta=0.1, train_loss=0.0)
    assert b.value == pytest.approx(empirical_ref(0.0, rad, n, 0.1), rel=1e-12)
    # a single function has complexity 0: only the concentration term remains
    assert _exact_empirical_rademacher(values[:1]) == 0.0


def test_estimated_complexity_charges_its_delta():
    b = rademacher_bound(0.05, n=1000, delta=0.05, train_loss=0.1, rademacher_delta=0.01)
    assert b.estimated and b.delta == 0.05
    assert b.terms["delta_concentration"] == pytest.approx(0.04)
    assert b.value == pytest.approx(empirical_ref(0.1, 0.05, 1000, 0.04), rel=1e-12)
    assert b.value > rademacher_bound(0.05, n=1000, delta=0.05, train_loss=0.1).value
    flagged = rademacher_bound(0.05, n=1000, train_loss=0.1, estimated=True)
    assert flagged.estimated and any("not a certified" in note for note in flagged.notes)


def test_values_are_not_clipped():
    b = rademacher_bound(0.6, n=10, train_loss=0.5)
    assert b.value > 1 and b.vacuous


@HYP
@given(
    rad=st.floats(0, 1),
    loss=st.floats(0, 1),
    n1=st.integers(1, 10**7),
    n2=st.integers(1, 10**7),
    d1=st.floats(1e-8, 0.99),
    d2=st.floats(1e-8, 0.99),
    empirical=st.booleans(),
)
def test_monotone_in_n_delta_and_complexity(rad, loss, n1, n2, d1, d2, empirical):
    n1, n2 = sorted((n1, n2))
    d1, d2 = sorted((d1, d2))

    def f(n, delta, r=rad):
        return rademacher_bound(r, n=n, delta=delta, train_loss=loss, empirical=empirical).value

    assert f(n2, d1) <= f(n1, d1) + 1e-15  # non-increasing in n
    assert f(n1, d1) >= f(n1, d2) - 1e-15  # non-decreasing as delta shrinks
    assert f(n1, d1, rad) <= f(n1, d1, rad + 0.1)


def test_margin_rademacher_bound():
    b = margin_rademacher_bound(0.05, n=10_000, delta=0.05, ramp_loss=0.02, margin=1.5)
    assert b.name == "margin_rademacher"
    assert b.value == pytest.approx(empirical_ref(0.02, 0.05, 10_000, 0.05), rel=1e-12)
    assert b.terms["margin"] == 1.5 and b.terms["ramp_loss"] == 0.02
    assert b.value == rademacher_bound(0.05, n=10_000, delta=0.05, train_loss=0.02).value
    est = margin_rademacher_bound(0.05, n=100, ramp_loss=0.0, rademacher_delta=0.01)
    assert est.estimated and "margin" not in est.terms


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n": 100, "delta": 0.0, "train_loss": 0.1}, ValueError, "delta must lie in"),
        ({"n": 100, "delta": 1.0, "train_loss": 0.1}, ValueError, "delta must lie in"),
        ({"n": 0, "train_loss": 0.1}, ValueError, "n must be an integer >= 1"),
        ({"n": 100, "train_loss": 1.5}, ValueError, "train_loss must lie in"),
        ({"n": 100, "train_loss": float("nan")}, ValueError, "train_loss must not be NaN"),
        ({"n": 100, "train_loss": 0.1, "rademacher_delta": 0.05}, ValueError, "rademacher_delta"),
        ({"n": 100, "train_loss": 0.1, "rademacher_delta": 0.0}, ValueError, "rademacher_delta"),
        ({"n": 100, "train_loss": 0.1, "empirical": 1}, TypeError, "empirical"),
    ],
)
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rademacher_bound(0.1, **kwargs)


def test_bad_complexity_and_margin():
    with pytest.raises(ValueError, match="rademacher must be"):
        rademacher_bound(-0.1, n=10, train_loss=0.1)
    with pytest.raises(ValueError, match="rademacher must not be NaN"):
        rademacher_bound(float("nan"), n=10, train_loss=0.1)
    with pytest.raises(TypeError, match="rademacher must be a scalar"):
        rademacher_bound(np.ones(2), n=10, train_loss=0.1)
    for gamma in (0.0, -1.0):
        with pytest.raises(ValueError, match="margin must be"):
            margin_rademacher_bound(0.1, n=10, ramp_loss=0.1, margin=gamma)
