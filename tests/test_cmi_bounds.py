"""Evaluated CMI bounds (`genbounds.cmi`): the plug-in MI against float64 references, the bounds
against the exact expected gap of deterministic learners with every mask enumerated.

With all 2^n masks of a supersample enumerated, the empirical distribution of (U, predictions)
is the exact conditional distribution, the plug-in MI is the exact disintegrated CMI, and the
mean gap over masks is the exact expected gap given the supersample: each theorem then says the
bound is >= that gap, with no estimation error in between.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genbounds import NotBoundable, cmi, kl_inverse


def mi_reference(v, u):
    """Plug-in MI (nats) of two discrete samples, by explicit sums over the joint table."""
    v, u = list(v), list(u)
    K = len(v)
    out = 0.0
    for a in set(v):
        for b in set(u):
            pab = sum(1 for x, y in zip(v, u, strict=True) if x == a and y == b) / K
            if pab == 0:
                continue
            pa = sum(1 for x in v if x == a) / K
            pb = sum(1 for y in u if y == b) / K
            out += pab * math.log(pab / (pa * pb))
    return out


def mi_of(values, masks):
    """MI per pair through the library: values (K, n) discrete, masks (K, n)."""
    sym = np.unique(values, return_inverse=True)[1].reshape(values.shape)
    return cmi.plugin_mi(sym[None], masks[None].astype(np.int64), int(sym.max()) + 1)[0]


def test_plugin_mi_closed_forms():
    u = np.array([0, 1, 0, 1] * 5)[:, None]
    assert mi_of(u.copy(), u)[0] == pytest.approx(math.log(2), rel=1e-12)  # V = U
    v = np.array([0, 0, 1, 1] * 5)[:, None]  # independent of U in the sample
    assert mi_of(v, u)[0] == pytest.approx(0.0, abs=1e-15)
    # A 2x2 table with counts [[3, 1], [1, 3]]: MI = ln 2 - H_b(1/4).
    v = np.array([0, 0, 0, 1, 1, 1, 1, 0])[:, None]
    uu = np.array([0, 0, 0, 0, 1, 1, 1, 1])[:, None]
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert mi_of(v, uu)[0] == pytest.approx(math.log(2) - h, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40).flatmap(lambda K: st.tuples(
    st.lists(st.integers(0, 4), min_size=K, max_size=K),
    st.lists(st.integers(0, 1), min_size=K, max_size=K))))
def test_plugin_mi_matches_reference_and_properties(vu):
    v, u = (np.array(a)[:, None] for a in vu)
    got = mi_of(v, u)[0]
    assert got == pytest.approx(mi_reference(v[:, 0], u[:, 0]), rel=1e-10, abs=1e-14)
    assert 0.0 <= got <= math.log(2) + 1e-15
    relabel = np.array([3, 0, 4, 1, 2])[v]  # a bijection of the symbols
    assert mi_of(relabel, u)[0] == pytest.approx(got, rel=1e-12, abs=1e-15)
    assert mi_of(v, 1 - u)[0] == pytest.approx(got, rel=1e-12, abs=1e-15)  # U relabelled


def test_bootstrap_weights_of_ones_equal_plain_counts():
    rng = np.random.default_rng(0)
    sym = rng.integers(0, 3, (2, 7, 5))
    m = rng.integers(0, 2, (2, 7, 5))
    plain = cmi.plugin_mi(sym, m, 3)
    weighted = cmi.plugin_mi(sym, m, 3, np.ones((1, 2, 7)))[0]
    np.testing.assert_allclose(weighted, plain, rtol=1e-13, atol=1e-15)


# --- learners on a 1-D task, every mask enumerated -------------------------------------------

def knn_predictions(x, y, k_nn):
    """Predictions (2^n, n, 2) of a k-NN learner (odd k) for every mask of the supersample
    (x, y) of shape (n, 2), with the masks (2^n, n)."""
    n = x.shape[0]
    masks = np.array(list(itertools.product([0, 1], repeat=n)))
    preds = np.zeros((len(masks), n, 2), np.int64)
    for j, m in enumerate(masks):
        xt, yt = x[np.arange(n), m], y[np.arange(n), m]
        d = np.abs(x[..., None] - xt[None, None, :])  # (n, 2, n)
        nearest = np.argsort(d, axis=-1, kind="stable")[..., :k_nn]
        preds[j] = (yt[nearest].mean(-1) > 0.5).astype(np.int64)
    return preds, masks


def supersample_1d(seed, n, noise):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 2))
    y = (x > 0).astype(np.int64)
    flip = rng.uniform(size=(n, 2)) < noise
    return x, np.where(flip, 1 - y, y)


@pytest.mark.parametrize("k_nn,noise,seed", [(1, 0.0, 0), (1, 0.3, 1), (3, 0.3, 2), (3, 0.1, 3)])
def test_bounds_hold_exactly_when_every_mask_is_enumerated(k_nn, noise, seed):
    x, y = supersample_1d(seed, 7, noise)
    preds, masks = knn_predictions(x, y, k_nn)
    L = (preds != y[None]).astype(np.float64)
    train = np.take_along_axis(L, masks[..., None], -1)[..., 0].mean(-1).mean()
    test = np.take_along_axis(L, 1 - masks[..., None], -1)[..., 0].mean(-1).mean()
    gap = test - train
    bounds = cmi.cmi_bounds(preds, y, masks, num_bootstrap=0)
    # References written from the theorems, with the reference MI.
    I_f = np.array([mi_reference([tuple(p) for p in preds[:, i]], masks[:, i]) for i in range(7)])
    I_e = np.array([mi_reference([tuple(p) for p in L[:, i]], masks[:, i]) for i in range(7)])
    I_d = np.array([mi_reference(L[:, i, 1] - L[:, i, 0], masks[:, i]) for i in range(7)])
    ref = {"fcmi": np.sqrt(2 * I_f).mean(), "ecmi": np.sqrt(2 * I_e).mean(),
           "ldcmi": np.sqrt(2 * I_d).mean()}
    for name, r in ref.items():
        b = bounds[name]
        assert b.terms["gap_bound"] == pytest.approx(r, rel=1e-10)
        assert b.terms["mean_gap"] == pytest.approx(gap, rel=1e-12, abs=1e-15)
        assert b.terms["gap_bound"] >= gap - 1e-12
        assert b.value == pytest.approx(train + r, rel=1e-12)
        assert b.value >= test - 1e-12 and b.estimated and b.delta is None
    assert ref["ldcmi"] <= ref["ecmi"] + 1e-12 <= ref["fcmi"] + 2e-12  # data processing
    kl = bounds["cmi_binary_kl"]
    assert kl.value == pytest.approx(2 * float(kl_inverse(train, I_e.mean())) - train, rel=1e-9)
    assert kl.value >= test - 1e-12
    if k_nn == 1:  # 1-NN interpolates: the fast-rate form applies
        assert train == 0.0
        ip = bounds["cmi_interpolating"]
        assert ip.value == pytest.approx(I_d.mean() / math.log(2), rel=1e-10)
        assert ip.value >= test - 1e-12
    else:
        assert train > 0 and "cmi_interpolating" not in bounds
        with pytest.raises(NotBoundable, match="training loss"):
            cmi.interpolating_bound(L, masks)


def test_interpolating_bound_is_an_equality_for_a_symmetric_learner():
    # A memoriser: the training label on the training element, a label independent of the mask
    # on the test element (here: wrong with probability 1/2 by construction of the table).
    n = 4
    masks = np.array(list(itertools.product([0, 1], repeat=n)))
    y = np.zeros((n, 2), np.int64)
    preds = np.zeros((len(masks), n, 2), np.int64)
    for j, m in enumerate(masks):
        for i in range(n):
            preds[j, i, 1 - m[i]] = m[(i + 1) % n]  # the test prediction: another pair's bit
    L = (preds != y[None]).astype(np.float64)
    test = np.take_along_axis(L, 1 - masks[..., None], -1)[..., 0].mean()
    b = cmi.interpolating_bound(L, masks, num_bootstrap=0)
    assert test == pytest.approx(0.5)
    assert b.value == pytest.approx(test, rel=1e-12)


def test_several_supersamples_average_and_bootstrap_spread():
    preds, masks, ys = [], [], []
    for s in range(3):
        x, y = supersample_1d(10 + s, 6, 0.2)
        p, m = knn_predictions(x, y, 3)
        preds.append(p)
        masks.append(m)
        ys.append(y)
    P, M, Y = np.stack(preds), np.stack(masks), np.stack(ys)
    one = [cmi.fcmi_bound(P[s], Y[s], M[s], num_bootstrap=0).terms["gap_bound"] for s in range(3)]
    b = cmi.fcmi_bound(P, Y, M, num_bootstrap=50, seed=1)
    assert b.terms["gap_bound"] == pytest.approx(np.mean(one), rel=1e-12)
    lo, hi = b.terms["bootstrap_interval"]
    assert lo <= hi and b.terms["bootstrap_std"] > 0
    assert b.terms["num_supersamples"] == 3 and b.terms["num_masks"] == 64
    again = cmi.fcmi_bound(P, Y, M, num_bootstrap=50, seed=1)
    assert again.terms["bootstrap_interval"] == b.terms["bootstrap_interval"]


def test_bad_inputs_are_named():
    L = np.zeros((4, 3, 2))
    m = np.zeros((4, 3), np.int64)
    with pytest.raises(ValueError, match="masks must hold only 0 and 1"):
        cmi.ecmi_bound(L, m + 2)
    with pytest.raises(ValueError, match="masks must have shape"):
        cmi.ecmi_bound(L, m[:, :2])
    with pytest.raises(ValueError, match=r"losses must lie in \[0, 1\]"):
        cmi.ldcmi_bound(L + 2, m)
    with pytest.raises(ValueError, match="at least 2 masks"):
        cmi.ecmi_bound(L[:1], m[:1])
    with pytest.raises(ValueError, match="labels must have shape"):
        cmi.fcmi_bound(np.zeros((4, 3, 2), np.int64), np.zeros((2, 2), np.int64), m)
    with pytest.raises(TypeError, match="num_bootstrap"):
        cmi.ecmi_bound(L, m, num_bootstrap=1.5)
