"""Gonon et al. (2024): path norms of DAG ReLU networks and the path-norm margin bound.

Path norms are checked against an explicit enumeration of every path of a neuron-level DAG built
here in numpy from the weights (not from the library's records), on a residual MLP with a
concatenation and on a 1-D CNN with max, average and global max pooling; against the chain path
norm on chains; under neuron-wise rescaling. The bound is checked against a float64 recomputation
from its terms, against the authors' Table 2 numbers, against measured test errors of small
trained networks, and for monotonicity in delta and n.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import genbounds
from genbounds import Network, NotBoundable
from genbounds.bounds import gonon, gonon_log_term, gonon_margin_bound, gonon_rademacher
from genbounds.internal import lifting_structure
from genbounds.measures import path_norm

# ----------------------------------------------------------------------------------------------
# A neuron-level DAG in numpy and the explicit enumeration of its paths.


class DAG:
    """Neurons with a bias and weighted edges from earlier neurons; inputs have neither."""

    def __init__(self, d_in):
        self.d_in = d_in
        self.edges = [[] for _ in range(d_in)]
        self.bias = [0.0] * d_in

    def add(self, edges, bias=0.0):
        self.edges.append([(int(j), float(w)) for j, w in edges])
        self.bias.append(float(bias))
        return len(self.edges) - 1

    def path_sum(self, outputs, q):
        """sum over every path (from an input, or from a neuron's bias) to an output of
        prod |w|^q, each path listed explicitly (depth-first, no sharing of partial sums)."""
        total = 0.0
        stack = [(v, 1.0) for v in outputs]  # (neuron, product of the edges after it)
        while stack:
            v, prod = stack.pop()
            if v < self.d_in:
                total += prod  # the path that starts at input v
                continue
            total += abs(self.bias[v]) ** q * prod  # the path that starts at v's bias
            for j, w in self.edges[v]:
                stack.append((j, prod * abs(w) ** q))
        return total


def dense(dag, ins, kernel, bias):
    return [dag.add([(ins[i], kernel[i, o]) for i in range(len(ins))], bias[o])
            for o in range(kernel.shape[1])]


def relu(dag, ins):
    return [dag.add([(j, 1.0)]) for j in ins]


class ResMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(4, name="a")(x))
        z = nn.Dense(4, name="b2")(nn.relu(nn.Dense(5, name="b1")(h))) + h
        c = jnp.concatenate([nn.relu(z), x], axis=-1)
        return nn.Dense(2, name="out")(c)


def resmlp_dag(p):
    p = {k: {kk: np.asarray(a, np.float64) for kk, a in d.items()} for k, d in p.items()}
    dag = DAG(3)
    x = [0, 1, 2]
    h = relu(dag, dense(dag, x, p["a"]["kernel"], p["a"]["bias"]))
    u = relu(dag, dense(dag, h, p["b1"]["kernel"], p["b1"]["bias"]))
    z = dense(dag, u, p["b2"]["kernel"], p["b2"]["bias"])
    s = [dag.add([(zj, 1.0), (hj, 1.0)]) for zj, hj in zip(z, h, strict=True)]  # the add
    c = relu(dag, s) + x
    return dag, dense(dag, c, p["out"]["kernel"], p["out"]["bias"])


class PoolNet(nn.Module):
    @nn.compact
    def __call__(self, x):  # (b, 6, 2)
        h = nn.relu(nn.Conv(3, (3,), padding="SAME", name="c")(x))  # (b, 6, 3)
        m = nn.max_pool(h, (2,), strides=(2,))  # (b, 3, 3)
        with jax.numpy_dtype_promotion("standard"):  # flax divides by an integer count
            g = nn.avg_pool(m, (2,), strides=(1,))  # (b, 2, 3)
        f = jnp.concatenate([g.reshape(g.shape[0], -1), jnp.max(h, axis=1)], axis=-1)
        return nn.Dense(2, name="out")(f)


def poolnet_dag(p):
    p = {k: {kk: np.asarray(a, np.float64) for kk, a in d.items()} for k, d in p.items()}
    dag = DAG(12)
    x = np.arange(12).reshape(6, 2)  # neuron index of input (position, channel)
    K, b = p["c"]["kernel"], p["c"]["bias"]  # (3, 2, 3)
    conv = np.zeros((6, 3), int)
    for t in range(6):
        for o in range(3):
            edges = [(x[t + k - 1, i], K[k, i, o]) for k in range(3) for i in range(2)
                     if 0 <= t + k - 1 < 6]  # SAME padding: the zeros start no path
            conv[t, o] = dag.add(edges, b[o])
    h = np.array(relu(dag, conv.ravel())).reshape(6, 3)
    m = np.array([[dag.add([(h[2 * s, o], 1.0), (h[2 * s + 1, o], 1.0)]) for o in range(3)]
                  for s in range(3)])  # max-pool neurons: an edge of weight 1 per input
    g = np.array([[dag.add([(m[s, o], 0.5), (m[s + 1, o], 0.5)]) for o in range(3)]
                  for s in range(2)])  # average pool: edges 1/2
    gmax = [dag.add([(h[t, o], 1.0) for t in range(6)]) for o in range(3)]
    f = list(g.ravel()) + gmax
    return dag, dense(dag, f, p["out"]["kernel"], p["out"]["bias"])


def _init(model, x, seed=0):
    v = model.init(jax.random.key(seed), jnp.asarray(x, jnp.float32))
    # float64, with non-zero biases so that bias paths count
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, jnp.float64)
        + 0.3 * jnp.sin(jnp.arange(a.size, dtype=jnp.float64).reshape(a.shape) + seed), v)


@pytest.mark.parametrize("q", [1.0, 2.0])
@pytest.mark.parametrize("model, shape, build, depth, pools, kernel", [
    (ResMLP(), (4, 3), resmlp_dag, 4, 0, 1),
    (PoolNet(), (4, 6, 2), poolnet_dag, 3, 1, 6),
])
def test_path_norm_matches_path_enumeration(model, shape, build, depth, pools, kernel, q):
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape))
    v = _init(model, x)
    net = Network.trace(model.apply, v, x)
    dag, outs = build(v["params"])
    want = dag.path_sum(outs, q)
    got = path_norm(net, p=q, power=True, convention="gonon").complexity
    np.testing.assert_allclose(got, want, rtol=1e-12)
    st_ = lifting_structure(net)
    assert (st_.depth, st_.pool_types, st_.kernel) == (depth, pools, kernel)
    assert (st_.d_in, st_.d_out) == (int(np.prod(shape[1:])), 2)


def test_path_enumeration_reference_counts_paths():
    # the reference itself: a 2-2-1 ReLU net with unit weights and no biases has 4 paths
    dag = DAG(2)
    h = relu(dag, dense(dag, [0, 1], np.ones((2, 2)), np.zeros(2)))
    out = dense(dag, h, np.ones((2, 1)), np.zeros(1))
    assert dag.path_sum(out, 1.0) == 4.0
    out = dense(dag, h, np.ones((2, 1)), np.array([0.5]))
    assert dag.path_sum(out, 1.0) == 4.5


def test_gonon_path_norm_equals_chain_path_norm_on_chains():
    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Dense(6, name="l1")(nn.relu(nn.Dense(5, name="l0")(x))))
            return nn.Dense(3, name="l2")(h)

    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 4)))
    v = _init(MLP(), x)
    net = Network.trace(MLP().apply, v, x)
    for q in (1.0, 2.0):
        chain = path_norm(v, p=q).complexity  # read from the names: the chain computation
        np.testing.assert_allclose(path_norm(net, p=q, convention="gonon").complexity, chain,
                                   rtol=1e-12)
    b = gonon(net, X=np.asarray(x))
    np.testing.assert_allclose(b.terms["path_norm"], path_norm(v, p=1.0).complexity, rtol=1e-12)
    assert b.terms["depth"] == 3 and b.terms["pool_types"] == 0


def test_max_pool_is_summed_not_maxed():
    # Jiang's convention keeps the max; the path lifting counts every input of the window.
    x = jnp.ones((2, 6, 2))
    v = _init(PoolNet(), x)
    net = Network.trace(PoolNet().apply, v, x)
    jiang = path_norm(net, p=1.0, convention="jiang").complexity
    lifted = path_norm(net, p=1.0, convention="gonon").complexity
    assert lifted > jiang


@pytest.mark.parametrize("c", [0.1, 3.0])
def test_path_norm_and_bound_invariant_under_neuron_rescaling(c):
    x = jnp.asarray(np.random.default_rng(2).standard_normal((40, 3)))
    v = _init(ResMLP(), x)
    p = jax.tree_util.tree_map(lambda a: np.array(a, np.float64), v["params"])
    p2 = jax.tree_util.tree_map(np.copy, p)
    j = 2  # neuron j of the block's hidden layer: incoming (and bias) * c, outgoing / c
    p2["b1"]["kernel"][:, j] *= c
    p2["b1"]["bias"][j] *= c
    p2["b2"]["kernel"][j, :] /= c
    f = ResMLP().apply
    np.testing.assert_allclose(f({"params": p2}, x), f({"params": p}, x), rtol=1e-10)
    y = np.argmax(np.asarray(f({"params": p}, x)), axis=1)
    a = gonon({"params": p}, X=x, y=y, apply_fn=f)
    b = gonon({"params": p2}, X=x, y=y, apply_fn=f)
    np.testing.assert_allclose(b.terms["path_norm"], a.terms["path_norm"], rtol=1e-12)
    np.testing.assert_allclose(b.value, a.value, rtol=1e-9)


def test_leaky_relu_is_a_pair_of_relus():
    # x -> w2 * leaky(w1 x): paths through relu(t) and relu(-t): |w1 w2| (1 + alpha)
    alpha, w1, w2 = 0.2, 1.5, -2.0
    params = {"w1": jnp.array([[w1]]), "w2": jnp.array([[w2]])}

    def f(p, x):
        return nn.leaky_relu(x @ p["w1"], alpha) @ p["w2"]

    x = jnp.array([[1.0], [-2.0]])
    net = Network.trace(f, params, x)
    np.testing.assert_allclose(path_norm(net, p=1.0, convention="gonon").complexity,
                               abs(w1 * w2) * (1 + alpha), rtol=1e-12)
    np.testing.assert_allclose(path_norm(net, p=2.0, power=True, convention="gonon").complexity,
                               (w1 * w2) ** 2 * (1 + alpha**2), rtol=1e-12)


@pytest.mark.parametrize("act, name", [(nn.gelu, "tanh"), (jnp.tanh, "tanh"),
                                       (nn.sigmoid, "logistic")])
def test_non_relu_activations_are_refused_by_name(act, name):
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(act(nn.Dense(4)(x)))

    x = jnp.ones((8, 3), jnp.float32)
    v = Net().init(jax.random.key(0), x)
    # The refusal names the operation read from the program (GELU's tanh form, the logistic).
    with pytest.raises(NotBoundable, match=rf"{name}\(.*not positively homogeneous"):
        gonon(v, X=x, apply_fn=Net().apply)
    y = np.zeros(8, int)
    rep = genbounds.report(v, X=x, y=y, apply_fn=Net().apply)
    assert name in dict(rep.skipped)["gonon"]


def test_softmax_inside_the_network_is_refused():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(jax.nn.softmax(nn.Dense(4)(x)))

    x = jnp.ones((4, 3), jnp.float32)
    v = Net().init(jax.random.key(0), x)
    with pytest.raises(NotBoundable):
        gonon(v, X=x, apply_fn=Net().apply)


# ----------------------------------------------------------------------------------------------
# The formulas.


def test_log_term_reproduces_the_authors_table_2():
    # ResNet-18 .. 152 on ImageNet: first part 4 sqrt(L) B / sqrt(n), B = 2.64, P = 1, K = 9
    # (the authors' compute_1st_part_bound_resnets.py; Table 2 of arXiv:2310.01225).
    n = int(0.99 * 1281167)
    want = {18: 0.088093, 34: 0.114522, 50: 0.135905, 101: 0.188518, 152: 0.229364}
    for depth, value in want.items():
        L = gonon_log_term(depth=depth, pool_types=1, kernel=9, d_in=224 * 224 * 3, d_out=1000)
        got = 4.0 * math.sqrt(L) * 2.640000104904175 / math.sqrt(n)
        assert round(got, 6) == value, depth


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 10**6), k=st.integers(1, 100), ramp=st.floats(0, 1),
       r=st.floats(0, 1e6), gamma=st.floats(1e-3, 1e3), d1=st.floats(1e-6, 0.5),
       d2=st.floats(1e-6, 0.5))
def test_margin_bound_monotone_in_delta_and_n(n, k, ramp, r, gamma, d1, d2):
    lo, hi = sorted((d1, d2))

    def value(n_, delta):
        rad = gonon_rademacher(r, log_term=5.0, sigma=1.0, n=n_)
        return gonon_margin_bound(ramp_loss=ramp, margin=gamma, rademacher=rad, n=n_,
                                  delta=delta, num_outputs=k)

    assert value(n, lo) >= value(n, hi)
    assert value(n, hi) >= value(n + 1, hi)


def test_rademacher_and_margin_formulas():
    # 2 r sigma sqrt(L / n); ramp + 2 c R / gamma + 3 sqrt(ln(2/delta) / 2n)
    assert gonon_rademacher(3.0, log_term=2.0, sigma=1.5, n=8) == pytest.approx(
        2 * 3.0 * 1.5 * math.sqrt(2.0 / 8), rel=1e-15)
    for k, c in ((1, 1.0), (2, 2.0), (10, 2.0)):
        got = gonon_margin_bound(ramp_loss=0.1, margin=0.5, rademacher=0.2, n=50, delta=0.1,
                                 num_outputs=k, log_prior=1.0)
        want = 0.1 + 2 * c * 0.2 / 0.5 + 3 * math.sqrt((math.log(20.0) + 1.0) / 100)
        assert got == pytest.approx(want, rel=1e-14)
    with pytest.raises(ValueError, match="delta"):
        gonon_margin_bound(ramp_loss=0.1, margin=0.5, rademacher=0.2, n=50, delta=1.5,
                           num_outputs=2)


# ----------------------------------------------------------------------------------------------
# The bound on small trained networks.


def _data(rng, n, shape, classes):
    X = rng.standard_normal((n, *shape)).astype(np.float32)
    w = np.random.default_rng(99).standard_normal((int(np.prod(shape)), classes))
    y = np.argmax(X.reshape(n, -1) @ w, axis=1)
    return X, y


def _train(model, X, y, steps=300, seed=0):
    v = model.init(jax.random.key(seed), jnp.asarray(X[:2]))
    opt = optax.adam(1e-2)
    state = opt.init(v)

    @jax.jit
    def step(v, state):
        def loss(v):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(v, X), y).mean()
        g = jax.grad(loss)(v)
        upd, state = opt.update(g, state, v)
        return optax.apply_updates(v, upd), state

    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes dtypes
        for _ in range(steps):
            v, state = step(v, state)
    return v


class ResNetMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(16, name="embed")(x))
        for i in range(2):
            h = nn.relu(h + nn.Dense(16, name=f"b{i}_2")(nn.relu(nn.Dense(16, name=f"b{i}_1")(h))))
        return nn.Dense(3, name="out")(h)


class SmallCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), name="c1")(x))
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = nn.relu(nn.Conv(4, (3, 3), name="c2")(h))
        with jax.numpy_dtype_promotion("standard"):  # flax divides by an integer count
            h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        return nn.Dense(3, name="out")(h.reshape(h.shape[0], -1))


@pytest.mark.parametrize("model, shape, steps, with_report", [
    (ResNetMLP(), (6,), 30, False),
    pytest.param(ResNetMLP(), (6,), 300, True, marks=pytest.mark.slow),
    pytest.param(SmallCNN(), (8, 8, 1), 300, False, marks=pytest.mark.slow),
])
def test_bound_holds_on_trained_nets(model, shape, steps, with_report):
    rng = np.random.default_rng(0)
    X, y = _data(rng, 200, shape, 3)
    Xt, yt = _data(rng, 400, shape, 3)
    v = _train(model, jnp.asarray(X), jnp.asarray(y), steps=steps)
    test_error = float(np.mean(np.argmax(np.asarray(model.apply(v, Xt)), 1) != yt))
    b_default = gonon(v, X=X, y=y, apply_fn=model.apply)
    vals = []
    for delta in (0.01, 0.05, 0.2):
        b = gonon(v, X=X, y=y, apply_fn=model.apply, delta=delta)
        assert b.value >= test_error
        vals.append(b.value)
    assert vals[0] >= vals[1] >= vals[2]
    # the value is the formula of its terms (float64 reference written here)
    t = b.terms
    L = (t["depth"] * math.log((3 + 2 * t["pool_types"]) * t["kernel"])
         + math.log((3 + 2 * t["pool_types"]) / (1 + t["pool_types"]) * (t["d_in"] + 1)
                    * t["d_out"]))
    rad = 2 * t["path_norm_grid"] * t["sigma"] * math.sqrt(L / len(X))
    ramp = float(np.mean(np.clip(1 - np.asarray(genbounds.margins(model.apply(v, X), y))
                                 / t["margin_grid"], 0, 1)))
    want = ramp + 4 * rad / t["margin_grid"] + 3 * math.sqrt(
        (math.log(2 / 0.2) + t["log_prior"]) / (2 * len(X)))
    np.testing.assert_allclose(b.value, want, rtol=1e-10)
    assert t["path_norm_grid"] >= t["path_norm"] and t["margin_grid"] <= t["margin"]
    assert t["sigma"] == max(1.0, float(np.max(np.abs(X))))
    net = Network.trace(model.apply, v, X[:4])
    np.testing.assert_allclose(t["path_norm"],
                               path_norm(net, p=1.0, convention="gonon").complexity, rtol=1e-12)
    if with_report:  # report gives the same entry
        rep = genbounds.report(v, X=X, y=y, apply_fn=model.apply, X_test=Xt, y_test=yt)
        entry = next(b for b in rep.bounds if b.name == "gonon")
        np.testing.assert_allclose(entry.value, b_default.value, rtol=1e-12)
        assert "gonon" not in dict(rep.skipped)
