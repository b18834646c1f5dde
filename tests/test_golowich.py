"""Tests for genbounds.golowich and its parts: Golowich, Rakhlin & Shamir (2018) and the margin bounds.

The references below are written from the papers in float64 numpy, in the papers' own layout
(W_j of shape (out, in) acting on column vectors), independently of the implementation.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import promoting
from hypothesis import given, settings
from hypothesis import strategies as st

from genbounds.bounds import (
    golowich,
    golowich_frobenius,
    golowich_l1inf,
    golowich_margin_bound,
)

RTOL = 1e-10


# ----------------------------------------------------------------------------------------------
# Independent references.


def ref_frobenius(Ws, X):
    """Theorem 1: (1/m) prod ||W_j||_F (sqrt(2 ln(2) d) + 1) sqrt(sum_i ||x_i||^2)."""
    m, d = X.shape[0], len(Ws)
    prod = np.prod([np.linalg.norm(W, "fro") for W in Ws])
    return prod * (math.sqrt(2 * math.log(2) * d) + 1) * math.sqrt(np.sum(X**2)) / m


def ref_l1inf(Ws, X):
    """Theorem 2: (2/m) prod ||W_j||_{1,inf} sqrt(d + 1 + ln n) sqrt(max_k sum_i x_ik^2)."""
    m, n_in = X.shape
    d = len(Ws)
    prod = np.prod([np.max(np.sum(np.abs(W), axis=1)) for W in Ws])  # max row l1 norm
    return 2 * prod * math.sqrt(d + 1 + math.log(n_in)) * math.sqrt(np.max(np.sum(X**2, 0))) / m


def augmented(Ws, bs):
    """The bias-free network on [x; 1]: [[W, b], [0, 1]] for hidden layers, [W b] last."""
    out = []
    for j, (W, b) in enumerate(zip(Ws, bs, strict=True)):
        A = np.concatenate([W, b[:, None]], axis=1)
        if j < len(Ws) - 1:
            A = np.concatenate([A, np.eye(1, A.shape[1], A.shape[1] - 1)], axis=0)
        out.append(A)
    return out


def forward(Ws, bs, X):
    h = X.T
    for j, (W, b) in enumerate(zip(Ws, bs, strict=True)):
        h = W @ h + b[:, None]
        if j < len(Ws) - 1:
            h = np.maximum(h, 0.0)
    return h.T


def ref_margins(logits, y):
    out = np.empty(len(y))
    for i, (row, label) in enumerate(zip(logits, y, strict=True)):
        if row.shape[0] == 1:
            out[i] = row[0] if label == 1 else -row[0]
        else:
            out[i] = row[label] - max(v for j, v in enumerate(row) if j != label)
    return out


def grid_up(x, r):
    k = math.ceil(math.log(x) / math.log(1 + r))
    while (1 + r) ** (k - 1) >= x:
        k -= 1
    while (1 + r) ** k < x:
        k += 1
    return k


def grid_down(x, r):
    k = math.floor(math.log(x) / math.log(1 + r))
    while (1 + r) ** (k + 1) <= x:
        k += 1
    while (1 + r) ** k > x:
        k -= 1
    return k


def neg_log_p(k):
    return -math.log(2.0 / (3.0 * (abs(k) + 1) * (abs(k) + 2)))


def ref_bound(Ws, bs, X, y, gamma, delta, norm="frobenius", grid_loss=0.05):
    """The data-dependent margin bound of docs/bounds/golowich.md, from scratch."""
    logits = forward(Ws, bs, X)
    marg = ref_margins(logits, y)
    A = augmented(Ws, bs)
    Xa = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)
    k = A[-1].shape[0]
    vec = (lambda v: np.linalg.norm(v)) if norm == "frobenius" else (lambda v: np.sum(np.abs(v)))
    mat = ((lambda W: np.linalg.norm(W, "fro")) if norm == "frobenius"
           else (lambda W: np.max(np.sum(np.abs(W), axis=1))))
    if k == 1:
        last = vec(A[-1][0])
    elif k == 2:
        last = vec(A[-1][1] - A[-1][0])
    else:
        last = max(vec(row) for row in A[-1])
    M = [mat(W) for W in A[:-1]] + [last]
    d = len(A)
    r = (1 + grid_loss) ** (1 / (d + 1)) - 1
    ks = [grid_up(v, r) for v in M]
    kg = grid_down(gamma, r)
    M_bar = [(1 + r) ** kk for kk in ks]
    g_bar = (1 + r) ** kg
    m = X.shape[0]
    if norm == "frobenius":
        rad = (np.prod(M_bar) * (math.sqrt(2 * math.log(2) * d) + 1)
               * math.sqrt(np.sum(Xa**2)) / m)
    else:
        rad = (2 * np.prod(M_bar) * math.sqrt(d + 1 + math.log(Xa.shape[1]))
               * math.sqrt(np.max(np.sum(Xa**2, 0))) / m)
    ramp = np.mean(np.clip(1 - marg / g_bar, 0, 1))
    factor = 2 if k <= 2 else 4 * k
    log_prior = sum(neg_log_p(kk) for kk in ks) + neg_log_p(kg)
    return ramp + factor * rad / g_bar + 3 * math.sqrt((math.log(2 / delta) + log_prior) / (2 * m))


def random_net(rng, sizes, bias=True, scale=1.0):
    Ws = [scale * rng.standard_normal((o, i)) / math.sqrt(i)
          for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [0.3 * rng.standard_normal(o) if bias else np.zeros(o) for o in sizes[1:]]
    return Ws, bs


def to_params(Ws, bs=None):
    """Flax layout: kernel (in, out)."""
    params = {}
    for j, W in enumerate(Ws):
        params[f"Dense_{j}"] = {"kernel": W.T.copy()}
        if bs is not None:
            params[f"Dense_{j}"]["bias"] = bs[j].copy()
    return params


# ----------------------------------------------------------------------------------------------
# Complexity: Theorems 1 and 2.


def test_oracle_factor_d3():
    # formulas.md §11: sqrt(2 ln2 * 3) + 1 = 3.0393340
    assert golowich_frobenius([1.0, 1.0, 1.0], x_norm=1.0, n=1) == pytest.approx(3.0393340,
                                                                               abs=5e-8)


@pytest.mark.parametrize(("seed", "sizes"), [(0, [4, 6, 5, 3]), (1, [3, 7, 1]), (2, [5, 2])])
def test_theorem1_matches_reference_bias_free(seed, sizes):
    rng = np.random.default_rng(seed)
    Ws, _ = random_net(rng, sizes, bias=False)
    X = rng.standard_normal((int(rng.integers(1, 40)), sizes[0]))
    b = golowich(to_params(Ws), X=X)
    assert b.value is None and b.is_measure
    np.testing.assert_allclose(b.complexity, ref_frobenius(Ws, X), rtol=RTOL)
    assert b.terms["depth"] == len(Ws)


@pytest.mark.parametrize(("seed", "sizes"), [(0, [4, 6, 5, 3]), (1, [3, 7, 1]), (2, [5, 2])])
def test_theorem2_matches_reference_bias_free(seed, sizes):
    rng = np.random.default_rng(100 + seed)
    Ws, _ = random_net(rng, sizes, bias=False)
    X = rng.standard_normal((int(rng.integers(1, 40)), sizes[0]))
    b = golowich(to_params(Ws), X=X, norm="l1inf")
    np.testing.assert_allclose(b.complexity, ref_l1inf(Ws, X), rtol=RTOL)


@pytest.mark.parametrize("norm", ["frobenius", "l1inf"])
def test_biases_enter_through_the_augmented_network(norm):
    rng = np.random.default_rng(7)
    Ws, bs = random_net(rng, [4, 6, 5, 3])
    X = rng.standard_normal((25, 4))
    Xa = np.concatenate([X, np.ones((25, 1))], axis=1)
    ref = ref_frobenius if norm == "frobenius" else ref_l1inf
    b = golowich(to_params(Ws, bs), X=X, norm=norm)
    np.testing.assert_allclose(b.complexity, ref(augmented(Ws, bs), Xa), rtol=RTOL)


def test_formula_functions_match_reference():
    rng = np.random.default_rng(3)
    norms = list(rng.uniform(0.1, 3.0, size=4))
    x_norm, n = 12.5, 37
    expected = np.prod(norms) * (math.sqrt(8 * math.log(2)) + 1) * x_norm / n
    np.testing.assert_allclose(golowich_frobenius(norms, x_norm=x_norm, n=n), expected, rtol=RTOL)
    expected = 2 * np.prod(norms) * math.sqrt(5 + math.log(17)) * x_norm / n
    np.testing.assert_allclose(golowich_l1inf(norms, x_col_norm=x_norm, n=n, input_dim=17),
                               expected, rtol=RTOL)


def test_product_in_log_space_does_not_overflow_early():
    # 400 layers of norm 10: 10^400 overflows a float, the bound is inf, not an exception.
    assert golowich_frobenius([10.0] * 400, x_norm=1.0, n=10) == math.inf
    # 400 layers of norms 10 and 0.1 alternating: the product is 1, exactly representable.
    val = golowich_frobenius([10.0, 0.1] * 200, x_norm=1.0, n=1)
    np.testing.assert_allclose(val, math.sqrt(2 * math.log(2) * 400) + 1, rtol=1e-9)


def test_depth_independent_of_width_but_not_scale():
    # Width does not enter Theorem 1: a zero-padded wider copy has the same complexity.
    rng = np.random.default_rng(11)
    Ws, _ = random_net(rng, [3, 4, 2], bias=False)
    wide = [np.concatenate([Ws[0], np.zeros((6, 3))], axis=0),
            np.concatenate([Ws[1], np.zeros((2, 6))], axis=1)]
    X = rng.standard_normal((10, 3))
    np.testing.assert_allclose(golowich(to_params(wide), X=X).complexity,
                               golowich(to_params(Ws), X=X).complexity, rtol=RTOL)


# ----------------------------------------------------------------------------------------------
# The margin bound.


@pytest.mark.parametrize("sizes", [[4, 6, 5, 3], [3, 7, 2], [3, 7, 1], [3, 5, 6, 4, 10]])
@pytest.mark.parametrize("norm", ["frobenius", "l1inf"])
def test_margin_bound_matches_reference(sizes, norm):
    rng = np.random.default_rng(sum(sizes))
    Ws, bs = random_net(rng, sizes)
    n = 60
    X = rng.standard_normal((n, sizes[0]))
    k = sizes[-1]
    y = rng.integers(0, max(k, 2), size=n)
    logits = forward(Ws, bs, X)
    gamma = 0.37
    b = golowich(to_params(Ws, bs), X=X, y=y, logits=logits if k > 1 else logits[:, 0],
                 margin=gamma, delta=0.01, norm=norm)
    np.testing.assert_allclose(b.value, ref_bound(Ws, bs, X, y, gamma, 0.01, norm), rtol=RTOL)
    assert b.terms["num_classes"] == k
    assert b.terms["margin_grid"] <= gamma
    assert all(g >= v for g, v in zip(b.terms["norms_grid"][:-1],
                                      list(b.terms["norms"].values())[:-1], strict=True))
    assert b.terms["norms_grid"][-1] >= b.terms["last_layer_norm"]
    assert b.vacuous == (b.value >= 1.0)


def test_margin_bound_with_apply_fn_and_linen_model():
    flax_linen = pytest.importorskip("flax.linen")

    class MLP(flax_linen.Module):
        @flax_linen.compact
        def __call__(self, x):
            # nonzero biases: the reference below is the augmented network
            init = flax_linen.initializers.normal(1.0)
            x = jax.nn.relu(flax_linen.Dense(8, bias_init=init)(x))
            return flax_linen.Dense(3, bias_init=init)(x)

    model = MLP()
    X = np.random.default_rng(0).standard_normal((40, 5))
    y = np.arange(40) % 3
    # float32 parameters applied to float64 data: the model promotes, the library is strict
    variables = promoting(model.init)(jax.random.key(0), X)
    apply_fn = promoting(model.apply)
    b1 = golowich(variables, X=X, y=y, apply_fn=apply_fn, margin=0.1)
    b2 = golowich(variables, X=X, y=y, logits=np.asarray(apply_fn(variables, X)), margin=0.1)
    np.testing.assert_allclose(b1.value, b2.value, rtol=RTOL)
    p = variables["params"]
    Ws = [np.asarray(p[f"Dense_{j}"]["kernel"], np.float64).T for j in range(2)]
    bs = [np.asarray(p[f"Dense_{j}"]["bias"], np.float64) for j in range(2)]
    np.testing.assert_allclose(b1.value, ref_bound(Ws, bs, X, y, 0.1, 0.05), rtol=1e-6)


def test_default_margin_is_the_ten_percent_quantile():
    rng = np.random.default_rng(5)
    Ws, bs = random_net(rng, [3, 5, 2])
    X = rng.standard_normal((50, 3))
    logits = forward(Ws, bs, X)
    y = np.argmax(logits, axis=1)  # every margin > 0
    marg = np.sort(ref_margins(logits, y))
    b = golowich(to_params(Ws, bs), X=X, y=y, logits=logits)
    assert b.terms["margin"] == pytest.approx(marg[50 // 10 - 1], rel=1e-12)


# ----------------------------------------------------------------------------------------------
# Hypothesis properties (the monotonicity checks of issue 3).

pos = st.floats(0.05, 20.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(ramp=st.floats(0.0, 1.0), gamma=pos, rad=st.floats(0.0, 5.0), n=st.integers(1, 10**6),
       d1=st.floats(1e-6, 0.99), d2=st.floats(1e-6, 0.99), k=st.integers(1, 20))
def test_bound_non_decreasing_as_delta_shrinks(ramp, gamma, rad, n, d1, d2, k):
    lo, hi = sorted((d1, d2))
    kw = dict(ramp_loss=ramp, margin=gamma, rademacher=rad, n=n, num_classes=k)
    assert golowich_margin_bound(delta=lo, **kw) >= golowich_margin_bound(delta=hi, **kw)


@settings(max_examples=60, deadline=None)
@given(ramp=st.floats(0.0, 1.0), g1=pos, g2=pos, rad=st.floats(0.0, 5.0),
       n=st.integers(1, 10**6), k=st.integers(1, 20))
def test_bound_non_increasing_in_margin_at_fixed_loss(ramp, g1, g2, rad, n, k):
    lo, hi = sorted((g1, g2))
    kw = dict(ramp_loss=ramp, rademacher=rad, n=n, delta=0.05, num_classes=k)
    assert golowich_margin_bound(margin=lo, **kw) >= golowich_margin_bound(margin=hi, **kw)


@settings(max_examples=60, deadline=None)
@given(norms=st.lists(pos, min_size=1, max_size=6), B=pos, n1=st.integers(1, 10**6),
       n2=st.integers(1, 10**6), ramp=st.floats(0.0, 1.0), gamma=pos,
       norm=st.sampled_from(["frobenius", "l1inf"]))
def test_bound_non_increasing_in_n(norms, B, n1, n2, ramp, gamma, norm):
    # n examples of the same per-example size B: sum_i ||x_i||^2 = n B^2.
    def value(n):
        if norm == "frobenius":
            rad = golowich_frobenius(norms, x_norm=B * math.sqrt(n), n=n)
        else:
            rad = golowich_l1inf(norms, x_col_norm=B * math.sqrt(n), n=n, input_dim=10)
        return golowich_margin_bound(ramp_loss=ramp, margin=gamma, rademacher=rad, n=n,
                                     delta=0.05, num_classes=3)
    lo, hi = sorted((n1, n2))
    assert value(lo) >= value(hi) * (1 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(norms=st.lists(pos, min_size=1, max_size=6), j=st.integers(0, 5), c=st.floats(1.0, 50.0))
def test_complexity_non_decreasing_when_a_layer_is_scaled_up(norms, j, c):
    j = j % len(norms)
    scaled = list(norms)
    scaled[j] *= c
    for f in (lambda ms: golowich_frobenius(ms, x_norm=3.0, n=7),
              lambda ms: golowich_l1inf(ms, x_col_norm=3.0, n=7, input_dim=4)):
        assert f(scaled) >= f(norms)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), j=st.integers(0, 2), c=st.floats(1.0, 10.0),
       norm=st.sampled_from(["frobenius", "l1inf"]))
def test_full_bound_non_decreasing_when_a_weight_matrix_is_scaled(seed, j, c, norm):
    # Fixed margin, each network with its own logits (a mismatch is an error): the
    # complexity term, which holds the norms, may only grow.
    rng = np.random.default_rng(seed)
    Ws, bs = random_net(rng, [3, 5, 4, 3])
    X = rng.standard_normal((30, 3))
    y = rng.integers(0, 3, size=30)
    logits = forward(Ws, bs, X)
    base = golowich(to_params(Ws, bs), X=X, y=y, logits=logits, margin=0.2, norm=norm)
    Ws2 = [W * (c if i == j else 1.0) for i, W in enumerate(Ws)]
    bs2 = [b * (c if i == j else 1.0) for i, b in enumerate(bs)]
    up = golowich(to_params(Ws2, bs2), X=X, y=y, logits=forward(Ws2, bs2, X), margin=0.2,
                  norm=norm)
    assert up.terms["complexity_term"] >= base.terms["complexity_term"]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), reps=st.integers(2, 3))
def test_full_bound_non_increasing_when_the_sample_is_repeated(seed, reps):
    # The same empirical distribution on more examples: ramp loss and grid unchanged,
    # the complexity term shrinks as 1/sqrt(reps) and the confidence term too.
    rng = np.random.default_rng(seed)
    Ws, bs = random_net(rng, [3, 4, 2])
    X = rng.standard_normal((20, 3))
    y = rng.integers(0, 2, size=20)
    logits = forward(Ws, bs, X)
    one = golowich(to_params(Ws, bs), X=X, y=y, logits=logits, margin=0.3)
    many = golowich(to_params(Ws, bs), X=np.tile(X, (reps, 1)), y=np.tile(y, reps),
                    logits=np.tile(logits, (reps, 1)), margin=0.3)
    assert many.value <= one.value
    np.testing.assert_allclose(many.terms["complexity_term"],
                               one.terms["complexity_term"] / math.sqrt(reps), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Soundness on a small trained network.


def test_sound_on_a_small_trained_network():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 6)) * 2.0

    def sample(n):
        y = rng.integers(0, 3, size=n)
        return centers[y] + rng.standard_normal((n, 6)), y

    X_train, y_train = sample(300)
    X_test, y_test = sample(2000)
    sizes = [6, 16, 3]
    key = jax.random.key(0)
    params = {}
    for j, (i, o) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, sub = jax.random.split(key)
        params[f"Dense_{j}"] = {"kernel": jax.random.normal(sub, (i, o)) / math.sqrt(i),
                                "bias": jnp.zeros(o)}

    def apply_fn(p, x):
        h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
        return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]

    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(
            apply_fn(q, X_train), y_train).mean())(p)
        upd, s = promoting(opt.update)(g, s)  # optax's Adam: a float to an int32 power
        return optax.apply_updates(p, upd), s, loss

    for _ in range(200):
        params, state, _ = step(params, state)
    test_error = float(np.mean(np.argmax(np.asarray(apply_fn(params, X_test)), 1) != y_test))
    train_error = float(np.mean(np.argmax(np.asarray(apply_fn(params, X_train)), 1) != y_train))
    assert train_error < 0.2  # the net did learn
    for norm in ("frobenius", "l1inf"):
        b = golowich(params, X=X_train, y=y_train, apply_fn=apply_fn, margin_quantile=0.1,
                     norm=norm)
        assert b.value >= test_error
        assert b.value >= b.terms["ramp_loss"] >= 0.0
        assert b.vacuous == (b.value >= 1.0)  # reported as is, never clipped


# ----------------------------------------------------------------------------------------------
# Bad input.


@pytest.fixture
def small():
    rng = np.random.default_rng(1)
    Ws, bs = random_net(rng, [3, 4, 3])
    X = rng.standard_normal((10, 3))
    y = rng.integers(0, 3, size=10)
    return to_params(Ws, bs), X, y, forward(Ws, bs, X)


@pytest.mark.parametrize("delta", [0.0, 1.0, 1.5, -0.1])
def test_bad_delta(small, delta):
    params, X, y, logits = small
    with pytest.raises(ValueError, match="delta"):
        golowich(params, X=X, y=y, logits=logits, margin=0.1, delta=delta)
    with pytest.raises(ValueError, match="delta"):
        golowich_margin_bound(ramp_loss=0.1, margin=1.0, rademacher=0.1, n=10, delta=delta,
                              num_classes=3)


@pytest.mark.parametrize("margin", [0.0, -1.0])
def test_bad_margin(small, margin):
    params, X, y, logits = small
    with pytest.raises(ValueError, match="margin"):
        golowich(params, X=X, y=y, logits=logits, margin=margin)
    with pytest.raises(ValueError, match="margin"):
        golowich_margin_bound(ramp_loss=0.1, margin=margin, rademacher=0.1, n=10, delta=0.05,
                              num_classes=3)


def test_bad_n(small):
    params, X, y, logits = small
    with pytest.raises(ValueError, match="X"):
        golowich(params, X=X[:0])
    with pytest.raises(ValueError, match="n"):
        golowich_frobenius([1.0], x_norm=1.0, n=0)
    with pytest.raises(ValueError, match="n"):
        golowich_margin_bound(ramp_loss=0.1, margin=1.0, rademacher=0.1, n=0, delta=0.05,
                              num_classes=3)


def test_mismatched_lengths(small):
    params, X, y, logits = small
    with pytest.raises(ValueError, match="same number of examples"):
        golowich(params, X=X, y=y[:-1], logits=logits[:-1], margin=0.1)
    with pytest.raises(ValueError):
        golowich(params, X=X, y=y[:-1], logits=logits, margin=0.1)


def test_nan_logits_and_inputs(small):
    params, X, y, logits = small
    bad = logits.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="finite|NaN"):
        golowich(params, X=X, y=y, logits=bad, margin=0.1)
    Xbad = X.copy()
    Xbad[0, 0] = np.inf
    with pytest.raises(ValueError, match="X must be finite"):
        golowich(params, X=Xbad)


def test_other_bad_arguments(small):
    params, X, y, logits = small
    with pytest.raises(ValueError, match="norm"):
        golowich(params, X=X, norm="spectral")
    with pytest.raises(ValueError, match="without y"):
        golowich(params, X=X, logits=logits)
    with pytest.raises(ValueError, match="give apply_fn"):
        golowich(params, X=X, y=y)
    with pytest.raises(ValueError, match="not both"):
        golowich(params, X=X, y=y, logits=logits, apply_fn=lambda p, x: logits)
    with pytest.raises(ValueError, match="columns"):
        golowich(params, X=X, y=np.zeros(10, int), logits=logits[:, :2], margin=0.1)
    with pytest.raises(ValueError, match="fan-in"):
        golowich(params, X=X[:, :2])
    with pytest.raises(ValueError, match="grid_loss"):
        golowich(params, X=X, y=y, logits=logits, margin=0.1, grid_loss=0.0)
    conv = {"Conv_0": {"kernel": np.ones((3, 3, 1, 2))}, "Dense_0": {"kernel": np.ones((8, 2))}}
    with pytest.raises(ValueError, match="convolution"):
        golowich(conv, X=np.ones((2, 8)))
    with pytest.raises(ValueError, match="norms"):
        golowich_frobenius([], x_norm=1.0, n=1)
    with pytest.raises(ValueError, match="norms"):
        golowich_frobenius([1.0, -1.0], x_norm=1.0, n=1)
