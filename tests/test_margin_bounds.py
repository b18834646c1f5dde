"""The BFT (2017) margin bound with data and the Neyshabur et al. (2018) PAC-Bayes bound.

Each is recomputed here by an independent float64 numpy implementation written from the
derivations in docs/bounds/spectral.md and docs/bounds/pac_bayes.md (exact SVDs, our own grid
rounding and prior), and checked for the properties a bound must have.
"""

import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import genbounds


def _net(rng, dims, bias=True):
    tree = {}
    for i in range(len(dims) - 1):
        layer = {"kernel": rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])}
        if bias:
            layer["bias"] = 0.1 * rng.standard_normal(dims[i + 1])
        tree[f"Dense_{i}"] = layer
    return tree


def _forward(tree, X):
    h = X
    keys = list(tree)
    for j, k in enumerate(keys):
        h = h @ tree[k]["kernel"] + tree[k].get("bias", 0.0)
        if j < len(keys) - 1:
            h = np.maximum(h, 0.0)
    return h


def _forward_jax(tree, X):
    h = X
    keys = list(tree)
    for j, k in enumerate(keys):
        h = h @ tree[k]["kernel"] + tree[k].get("bias", 0.0)
        if j < len(keys) - 1:
            h = jax.nn.relu(h)
    return h


def _augmented(tree):
    """Bias augmentation in numpy, as matrices A (out, in) acting on [x; 1]."""
    keys = list(tree)
    mats = []
    for j, k in enumerate(keys):
        W, b = tree[k]["kernel"], tree[k].get("bias", np.zeros(tree[k]["kernel"].shape[1]))
        A = np.concatenate([W.T, b[:, None]], axis=1)  # (out, in + 1)
        if j < len(keys) - 1:
            A = np.concatenate([A, np.eye(1, A.shape[1], A.shape[1] - 1)], axis=0)
        mats.append(A)
    return mats


def _up(x, r):
    k = math.ceil(math.log(x) / math.log1p(r) - 1e-12)
    while (1 + r) ** k < x:
        k += 1
    while (1 + r) ** (k - 1) >= x:
        k -= 1
    return k


def _down(x, r):
    k = math.floor(math.log(x) / math.log1p(r) + 1e-12)
    while (1 + r) ** k > x:
        k -= 1
    while (1 + r) ** (k + 1) <= x:
        k += 1
    return k


def _neg_log_p(k):
    return math.log(3 * (abs(k) + 1) * (abs(k) + 2) / 2)


def _margins_np(logits, y):
    true = logits[np.arange(len(y)), y]
    other = np.where(np.eye(logits.shape[1], dtype=bool)[y], -np.inf, logits).max(axis=1)
    return true - other


def bft_reference(tree, X, y, gamma, delta, grid_loss=0.05):
    mats = _augmented(tree)
    n = len(X)
    s = [np.linalg.norm(A, 2) for A in mats]
    b = [np.sum(np.linalg.norm(A, axis=1)) for A in mats]  # rows of A = output units
    L = len(mats)
    r = (1 + grid_loss) ** (1 / (L + 2)) - 1
    ks, kb, kg = [_up(v, r) for v in s], [_up(v, r) for v in b], _down(gamma, r)
    sb, bb, gb = [(1 + r) ** k for k in ks], [(1 + r) ** k for k in kb], (1 + r) ** kg
    R = np.prod(sb) * np.sum([(bi / si) ** (2 / 3) for bi, si in zip(bb, sb, strict=True)]) ** 1.5
    W = max([mats[0].shape[1]] + [A.shape[0] for A in mats])
    xn = math.sqrt(np.sum(X**2) + n)
    m = _margins_np(_forward(tree, X), y)
    ramp = np.mean(np.clip(1 - m / gb, 0, 1))
    log_prior = sum(_neg_log_p(k) for k in ks + kb + [kg])
    return (ramp + 8 / n + 72 * xn * math.log(n) * math.sqrt(math.log(2 * W * W)) * R / (gb * n)
            + 3 * math.sqrt((math.log(2 / delta) + log_prior) / (2 * n)))


def neyshabur_reference(tree, X, y, gamma, delta, B, reference=None, grid_loss=0.05):
    mats = _augmented(tree)
    refs = _augmented(reference) if reference is not None else [0 * A for A in mats]
    n = len(X)
    d = len(mats)
    h = max([mats[0].shape[1]] + [A.shape[0] for A in mats])
    s = np.array([np.linalg.norm(A, 2) for A in mats])
    beta = np.exp(np.mean(np.log(s)))
    kb, kg = _down(beta, 1 / d), _down(gamma, grid_loss)
    bt, gb = (1 + 1 / d) ** kb, (1 + grid_loss) ** kg
    Bt = math.sqrt(B * B + 1)
    sigma = gb / (42 * d * Bt * bt ** (d - 1) * math.sqrt(h * math.log(4 * h * d)))
    dist = sum(np.sum((A * beta / si - M) ** 2) for A, si, M in zip(mats, s, refs, strict=True))
    kl = dist / (2 * sigma**2)
    m = _margins_np(_forward(tree, X), y)
    loss = np.mean(m <= gb)
    dk = delta / math.exp(_neg_log_p(kb) + _neg_log_p(kg))
    return loss + 4 * math.sqrt((kl + math.log(6 * n / dk)) / (n - 1)), kl


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    tree = _net(rng, [5, 12, 8, 3])
    X = rng.standard_normal((200, 5))
    logits = _forward(tree, X)
    y = np.argmax(logits + 0.3 * rng.standard_normal(logits.shape), axis=1)
    return tree, X, y, logits


def test_bft_matches_reference(problem):
    tree, X, y, logits = problem
    gamma = 0.2
    b = genbounds.spectral(tree, X=X, y=y, logits=logits, margin=gamma, delta=0.05,
                           method="exact")
    np.testing.assert_allclose(b.value, bft_reference(tree, X, y, gamma, 0.05), rtol=1e-10)
    assert b.n == 200 and b.delta == 0.05 and b.vacuous
    # apply_fn path gives the same number (the network is traced from a jax function)
    b2 = genbounds.spectral(tree, X=X, y=y, apply_fn=_forward_jax, margin=gamma,
                            method="exact")
    np.testing.assert_allclose(b2.value, b.value, rtol=1e-12)
    # a numpy apply_fn cannot be read by jax: nothing is certified from it
    with pytest.raises(genbounds.NotBoundable, match="spectral: apply_fn could not be traced by jax"):
        genbounds.spectral(tree, X=X, y=y, apply_fn=_forward, margin=gamma, method="exact")


def test_bft_certified_is_not_below_exact(problem):
    tree, X, _, logits = problem
    y = np.argmax(logits, axis=1)  # fits: the 10% quantile margin is positive
    exact = genbounds.spectral(tree, X=X, y=y, logits=logits, method="exact")
    cert = genbounds.spectral(tree, X=X, y=y, logits=logits)  # default: certified, 10% quantile
    assert cert.value >= exact.value * (1 - 1e-12)
    assert "quantile" in " ".join(cert.notes)


def test_neyshabur_matches_reference(problem):
    tree, X, y, logits = problem
    B = float(np.max(np.linalg.norm(X, axis=1))) * 1.5
    b = genbounds.pac_bayes(tree, X=X, y=y, logits=logits, margin=0.3, input_bound=B,
                            method="exact")
    want, kl = neyshabur_reference(tree, X, y, 0.3, 0.05, B)
    np.testing.assert_allclose(b.value, want, rtol=1e-10)
    np.testing.assert_allclose(b.complexity, kl, rtol=1e-10)
    ref = _net(np.random.default_rng(1), [5, 12, 8, 3])
    b = genbounds.pac_bayes(tree, X=X, y=y, logits=logits, margin=0.3, input_bound=B,
                            reference=ref, method="exact")
    np.testing.assert_allclose(b.value, neyshabur_reference(tree, X, y, 0.3, 0.05, B, ref)[0],
                               rtol=1e-10)


def test_fixed_parameter_formulas():
    # BFT fixed-parameter bound (docs/bounds/spectral.md step 5)
    got = genbounds.spectral_margin_bound(ramp_loss=0.1, margin=2.0, complexity=3.0, x_norm=4.0,
                                          width=7, n=50, delta=0.1)
    want = (0.1 + 8 / 50 + 72 * 4 * math.log(50) * math.sqrt(math.log(98)) * 3 / (2 * 50)
            + 3 * math.sqrt(math.log(20) / 100))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # Neyshabur Lemma 1
    got = genbounds.pac_bayes_margin_bound(margin_loss=0.05, kl=12.0, n=1000, delta=0.01)
    np.testing.assert_allclose(got, 0.05 + 4 * math.sqrt((12 + math.log(6e5)) / 999), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.001, 0.5), st.floats(0.001, 0.5), st.floats(0.01, 10), st.floats(0.01, 10),
       st.integers(2, 10**6), st.integers(2, 10**6))
def test_fixed_bounds_monotone(d1, d2, g1, g2, n1, n2):
    kw = dict(ramp_loss=0.1, complexity=3.0, x_norm=4.0, width=7)
    lo_d, hi_d = sorted([d1, d2])
    lo_g, hi_g = sorted([g1, g2])
    lo_n, hi_n = sorted([n1, n2])
    f = genbounds.spectral_margin_bound
    assert f(margin=1.0, n=100, delta=lo_d, **kw) >= f(margin=1.0, n=100, delta=hi_d, **kw)
    assert f(margin=lo_g, n=100, delta=0.05, **kw) >= f(margin=hi_g, n=100, delta=0.05, **kw)
    # per-example norm fixed: ||X||_2 = sqrt(n) x
    kw2 = dict(ramp_loss=0.1, complexity=3.0, width=7, margin=1.0, delta=0.05)
    big = max(lo_n, 3)  # ln(n)/sqrt(n) decreases for n >= e^2
    big2 = max(hi_n, big)
    if big >= 8:
        assert f(x_norm=math.sqrt(big), n=big, **kw2) >= f(x_norm=math.sqrt(big2), n=big2, **kw2)
    g = genbounds.pac_bayes_margin_bound
    assert g(margin_loss=0.0, kl=5.0, n=100, delta=lo_d) >= g(margin_loss=0.0, kl=5.0, n=100,
                                                              delta=hi_d)
    assert g(margin_loss=0.0, kl=5.0, n=lo_n, delta=0.05) >= g(margin_loss=0.0, kl=5.0, n=hi_n,
                                                               delta=0.05)


@settings(max_examples=10, deadline=None)
@given(st.floats(1.01, 10.0), st.integers(0, 2))
def test_scaling_a_layer_up_never_lowers_the_bounds(c, i):
    rng = np.random.default_rng(7)
    tree = _net(rng, [4, 6, 5, 3], bias=False)
    X = rng.standard_normal((60, 4))
    logits = _forward(tree, X)
    y = np.argmax(logits, axis=1)
    scaled = {k: dict(v) for k, v in tree.items()}
    key = f"Dense_{i}"
    scaled[key]["kernel"] = tree[key]["kernel"] * c
    # Each network with its own logits (a mismatch is an error); at a fixed margin the
    # complexity parts of both bounds may only grow.
    logits_scaled = _forward(scaled, X)
    for fn, part in ((genbounds.spectral, "complexity_term"), (genbounds.pac_bayes, "kl")):
        a = fn(tree, X=X, y=y, logits=logits, margin=0.5, method="exact").terms[part]
        b = fn(scaled, X=X, y=y, logits=logits_scaled, margin=0.5, method="exact").terms[part]
        assert b >= a * (1 - 1e-12)


def test_soundness_on_a_trained_net():
    from genbounds.data import load
    from genbounds.train import train

    data = load("digits", n=300, seed=1)
    net = train({"kind": "mlp", "depth": 1, "width": 32}, data, lr=3e-3, batch_size=32,
                max_epochs=300, seed=1)
    logits = np.asarray(net.apply_fn(net.params, data.X_test))
    test_error = float(np.mean(np.argmax(logits, 1) != data.y_test))
    for fn in (genbounds.spectral, genbounds.pac_bayes):
        b = fn(net.params, X=data.X_train, y=data.y_train, apply_fn=net.apply_fn)
        assert b.value >= test_error
        assert b.vacuous == (b.value >= 1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(delta=1.5), "delta"),
        (dict(delta=0.0), "delta"),
        (dict(margin=0.0), "margin"),
        (dict(margin=-1.0), "margin"),
        (dict(y=np.zeros(5, int)), "same number|length|examples"),
        (dict(logits=np.full((200, 3), np.nan)), "finite|NaN"),
        (dict(logits=None), "apply_fn"),
    ],
)
def test_bad_inputs(problem, kwargs, match):
    tree, X, y, logits = problem
    args = dict(X=X, y=y, logits=logits, margin=0.2)
    args.update(kwargs)
    for fn in (genbounds.spectral, genbounds.pac_bayes):
        with pytest.raises((ValueError, TypeError), match=match):
            fn(tree, **args)


def test_pac_bayes_input_bound_must_cover_the_data(problem):
    tree, X, y, logits = problem
    with pytest.raises(ValueError, match="input_bound"):
        genbounds.pac_bayes(tree, X=X, y=y, logits=logits, margin=0.2, input_bound=0.1)
    b = genbounds.pac_bayes(tree, X=X, y=y, logits=logits, margin=0.2)
    assert any("NOT CERTIFIED" in note for note in b.notes) and b.estimated
    B = float(np.max(np.linalg.norm(X, axis=1)))
    assert not genbounds.pac_bayes(tree, X=X, y=y, logits=logits, margin=0.2,
                                   input_bound=B, method="exact").estimated


def test_data_must_fit_the_network(problem):
    tree, X, y, logits = problem
    for fn in (genbounds.spectral, genbounds.pac_bayes):
        with pytest.raises(ValueError, match="features"):
            fn(tree, X=np.hstack([X, X]), y=y, logits=logits, margin=0.2)
        with pytest.raises(ValueError, match="columns"):
            fn(tree, X=X, y=y % 2, logits=logits[:, :2], margin=0.2)
