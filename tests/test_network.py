"""The traced network: order, geometry, folding, refusals, verification, Lipschitz bounds."""

from __future__ import annotations

import contextlib
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import promoting  # the float32 models below are applied to float64 data

import genbounds
from genbounds import Network, NotBoundable

KEY = jax.random.key(0)


# ----------------------------------------------------------------------------------------------
# Networks written as a user would write them.


class CNN(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), strides=2, padding="SAME", name="stem")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.Conv(6, (3, 3), padding="VALID", name="body")(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(5, name="head")(x)


class Residual(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x):
        h = nn.Dense(16, name="embed")(x)
        h = h + nn.Dense(16, name="mix")(nn.relu(nn.Dense(16, name="hidden")(h)))
        return nn.Dense(3, name="out")(nn.relu(h))


class ResCNN(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x):
        h = nn.relu(nn.Conv(3, (3, 3), name="c0")(x))
        h = h + nn.Conv(3, (3, 3), name="c1")(nn.relu(nn.Conv(3, (3, 3), name="c2")(h)))
        return nn.Dense(2, name="fc")(h.reshape((h.shape[0], -1)))


class Nested(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x):
        x = nn.relu(nn.Dense(8, name="body")(x))
        x = nn.relu(nn.Dense(8, name="alpha")(x))
        return nn.Dense(8, name="aardvark")(x)


class Encoder(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x):
        return Nested(name="encoder")(nn.Dense(8, name="zeta")(x))


def _init(model, x):
    return model.init(KEY, x)


def _x(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def _operator_matrix(layer, input_shape):
    """The explicit matrix of a conv layer's linear map (no bias), built by jacfwd."""
    cin = layer.kernel.shape[-2]

    def f(v):
        x = v.reshape((1, *input_shape, cin))
        y = jax.lax.conv_general_dilated(
            x, layer.kernel, layer.conv.strides, layer.conv.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
        return y.reshape(-1)

    n = int(np.prod(input_shape)) * cin
    return np.asarray(jax.jacfwd(f)(jnp.zeros(n, layer.kernel.dtype)), np.float64)


def _jacobian_norm(apply, x):
    jac = jax.jacfwd(lambda v: apply(v[None])[0])(x)
    return float(np.linalg.norm(np.asarray(jac, np.float64).reshape(jac.shape[0], -1), 2))


# ----------------------------------------------------------------------------------------------
# Order, geometry, verification.


def test_cnn_order_geometry_and_reevaluation():
    x = _x((3, 16, 16, 2))
    v = _init(CNN(), x)
    net = Network.trace(CNN().apply, v, x)
    assert [layer.path for layer in net.layers] == ["stem", "body", "head"]
    stem, body, head = net.layers
    # 'SAME' with stride 2 on 16: out 8, total padding max((8-1)*2+3-16, 0) = 1 -> (0, 1)
    assert stem.conv.strides == (2, 2) and stem.conv.padding == ((0, 1), (0, 1))
    assert stem.conv.input_shape == (16, 16)
    assert body.conv.padding == ((0, 0), (0, 0)) and body.conv.input_shape == (4, 4)
    assert head.kind == "dense" and head.kernel.shape == (6, 5)
    np.testing.assert_allclose(net.evaluate(x), CNN().apply(v, x), rtol=1e-5, atol=1e-5)
    ops = [n.op for n in net.nodes]
    assert ops == ["input", "linear", "activation", "pool", "linear", "activation", "pool",
                   "reshape", "linear"]
    pools = [n for n in net.nodes if n.op == "pool"]
    assert pools[0].lipschitz == 1.0  # non-overlapping max pool
    assert pools[1].lipschitz == pytest.approx(0.5)  # 2x2 average, non-overlapping: 1/2
    assert net.structure == "chain"


def test_conv_norms_match_explicit_operator():
    with contextlib.nullcontext():
        x = _x((2, 16, 16, 2)).astype(jnp.float64)
        v = jax.tree.map(lambda a: a.astype(jnp.float64), _init(CNN(), x))
        net = Network.trace(CNN().apply, v, x)
        exact = genbounds.spectral_norms(net, method="exact")
        cert = genbounds.spectral_norms(net)
        for layer in net.layers[:2]:
            m = _operator_matrix(layer, layer.conv.input_shape)
            truth = np.linalg.norm(m, 2)
            np.testing.assert_allclose(exact[layer.path], truth, rtol=1e-10)
            assert cert[layer.path] >= truth * (1 - 1e-12)


def test_pooling_lipschitz_constants_hold():
    # overlapping 3x3 max pool with stride 1: coverage 9, Lipschitz <= 3; check on random pairs
    class Pool(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            x = nn.Conv(2, (1, 1), use_bias=False)(x)
            x = nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")
            return nn.Dense(2)(x.reshape((x.shape[0], -1)))

    x = _x((2, 6, 6, 1))
    v = _init(Pool(), x)
    net = Network.trace(Pool().apply, v, x)
    pool = next(n for n in net.nodes if n.op == "pool")
    assert pool.lipschitz == pytest.approx(3.0)
    a, b = _x((200, 6, 6, 2), 2), _x((200, 6, 6, 2), 3)
    def f(z):
        return jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1),
                                     "SAME")

    ratio = (jnp.linalg.norm((f(a) - f(b)).reshape(200, -1), axis=1)
             / jnp.linalg.norm((a - b).reshape(200, -1), axis=1))
    assert float(ratio.max()) <= pool.lipschitz


@pytest.mark.parametrize("transform", ["jit", "optax"])
def test_custom_and_nested_names_after_sorting(transform):
    x = _x((4, 5))
    model = Encoder()
    v = _init(model, x)
    if transform == "jit":
        v = jax.jit(lambda t: t)(v)
    else:
        opt = optax.sgd(0.1)
        grads = jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))(v)
        updates, _ = opt.update(grads, opt.init(v))
        v = optax.apply_updates(v, updates)
    truth = ["zeta", "encoder/body", "encoder/alpha", "encoder/aardvark"]
    net = Network.trace(model.apply, v, x)
    assert [layer.path for layer in net.layers] == truth
    np.testing.assert_allclose(net.evaluate(x), model.apply(v, x), rtol=1e-5, atol=1e-6)
    # The names alone cannot tell this order: the parameters-only path refuses.
    with pytest.raises(ValueError, match="ambiguous|do not chain"):
        genbounds.spectral_norms(v)
    # With apply_fn the bound reads the traced order.
    norms = genbounds.spectral_norms(v, apply_fn=model.apply, X=x)
    assert list(norms) == truth


def test_unambiguous_sorted_names_still_read():
    # 'hidden' (5 -> 7) then 'out' (7 -> 2): only one order chains.
    p = {"out": {"kernel": np.ones((7, 2))}, "hidden": {"kernel": np.ones((5, 7))}}
    p = jax.jit(lambda t: t)(p)
    assert list(genbounds.spectral_norms(p)) == ["hidden", "out"]


def test_batchnorm_folded_and_dropout_ignored():
    class BN(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            x = nn.Conv(3, (3, 3))(x)
            x = nn.BatchNorm(use_running_average=True)(x)
            x = nn.Dropout(0.5, deterministic=True)(nn.relu(x))
            return nn.Dense(2)(x.reshape((x.shape[0], -1)))

    x = _x((2, 5, 5, 2))
    v = _init(BN(), x)
    stats = jax.tree.map(lambda a: a.astype(jnp.float64)
                         + jax.random.uniform(KEY, a.shape, minval=0.2, maxval=2.0),
                         v["batch_stats"])
    v = {"params": v["params"], "batch_stats": stats}
    net = Network.trace(BN().apply, v, x)
    conv = net.layers[0]
    assert conv.folded and conv.bias is not None
    assert [n.op for n in net.nodes] == ["input", "linear", "activation", "reshape", "linear"]
    np.testing.assert_allclose(net.evaluate(x), BN().apply(v, x), rtol=1e-5, atol=1e-5)


def test_refusals_name_the_layer():
    x = _x((3, 6))

    class LN(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            return nn.Dense(2)(nn.LayerNorm(name="norm")(nn.Dense(4)(x)))

    # LayerNorm is read from its primitives: a norm record with Lipschitz 1/sqrt(eps)
    net = Network.trace(LN().apply, _init(LN(), x), x)
    norm = next(n for n in net.nodes if n.op == "norm")
    assert norm.scope == "LN/norm" and norm.info["kind"] == "layer"
    np.testing.assert_allclose(norm.lipschitz, 1.0 / np.sqrt(1e-6), rtol=1e-6)

    class BNTrain(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            return nn.Dense(2)(nn.BatchNorm(use_running_average=False)(nn.Dense(4)(x)))

    v = _init(BNTrain(), x)
    with pytest.raises(NotBoundable, match="BatchNorm with batch statistics"):
        Network.trace(lambda p, z: BNTrain().apply(p, z, mutable=["batch_stats"])[0], v, x)

    class Gate(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            return nn.Dense(2)(nn.Dense(4)(x) * nn.Dense(4)(x))

    # a product of activations is recorded (opaque), and refused where a Lipschitz constant
    # is needed, with the reason
    gate = Network.trace(Gate().apply, _init(Gate(), x), x)
    assert [n.op for n in gate.nodes].count("opaque") == 1
    with pytest.raises(NotBoundable, match="combines two different activations"):
        genbounds.lipschitz(gate)

    class DropTrain(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            return nn.Dense(2)(nn.Dropout(0.5, deterministic=False)(nn.Dense(4)(x)))

    v = _init(DropTrain(), x)
    with pytest.raises(NotBoundable, match="Dropout in training mode"):
        Network.trace(lambda p, z: DropTrain().apply(p, z, rngs={"dropout": KEY}), v, x)


def test_what_a_network_says_about_its_reading():
    # A traced network is its real graph and reads examples in their own shape; a chain read
    # from parameter names is an assumption to check, and reads flattened examples.
    x = _x((3, 16, 16, 2))
    traced = Network.trace(CNN().apply, _init(CNN(), x), x)
    assert not traced.structure_assumed and not traced.flat_input
    p = {"Dense_0": {"kernel": np.ones((12, 3))}, "Dense_1": {"kernel": np.ones((3, 2))}}
    named = Network.from_params(p)
    assert named.structure_assumed and named.flat_input
    flat = np.arange(24.0).reshape(2, 12)
    np.testing.assert_allclose(named(flat.reshape(2, 3, 4)), named(flat), rtol=0, atol=0)


def test_verification_catches_a_mismatch():
    class MLP(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            return nn.Dense(2)(nn.relu(nn.Dense(4)(x)))

    x = _x((3, 6))
    v = _init(MLP(), x)
    net = Network.trace(MLP().apply, v, x)
    # corrupt one record: the check must fail
    node = next(n for n in net.nodes if n.op == "activation")
    node.activation = dataclasses.replace(node.activation, fn=jnp.tanh)
    got = np.asarray(net.evaluate(x))
    assert not np.allclose(got, MLP().apply(v, x), atol=1e-4)


def test_nnx_module():
    class M(nnx.Module):
        def __init__(self, rngs):
            self.first = nnx.Linear(6, 8, rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.second = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.second(nnx.gelu(self.bn(self.first(x))))

    m = M(nnx.Rngs(0))
    m.eval()
    x = _x((4, 6))
    net = Network.trace(promoting(lambda mod, z: mod(z)), m, x)
    assert [layer.path for layer in net.layers] == ["first", "second"]
    assert net.layers[0].folded
    np.testing.assert_allclose(net.evaluate(x), promoting(m)(x), rtol=1e-5, atol=1e-5)
    act = next(n for n in net.nodes if n.op == "activation").activation
    assert "erfc" in act.formula or "tanh" in act.formula  # GELU, exact or tanh form
    assert 1.12890 <= act.lipschitz <= 1.12900


# ----------------------------------------------------------------------------------------------
# Residual networks.


@pytest.mark.parametrize("model,shape", [(Residual(), (1, 7)), (ResCNN(), (1, 6, 6, 2))])
def test_residual_lipschitz_bound_holds(model, shape):
    x = _x((2,) + shape[1:])
    v = _init(model, x)
    net = Network.trace(model.apply, v, x)
    assert net.structure == "residual"
    b = genbounds.lipschitz(net)
    apply = lambda z: model.apply(v, z)  # noqa: E731
    for seed in range(5):
        xi = _x(shape, 10 + seed)[0]
        assert _jacobian_norm(apply, xi) <= b.complexity * (1 + 1e-6)
    # the chain product of norms is not a bound here; the composition bound is larger
    prod = np.prod(list(genbounds.spectral_norms(net).values()))
    assert b.terms["composition"] > prod


def test_residual_refused_by_chain_bounds():
    x = _x((60, 7))
    v = _init(Residual(), x)
    y = np.argmax(Residual().apply(v, x), axis=1)
    for fn in (genbounds.spectral, genbounds.pac_bayes, genbounds.golowich):
        with pytest.raises(NotBoundable, match="residual"):
            fn(v, X=x, y=y, apply_fn=Residual().apply)
    # parameters alone, with the logits: the names give a chain that does not reproduce them
    with pytest.raises(ValueError, match="do not reproduce the given logits"):
        genbounds.spectral(v, X=x, y=y, logits=Residual().apply(v, x),
                           layers=["embed", "hidden", "mix", "out"])
    rep = genbounds.report(v, X=x, y=y, apply_fn=Residual().apply)
    skipped = dict(rep.skipped)
    for name in ("spectral", "pac_bayes", "golowich"):
        assert "residual" in skipped[name]
    assert any(m.name == "lipschitz" for m in rep.measures)
    # sums over layers need no structure: they run; products along a chain are left out
    measures = {m.name: m for m in rep.measures}
    assert "num_weights" in measures and "l2" in measures and "prod_spec" not in measures
    assert any("not a chain" in note for note in measures["l2"].notes)


def test_chain_lipschitz_is_product():
    x = _x((3, 16, 16, 2))
    v = _init(CNN(), x)
    net = Network.trace(CNN().apply, v, x)
    norms = genbounds.spectral_norms(net)
    rho = [n.lipschitz for n in net.nodes if n.op in ("activation", "pool")]
    want = np.prod(list(norms.values())) * np.prod(rho)
    b = genbounds.lipschitz(net)
    np.testing.assert_allclose(b.terms["composition"], want, rtol=1e-12)
    assert b.complexity <= want * (1 + 1e-12)  # merged maps and blocks only ever lower it


# ----------------------------------------------------------------------------------------------
# Bounds on a CNN through report.


def test_report_on_linen_cnn():
    X = _x((64, 8, 8, 1), 4)

    class Small(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            x = nn.relu(nn.Conv(3, (3, 3), strides=2, name="conv")(x))
            return nn.Dense(5, name="fc")(x.reshape((x.shape[0], -1)))

    v = _init(Small(), X)
    y = np.array(np.argmax(Small().apply(v, X), axis=1))
    y[:3] = (y[:3] + 1) % 5  # a few errors, so the test error is not 0
    rep = genbounds.report(v, X=X, y=y, apply_fn=Small().apply,
                           X_test=X, y_test=y)
    names = {b.name for b in rep.bounds}
    assert "spectral" in names and "vc" not in names
    skipped = dict(rep.skipped)
    assert "fully connected" in skipped["pac_bayes"] and "fully connected" in skipped["golowich"]
    bft = next(b for b in rep.bounds if b.name == "spectral")
    assert bft.value >= rep.test_error and np.isfinite(bft.value)
    # the conv's spectral norm is the operator's, with the trace's geometry
    conv = bft.terms["spectral_norms"]["conv"]
    with contextlib.nullcontext():
        layer = Network.trace(Small().apply, v, X[:2]).layers[0]
        m = _operator_matrix(jax.tree.map(lambda a: a, layer), layer.conv.input_shape)
    assert conv >= np.linalg.norm(m, 2) * (1 - 1e-6)


def test_bft_conv_augmentation_is_an_upper_bound():
    """The block bounds used for a conv with bias are >= the exact augmented norms."""
    from genbounds.internal import spectral_augmented as _augmented

    x = _x((2, 5, 5, 2))

    class C(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            x = nn.relu(nn.Conv(3, (3, 3), strides=2)(x))
            return nn.Dense(2)(x.reshape((x.shape[0], -1)))

    v = _init(C(), x)
    v = jax.tree.map(lambda a: a + 0.3, v)
    with contextlib.nullcontext():
        net = Network.trace(C().apply, jax.tree.map(lambda a: a.astype(jnp.float64), v),
                            x.astype(jnp.float64))
        conv = net.layers[0]
        s, b, _, _, _ = _augmented(net, net.layers, (None, None),
                                   method=genbounds.linalg.NormMethod("exact"), key=None)
        A = _operator_matrix(conv, conv.conv.input_shape)
        P = A.shape[0] // conv.fan_out
        beta = np.tile(np.asarray(conv.bias), P)[:, None]
        top = np.concatenate([A, beta], axis=1)
        bottom = np.zeros((1, top.shape[1]))
        bottom[0, -1] = 1.0
        full = np.concatenate([top, bottom], axis=0)
        assert s[0] >= np.linalg.norm(full, 2) * (1 - 1e-12)
        assert b[0] >= np.sum(np.linalg.norm(full, axis=1)) * (1 - 1e-12)


# ----------------------------------------------------------------------------------------------
# Activations.


def test_parameters_only_conv_says_what_it_returns():
    p = {"Conv_0": {"kernel": np.ones((3, 3, 2, 4))}, "Dense_0": {"kernel": np.ones((64, 2))}}
    norms = genbounds.spectral_norms(p)
    assert "every stride, padding and input size" in repr(norms)


def test_traced_path_norm_is_float64_without_x64():
    # With jax_enable_x64 off the traced path norm is still summed in float64 (no silent
    # truncation to float32, no warning): it equals the float64 names-read chain.
    class MLP(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            return nn.Dense(3)(nn.relu(nn.Dense(6)(nn.relu(nn.Dense(5)(x)))))

    import warnings

    with jax.enable_x64(False):
        x = jnp.ones((2, 4), jnp.float32) * 0.3
        v = MLP().init(jax.random.key(0), x)
        net = Network.trace(MLP().apply, v, x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = genbounds.path_norm(net).complexity
    named = genbounds.path_norm({k: {kk: np.asarray(a, np.float64) for kk, a in d.items()}
                                 for k, d in v["params"].items()}).complexity
    np.testing.assert_allclose(got, named, rtol=1e-12)


def test_path_norm_traced_equals_chain_and_counts_skip_paths():
    class MLP(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            return nn.Dense(3)(nn.relu(nn.Dense(6)(nn.relu(nn.Dense(5)(x)))))

    x = _x((2, 4))
    v = _init(MLP(), x)
    traced = genbounds.path_norm(Network.trace(MLP().apply, v, x))
    named = genbounds.path_norm(v)
    np.testing.assert_allclose(traced.complexity, named.complexity, rtol=1e-10)

    v = _init(Residual(), _x((2, 7)))
    p = {k: {kk: np.asarray(a, np.float64) for kk, a in d.items()}
         for k, d in v["params"].items()}
    sq = {k: (np.abs(d["kernel"]) ** 2, np.abs(d["bias"]) ** 2) for k, d in p.items()}

    def lin(name, h):
        k, b = sq[name]
        return h @ k + b

    h = lin("embed", np.ones(7))
    h = h + lin("mix", lin("hidden", h))  # the skip path and the block's paths
    want = float(np.sum(lin("out", h)))
    got = genbounds.path_norm(Network.trace(Residual().apply, v, _x((2, 7))), power=True)
    np.testing.assert_allclose(got.complexity, want, rtol=1e-10)


def test_norm_measures_conv_norm_choice():
    x = _x((2, 16, 16, 2))
    v = _init(CNN(), x)
    net = Network.trace(CNN().apply, v, x)
    op = genbounds.norm_measures(net)
    rs = genbounds.norm_measures(net, conv_norm="reshaped")
    exact = genbounds.spectral_norms(net, method="exact")
    conv_paths = [layer.path for layer in net.layers if layer.kind == "conv"]
    want_op = sum(2 * np.log(v) for v in exact.values())
    want_rs = sum(2 * np.log(genbounds.reshaped_kernel_norm(layer.kernel)
                            if layer.path in conv_paths else exact[layer.path])
                  for layer in net.layers)
    assert op["log_prod_spec"].complexity >= want_op - 1e-9  # certified >= exact
    np.testing.assert_allclose(rs["log_prod_spec"].complexity, want_rs, rtol=1e-6)


def test_norms_of_one_network_are_computed_once():
    x = _x((3, 16, 16, 2))
    net = Network.trace(CNN().apply, _init(CNN(), x), x)
    a = genbounds.spectral_norms(net)
    assert genbounds.spectral_norms(net) is a  # memo: the same options
    b = genbounds.spectral_norms(net, method="exact")
    assert b is not a and b.method == "exact"
    c = genbounds.spectral_norms(net, key=jax.random.key(5))
    assert c is not a and dict(c) == pytest.approx(dict(a), rel=1e-6)
