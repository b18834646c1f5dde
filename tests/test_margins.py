"""Margins, margin losses and the choice of gamma, against float64 numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from genbounds.losses import (
    SelectedMargin,
    margin_loss,
    margin_quantile,
    margins,
    ramp_loss,
    select_margin,
)

HYP = settings(max_examples=40, deadline=None)


def margins_ref(logits, y):
    """f(x)_y - max_{j != y} f(x)_j, by a Python loop (BFT's margin operator)."""
    out = []
    for row, label in zip(np.asarray(logits, np.float64), np.asarray(y), strict=True):
        others = [v for j, v in enumerate(row) if j != label]
        out.append(row[label] - max(others))
    return np.array(out)


def ramp_ref(m, gamma):
    """BFT's l_gamma(r) at r = -M: 0 for r < -gamma, 1 + r/gamma on [-gamma, 0], 1 for r > 0."""
    vals = []
    for r in -np.asarray(m, np.float64):
        if r < -gamma:
            vals.append(0.0)
        elif r <= 0:
            vals.append(1.0 + r / gamma)
        else:
            vals.append(1.0)
    return float(np.mean(vals))


# ----------------------------------------------------------------------------------------------
# margins


def test_margins_match_reference_multiclass():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 7))
    y = rng.integers(0, 7, 50)
    np.testing.assert_allclose(np.asarray(margins(logits, y)), margins_ref(logits, y), rtol=1e-12)


def test_margins_positive_exactly_when_correct():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 4))
    y = rng.integers(0, 4, 200)
    m = np.asarray(margins(logits, y))
    np.testing.assert_array_equal(m > 0, np.argmax(logits, axis=1) == y)
    tie = np.array([[1.0, 1.0, 0.0]])
    assert float(margins(tie, np.array([0]))[0]) == 0.0  # a tie is not a positive margin


def test_margins_binary_convention():
    s = np.array([2.0, -0.5, 0.0, 3.0])
    y = np.array([1, 1, 0, 0])
    expected = np.array([2.0, -0.5, 0.0, -3.0])  # (2y - 1) s
    np.testing.assert_array_equal(np.asarray(margins(s, y)), expected)
    np.testing.assert_array_equal(np.asarray(margins(s[:, None], y)), expected)
    # the same as the two-class logits (0, s)
    two = np.stack([np.zeros_like(s), s], axis=1)
    np.testing.assert_array_equal(np.asarray(margins(two, y)), expected)


def test_margins_jit_no_recompile():
    traces = []

    def f(logits, y):
        traces.append(1)
        return margins(logits, y)

    jf = jax.jit(f)
    rng = np.random.default_rng(2)
    a = jf(jnp.asarray(rng.normal(size=(8, 3))), jnp.asarray(rng.integers(0, 3, 8)))
    lg, yy = rng.normal(size=(8, 3)), rng.integers(0, 3, 8)
    b = jf(jnp.asarray(lg), jnp.asarray(yy))
    assert len(traces) == 1 and a.shape == (8,)
    np.testing.assert_allclose(np.asarray(b), margins_ref(lg, yy), rtol=1e-12)


@pytest.mark.parametrize(
    ("logits", "y", "exc", "match"),
    [
        (np.ones((3, 2)), np.array([0, 1]), ValueError, "same number of examples"),
        (np.array([[np.nan, 1.0]]), np.array([0]), ValueError, "logits must be finite"),
        (np.array([[np.inf, 1.0]]), np.array([0]), ValueError, "logits must be finite"),
        (np.ones((2, 3)), np.array([0, 3]), ValueError, "y must hold labels"),
        (np.ones((2, 3)), np.array([0, -1]), ValueError, "y must hold labels"),
        (np.ones(2), np.array([0, 2]), ValueError, "y must hold labels"),
        (np.ones((2, 3)), np.array([0.5, 1.0]), TypeError, "integer class labels"),
        (np.ones((2, 3, 1)), np.array([0, 1]), ValueError, "logits must have rank"),
        (np.ones((2, 3)), np.array([[0, 1]]), ValueError, "y must have rank"),
    ],
)
def test_margins_bad_input(logits, y, exc, match):
    with pytest.raises(exc, match=match):
        margins(logits, y)


# ----------------------------------------------------------------------------------------------
# margin_loss and ramp_loss


def test_losses_match_reference():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(300, 5))
    y = rng.integers(0, 5, 300)
    m = margins_ref(logits, y)
    for gamma in (0.01, 0.3, 1.0, 5.0):
        assert float(margin_loss(logits, gamma, y=y)) == pytest.approx(np.mean(m <= gamma))
        assert float(margin_loss(m, gamma)) == pytest.approx(np.mean(m <= gamma))
        assert float(ramp_loss(logits, gamma, y=y)) == pytest.approx(ramp_ref(m, gamma), rel=1e-12)


def test_losses_accept_an_array_of_margins():
    m = np.array([-1.0, 0.5, 1.0, 3.0])
    gammas = np.array([0.5, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(
        np.asarray(margin_loss(m, gammas)), [np.mean(m <= g) for g in gammas]
    )
    np.testing.assert_allclose(
        np.asarray(ramp_loss(m, gammas)), [ramp_ref(m, g) for g in gammas], rtol=1e-12
    )


@HYP
@given(
    m=hnp.arrays(np.float64, 25, elements=st.floats(-10, 10)),  # one shape: one compile
    g1=st.floats(1e-3, 10),
    g2=st.floats(1e-3, 10),
)
def test_loss_orderings_and_monotone_in_gamma(m, g1, g2):
    g1, g2 = sorted((g1, g2))
    err = float(np.mean(m <= 0))
    r1, r2 = float(ramp_loss(m, g1)), float(ramp_loss(m, g2))
    l1, l2 = float(margin_loss(m, g1)), float(margin_loss(m, g2))
    assert err - 1e-12 <= r1 <= l1 + 1e-12  # 0-1 error <= ramp <= margin loss
    assert r1 <= r2 + 1e-12 and l1 <= l2  # non-decreasing in gamma


@pytest.mark.parametrize("fn", [margin_loss, ramp_loss])
@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), float("inf")])
def test_losses_reject_bad_margin(fn, gamma):
    with pytest.raises(ValueError, match="margin"):
        fn(np.array([0.5, 1.0]), gamma)


def test_losses_reject_bad_margins_array():
    with pytest.raises(ValueError, match="margins must be finite"):
        margin_loss(np.array([0.5, np.nan]), 1.0)
    with pytest.raises(ValueError, match="margin must be > 0"):
        ramp_loss(np.array([0.5, 1.0]), np.array([1.0, 0.0]))


# ----------------------------------------------------------------------------------------------
# margin_quantile and select_margin


def test_margin_quantile_follows_jiang_kthvalue():
    rng = np.random.default_rng(4)
    for n in (10, 57, 1000, 1234):
        m = rng.uniform(0.1, 5.0, n)
        # torch.kthvalue(k) is the k-th smallest, 1-based; Jiang et al. use k = m // 10.
        assert float(margin_quantile(m, 0.1)) == np.sort(m)[n // 10 - 1]
        assert float(margin_quantile(m, 0.05)) == np.sort(m)[max(n // 20, 1) - 1]


def test_margin_quantile_rank_is_exact_for_decimal_levels():
    m = np.arange(1.0, 101.0)  # 0.29 * 100 is 28.999999999999996 in floats: k must be 29
    assert float(margin_quantile(m, 0.29)) == 29.0
    assert float(margin_quantile(np.arange(1.0, 6.0), 0.1)) == 1.0  # q n < 1: the smallest


def test_margin_quantile_nonpositive_is_an_error_not_abs():
    m = np.array([-3.0, -2.0, -1.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    with pytest.raises(ValueError, match=r"<= 0.*30\.0% of the training examples"):
        margin_quantile(m, 0.1)
    assert float(margin_quantile(m, 0.4)) == 0.5
    with pytest.raises(ValueError, match="<= 0"):
        margin_quantile(np.array([0.0, 1.0]), 0.5)


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5])
def test_margin_quantile_bad_level(q):
    with pytest.raises(ValueError, match="margin_quantile must lie in"):
        margin_quantile(np.array([1.0, 2.0]), q)


def test_select_margin():
    m = np.arange(1.0, 21.0)
    s = select_margin(m, margin_quantile=0.1)
    assert isinstance(s, SelectedMargin)
    gamma, note = s  # unpacks as (margin, note)
    assert gamma == 2.0 and "floor(q n) = 2" in note and "0.1-quantile" in note
    default = select_margin(m)  # neither given: the 10% quantile
    assert default.margin == 2.0 and "(the default)" in default.note
    assert select_margin(m, margin_quantile=0.05).margin == 1.0
    e = select_margin(margin=0.25)
    assert e == (0.25, "margin 0.25 given explicitly")
    with pytest.raises(ValueError, match="at most one"):
        select_margin(m, margin=1.0, margin_quantile=0.1)
    with pytest.raises(ValueError, match="margins"):
        select_margin(margin_quantile=0.1)
    with pytest.raises(ValueError, match="margin must be"):
        select_margin(margin=0.0)
    with pytest.raises(ValueError, match="<= 0"):
        select_margin(-m)


def test_losses_with_logits_and_labels_by_keyword():
    logits = np.array([[2.0, 0.0], [0.0, 0.5], [1.0, 1.0]])
    y = np.array([0, 1, 0])
    assert float(margin_loss(logits, 1.0, y=y)) == pytest.approx(2 / 3)  # margins 2, 0.5, 0
    with pytest.raises(TypeError):
        margin_loss(logits, y, margin=1.0)  # margin is the second argument
