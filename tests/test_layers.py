import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import promoting  # the float32 models below are applied to float64 data
from hypothesis import given, settings
from hypothesis import strategies as st

from genbounds.network import ConvSpec, read_layers


class DeepMLP(nn.Module):
    widths: tuple

    @nn.compact

    @promoting
    def __call__(self, x):
        for i, w in enumerate(self.widths):
            x = nn.Dense(w)(x)
            if i < len(self.widths) - 1:
                x = nn.relu(x)
        return x


def _linen_params(widths, d_in=3, seed=0):
    return DeepMLP(tuple(widths)).init(jax.random.key(seed), jnp.ones((1, d_in)))


def test_linen_twelve_layers_in_numeric_order():
    widths = [4 + i for i in range(12)]
    variables = _linen_params(widths)
    for tree in (variables, variables["params"], jax.tree.map(lambda x: x, variables["params"])):
        layers = read_layers(tree)
        assert [layer.path for layer in layers] == [f"Dense_{i}" for i in range(12)]
        assert [layer.fan_out for layer in layers] == widths


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=12, max_size=16), st.randoms(use_true_random=False))
def test_order_recovered_from_any_insertion_order(widths, rnd):
    # A plain dict written in a scrambled order with auto-numbered names: natural order wins
    # when the insertion order is the lexicographic one; a scrambled order is taken as given,
    # so it is only accepted if the shapes chain.
    d_in = 2
    dims = [d_in] + widths
    tree = {f"Dense_{i}": {"kernel": np.ones((dims[i], dims[i + 1])), "bias": np.zeros(dims[i + 1])}
            for i in range(len(widths))}
    lex = {k: tree[k] for k in sorted(tree)}  # what jax.tree.map returns
    layers = read_layers(lex)
    assert [layer.path for layer in layers] == [f"Dense_{i}" for i in range(len(widths))]
    keys = list(tree)
    rnd.shuffle(keys)
    scrambled = {k: tree[k] for k in keys}
    chains = all(tree[a]["kernel"].shape[1] == tree[b]["kernel"].shape[0]
                 for a, b in zip(keys[:-1], keys[1:], strict=True))
    if keys == sorted(keys):
        return
    if chains:
        assert [layer.path for layer in read_layers(scrambled)] == keys
    else:
        with pytest.raises(ValueError, match="do not chain"):
            read_layers(scrambled)


class NnxMLP(nnx.Module):
    def __init__(self, widths, d_in, rngs):
        dims = [d_in] + list(widths)
        self.layers = nnx.List([nnx.Linear(dims[i], dims[i + 1], rngs=rngs)
                                for i in range(len(widths))])

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


def test_nnx_module_and_state_match_linen():
    widths = [5 + i for i in range(11)]
    lin = _linen_params(widths)["params"]
    model = NnxMLP(widths, 3, nnx.Rngs(0))
    for i, layer in enumerate(model.layers):  # same weights as the linen net
        layer.kernel.set_value(lin[f"Dense_{i}"]["kernel"])
        layer.bias.set_value(lin[f"Dense_{i}"]["bias"])
    a = read_layers(lin)
    for tree in (model, nnx.state(model), nnx.state(model, nnx.Param)):
        b = read_layers(tree)
        assert [layer.path for layer in b] == [f"layers/{i}" for i in range(11)]
        for la, lb in zip(a, b, strict=True):
            np.testing.assert_array_equal(la.kernel, lb.kernel)
            np.testing.assert_array_equal(la.bias, lb.bias)


def test_plain_lists_and_pairs():
    w1, w2, b2 = np.ones((3, 4)), np.ones((4, 2)), np.zeros(2)
    layers = read_layers([w1, (w2, b2)])
    assert [layer.kernel.shape for layer in layers] == [(3, 4), (4, 2)]
    assert layers[0].bias is None and layers[1].bias.shape == (2,)
    layers = read_layers({"hidden": {"w": w1}, "out": {"w": w2, "b": b2}})
    assert [layer.path for layer in layers] == ["hidden", "out"]


def test_explicit_order_overrides():
    tree = {"b_first": {"kernel": np.ones((3, 4))}, "a_second": {"kernel": np.ones((4, 4))}}
    # insertion order is not lexicographic, so it is taken as the application order
    assert [layer.path for layer in read_layers(tree)] == ["b_first", "a_second"]
    layers = read_layers(tree, layers=["b_first", "a_second"])
    assert [layer.path for layer in layers] == ["b_first", "a_second"]
    with pytest.raises(ValueError, match="exactly once"):
        read_layers(tree, layers=["b_first"])
    with pytest.raises(ValueError, match="unknown"):
        read_layers(tree, layers=["b_first", "nope"])
    with pytest.raises(ValueError, match="do not chain"):
        read_layers(tree, layers=["a_second", "b_first"])


def test_ambiguous_order_raises():
    tree = {"hidden": {"kernel": np.ones((4, 4))}, "output": {"kernel": np.ones((4, 4))}}
    with pytest.raises(ValueError, match="ambiguous"):
        read_layers(tree)
    assert len(read_layers(tree, layers=["output", "hidden"])) == 2


@pytest.mark.parametrize(
    "tree,err,match",
    [
        ({}, ValueError, "empty"),
        ([], ValueError, "empty"),
        ({"a": {"bias": np.zeros(3)}}, ValueError, "no kernel"),
        ({"a": {"b": np.zeros((3,))}, "c": np.zeros(())}, ValueError, "no kernel"),
        ({"a": {"kernel": np.array([[1.0, np.nan]])}}, ValueError, "finite"),
        ({"a": {"kernel": np.array([[np.inf]])}}, ValueError, "finite"),
        ({"Dense_0": {"kernel": np.ones((3, 4))}, "Dense_1": {"kernel": np.ones((5, 2))}},
         ValueError, "do not chain"),
        ({"Dense_0": {"kernel": np.ones((3, 4)), "bias": np.ones(3)}}, ValueError, "bias"),
        ({"a": "not an array"}, TypeError, "tree of arrays"),
        ({"a": {"scale": np.ones(3)}, "b": {"kernel": np.ones((3, 3))}}, ValueError,
         "neither a bias"),
        ({"a": {"scale": np.ones(3), "bias": np.ones(3)}, "b": {"kernel": np.ones((3, 3))}},
         ValueError, "normalisation"),
    ],
)
def test_bad_trees(tree, err, match):
    with pytest.raises(err, match=match):
        read_layers(tree)


class BNNet(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x, train=False):
        x = nn.Dense(6)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x)
        x = nn.Dense(3)(x)
        return x


def _apply_layers(layers, x):
    for i, layer in enumerate(layers):
        # float64 x, float32 or (folded with float64 statistics) float64 weights
        x = x @ layer.kernel.astype(x.dtype) + (0 if layer.bias is None else layer.bias.astype(x.dtype))
        if i < len(layers) - 1:
            x = jax.nn.relu(x)
    return x


def test_batchnorm_folding_leaves_function_unchanged():
    model = BNNet()
    x = jax.random.normal(jax.random.key(1), (32, 4), dtype=jnp.float64)
    variables = model.init(jax.random.key(0), x)
    # give BatchNorm non-trivial statistics and affine parameters
    variables = jax.tree.map(lambda v: v, variables)  # sorted keys: creation order is lost
    with pytest.raises(ValueError, match="ambiguous"):
        read_layers(variables)
    order = ["Dense_0", "BatchNorm_0", "Dense_1"]
    variables["batch_stats"]["BatchNorm_0"]["mean"] = jnp.linspace(-1, 1, 6)
    variables["batch_stats"]["BatchNorm_0"]["var"] = jnp.linspace(0.5, 2, 6)
    variables["params"]["BatchNorm_0"]["scale"] = jnp.linspace(0.3, 1.7, 6)
    variables["params"]["BatchNorm_0"]["bias"] = jnp.linspace(-0.2, 0.4, 6)
    layers = read_layers(variables, layers=order)
    assert [layer.path for layer in layers] == ["Dense_0", "Dense_1"] and layers[0].folded
    unsorted = {"params": {k: variables["params"][k] for k in order},
                "batch_stats": variables["batch_stats"]}
    assert read_layers(unsorted)[0].folded  # creation order kept: nothing to ask
    np.testing.assert_allclose(_apply_layers(layers, x), model.apply(variables, x),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="running statistics"):
        read_layers(variables["params"], layers=order)
    with pytest.raises(ValueError, match="normalisation modules"):
        read_layers(variables, layers=["Dense_0", "Dense_1"])


def test_conv_layers_and_geometry():
    class CNN(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3))(x))
            x = nn.relu(nn.Conv(5, (3, 3), strides=2)(x))
            return nn.Dense(2)(x.reshape(x.shape[0], -1))

    params = CNN().init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
    spec = {"Conv_0": ConvSpec(input_shape=(8, 8)),
            "Conv_1": ConvSpec(strides=2, input_shape=(8, 8))}
    layers = read_layers(params, conv=spec)
    assert [layer.kind for layer in layers] == ["conv", "conv", "dense"]
    assert layers[1].conv.strides == 2 and layers[0].conv.input_shape == (8, 8)
    assert layers[0].window == (3, 3) and layers[0].matrix.shape == (9, 4)
    with pytest.raises(ValueError, match="not convolutions"):
        read_layers(params, conv={"Dense_0": ConvSpec()})
