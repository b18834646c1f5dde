"""Spectral complexity R_A (BFT 2017 eq. 1.2) and the tree-level spectral norms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import promoting
from hypothesis import given, settings
from hypothesis import strategies as st

import genbounds
from genbounds.network import ConvSpec


def reference_complexity(kernels, refs=None):
    """float64 numpy R_A written from BFT eq. (1.2), with A_i = kernel_i^T."""
    refs = refs or [np.zeros_like(k) for k in kernels]
    s = [np.linalg.norm(np.asarray(k, np.float64), 2) for k in kernels]
    # ||A^T - M^T||_{2,1}: columns of A^T - M^T = rows of A - M = output units = kernel columns
    b = [np.sum(np.linalg.norm(np.asarray(k - m, np.float64), axis=0))
         for k, m in zip(kernels, refs, strict=True)]
    return np.prod(s) * np.sum([(bi / si) ** (2 / 3) for bi, si in zip(b, s, strict=True)]) ** 1.5


def _tree(kernels):
    return {f"Dense_{i}": {"kernel": k, "bias": np.zeros(k.shape[1])}
            for i, k in enumerate(kernels)}


def _random_kernels(rng, dims):
    return [rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])
            for i in range(len(dims) - 1)]


@pytest.mark.parametrize("method", ["exact", "certified"])
def test_complexity_matches_numpy_reference(method):
    rng = np.random.default_rng(0)
    kernels = _random_kernels(rng, [7, 12, 9, 3])
    refs = _random_kernels(rng, [7, 12, 9, 3])
    want = reference_complexity(kernels)
    got = genbounds.spectral(_tree(kernels), method=method).complexity
    if method == "exact":
        np.testing.assert_allclose(got, want, rtol=1e-10)
    else:
        assert got >= want * (1 - 1e-9)  # certified norms: never below
    got_ref = genbounds.spectral(_tree(kernels), reference=_tree(refs), method="exact")
    np.testing.assert_allclose(got_ref.complexity, reference_complexity(kernels, refs),
                               rtol=1e-10)


@pytest.mark.parametrize("L,k", [(1, 1), (3, 4), (5, 2), (7, 9)])
def test_identity_layers(L, k):
    b = genbounds.spectral(_tree([np.eye(k)] * L), method="exact")
    np.testing.assert_allclose(b.complexity, L ** 1.5 * k, rtol=1e-12)
    assert b.value is None and b.vacuous is None


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.floats(0.01, 100.0), st.integers(0, 10_000))
def test_rescaling_invariance(L, c, seed):
    rng = np.random.default_rng(seed)
    kernels = _random_kernels(rng, list(rng.integers(2, 7, size=L + 1)))
    i, j = rng.choice(L, size=2, replace=False)
    scaled = list(kernels)
    scaled[i] = kernels[i] * c
    scaled[j] = kernels[j] / c
    a = genbounds.spectral(_tree(kernels), method="exact").complexity
    b = genbounds.spectral(_tree(scaled), method="exact").complexity
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_hundred_layers_in_log_space():
    # Each layer has norm 1e4 (or 1e-4): the product overflows/underflows float64 in linear space
    for scale in (1e4, 1e-4):
        b = genbounds.spectral(_tree([scale * np.eye(3)] * 100), method="exact")
        np.testing.assert_allclose(b.terms["log_product"], 100 * np.log(scale), rtol=1e-12)
        np.testing.assert_allclose(b.terms["log_complexity"],
                                   100 * np.log(scale) + 1.5 * np.log(100 * 3 ** (2 / 3)),
                                   rtol=1e-12)
    assert b.complexity == 0.0 or b.complexity < 1e-300


class Linen(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(3)(x)


class Nnx(nnx.Module):
    def __init__(self, rngs):
        self.l0 = nnx.Linear(5, 16, rngs=rngs)
        self.l1 = nnx.Linear(16, 16, rngs=rngs)
        self.l2 = nnx.Linear(16, 3, rngs=rngs)


def test_linen_and_nnx_give_identical_results():
    params = Linen().init(jax.random.key(0), jnp.ones((1, 5), jnp.float32))["params"]
    model = Nnx(nnx.Rngs(1))
    for i, layer in enumerate([model.l0, model.l1, model.l2]):
        layer.kernel.set_value(params[f"Dense_{i}"]["kernel"])
        layer.bias.set_value(params[f"Dense_{i}"]["bias"])
    a = genbounds.spectral(params)
    for tree in (model, nnx.state(model)):
        b = genbounds.spectral(tree)
        assert a.complexity == b.complexity
        assert list(a.terms["spectral_norms"].values()) == list(b.terms["spectral_norms"].values())


def test_spectral_norms_contract():
    rng = np.random.default_rng(3)
    kernels = _random_kernels(rng, [4, 30, 20, 2])
    tree = _tree(kernels)
    for method in ("exact", "certified", "lanczos", "power"):
        norms = genbounds.spectral_norms(tree, method=method)
        assert list(norms) == ["Dense_0", "Dense_1", "Dense_2"]
        exact = [np.linalg.norm(k, 2) for k in kernels]
        if method == "exact":
            np.testing.assert_allclose(list(norms.values()), exact, rtol=1e-10)
        elif method == "certified":
            assert all(v >= e * (1 - 1e-9) for v, e in zip(norms.values(), exact, strict=True))
            assert not norms.estimated
        else:
            np.testing.assert_allclose(list(norms.values()), exact, rtol=1e-5)
            assert norms.estimated
        assert norms.method == method


def test_second_call_does_not_recompile():
    rng = np.random.default_rng(4)
    tree = _tree(_random_kernels(rng, [300, 280, 10]))
    genbounds.spectral_norms(tree)  # compile
    tree2 = _tree(_random_kernels(np.random.default_rng(5), [300, 280, 10]))
    with jax.log_compiles(True):
        import logging

        records = []

        class H(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())

        h = H()
        logging.getLogger("jax").addHandler(h)
        try:
            genbounds.spectral_norms(tree2)
        finally:
            logging.getLogger("jax").removeHandler(h)
    assert not [r for r in records if "Compiling" in r], records


def test_cnn_spectral():
    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3))(x))
            return nn.Dense(2)(x.reshape(x.shape[0], -1))

    params = CNN().init(jax.random.key(0), jnp.ones((1, 6, 6, 1), jnp.float32))["params"]
    conv = {"Conv_0": ConvSpec(input_shape=(6, 6))}
    b = genbounds.spectral(params, conv=conv)
    # reference: explicit conv operator matrix through jacfwd, positions x channel norms
    k = np.asarray(params["Conv_0"]["kernel"], np.float64)

    def conv_map(x):
        return jax.lax.conv_general_dilated(x[None], jnp.asarray(k), (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]

    jac = jax.jacfwd(conv_map)(jnp.zeros((6, 6, 1))).reshape(6 * 6 * 4, 6 * 6 * 1)
    s_conv = np.linalg.norm(np.asarray(jac), 2)
    norms = b.terms["spectral_norms"]
    assert norms["Conv_0"] >= s_conv * (1 - 1e-9)
    # the (2,1) norm is bounded by the exact operator one, summed over output units
    exact_21 = np.sum(np.linalg.norm(np.asarray(jac), axis=1))
    assert b.terms["norms_21"]["Conv_0"] >= exact_21 * (1 - 1e-12)
    with pytest.raises(ValueError, match="input shape"):
        genbounds.spectral(params)


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(method="svd"), ValueError, "method"),
        (dict(failure_probability=0.0), ValueError, "failure_probability"),
        (dict(lipschitz=[1.0]), ValueError, "lipschitz"),
        (dict(lipschitz=-1.0), ValueError, "lipschitz"),
        (dict(reference={"Dense_0": {"kernel": np.ones((3, 3))}}), ValueError, "reference"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    tree = _tree([np.eye(3), np.eye(3)])
    with pytest.raises(err, match=match):
        genbounds.spectral(tree, **kwargs)


def test_zero_layer_raises():
    with pytest.raises(ValueError, match="all zeros"):
        genbounds.spectral(_tree([np.eye(3), np.zeros((3, 3))]), method="exact")


# ---------------------------------------------------------------------------------------------
# Norm methods as one option type, the option bundle of `spectral`, measuring each matrix once.


def _count_norms(monkeypatch):
    """Records (kind, kernel bytes, geometry) of every norm the network layer computes (a
    counter on its one kernel entry point, `layer_spectral_norm`)."""
    from genbounds.internal import network_norms_module as network_norms

    calls = []
    real = network_norms.layer_spectral_norm

    def counting(layer, **kw):
        kernel = np.asarray(layer.kernel, np.float64)
        calls.append((layer.kind, kernel.shape, kernel.tobytes(), repr(layer.conv)))
        return real(layer, **kw)

    monkeypatch.setattr(network_norms, "layer_spectral_norm", counting)
    return calls


def _mlp(rng, dims):
    params = {f"Dense_{i}": {"kernel": rng.standard_normal((dims[i], dims[i + 1])),
                             "bias": 0.1 * rng.standard_normal(dims[i + 1])}
              for i in range(len(dims) - 1)}

    def apply_fn(p, x):
        for i in range(len(dims) - 1):
            x = x @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"]
            if i < len(dims) - 2:
                x = jax.nn.relu(x)
        return x

    return params, apply_fn


def test_report_measures_each_matrix_once(monkeypatch):
    # A 3-layer MLP with init_params: the weights, the bias-augmented weights (spectral,
    # spectral_init, pac_bayes, pac_bayes_init) and W - W0 (distance from init): 9 matrices.
    rng = np.random.default_rng(0)
    params, f = _mlp(rng, [5, 8, 8, 3])
    init, _ = _mlp(rng, [5, 8, 8, 3])
    X = rng.standard_normal((60, 5))
    y = np.argmax(np.asarray(f(params, X)), axis=1)
    calls = _count_norms(monkeypatch)
    rep = genbounds.report(params, X=X, y=y, apply_fn=f, init_params=init)
    assert not rep.skipped
    assert len(calls) == len(set(calls)) == 9
    # the shared numbers are those of a fresh computation
    spec = next(b for b in rep.bounds if b.name == "spectral")
    fresh = genbounds.spectral(params, X=X, y=y, apply_fn=f, margin_quantile=0.1)
    assert spec.value == fresh.value and spec.terms["grid"] == fresh.terms["grid"]


def test_cnn_spectral_measures_the_conv_operator_once(monkeypatch):
    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(3, (3, 3))(x))
            return nn.Dense(2)(x.reshape(x.shape[0], -1))

    model = CNN()
    params = model.init(jax.random.key(0), jnp.ones((1, 6, 6, 1), jnp.float32))["params"]
    X = np.asarray(jax.random.normal(jax.random.key(1), (40, 6, 6, 1)))
    apply_fn = promoting(lambda p, x: model.apply({"params": p}, x))  # float32 net, float64 X
    y = np.argmax(np.asarray(apply_fn(params, X)), axis=1)
    calls = _count_norms(monkeypatch)
    b = genbounds.spectral(params, X=X, y=y, apply_fn=apply_fn)
    convs = [c for c in calls if c[0] == "conv"]
    assert len(convs) == len(set(convs)) == 1
    assert len(calls) == len(set(calls))
    assert b.value is not None and b.terms["spectral_norms"]["Conv_0"] > 0


def test_norm_cache_key_holds_what_changes_the_number(monkeypatch):
    rng = np.random.default_rng(1)
    params, f = _mlp(rng, [4, 6, 2])
    net = genbounds.Network.trace(f, params, np.ones((2, 4)))
    calls = _count_norms(monkeypatch)
    a = genbounds.spectral_norms(net)
    assert genbounds.spectral_norms(net) is a and len(calls) == 2
    genbounds.spectral_norms(net, method="lanczos")  # another method: measured again
    genbounds.spectral_norms(net, method="lanczos", key=jax.random.key(3))  # another start
    genbounds.spectral_norms(net, method="lanczos", tol=1e-9)  # another option
    assert len(calls) == 8
    genbounds.spectral_norms(net, method="exact")  # exact = certified here, but asked apart
    assert len(calls) == 10
    other, _ = _mlp(rng, [4, 6, 2])  # other values, same shapes: measured
    genbounds.spectral_norms(genbounds.Network.trace(f, other, np.ones((2, 4))))
    assert len(calls) == 12


def test_norm_method_object_and_strings_agree():
    from genbounds.linalg import NormMethod

    rng = np.random.default_rng(2)
    tree = _tree(_random_kernels(rng, [6, 9, 3]))
    for name, opts in [("lanczos", {"tol": 1e-10}), ("power", {"max_iter": 50}),
                       ("gram", {"gram_iters": 6}), ("exact", {}), ("certified", {"rtol": 1e-2})]:
        by_name = genbounds.spectral_norms(tree, method=name, **opts)
        by_object = genbounds.spectral_norms(tree, method=NormMethod(name, **opts))
        assert dict(by_name) == dict(by_object) and by_object.method == name
        c1 = genbounds.spectral(tree, method=name, **opts).complexity
        assert genbounds.spectral(tree, method=NormMethod(name, **opts)).complexity == c1
    W = rng.standard_normal((5, 4))
    assert (genbounds.linalg.spectral_norm(W, method=NormMethod("lanczos", tol=1e-9)).value
            == genbounds.linalg.spectral_norm(W, method="lanczos", tol=1e-9).value)
    k = rng.standard_normal((3, 3, 2, 2))
    kw = dict(input_shape=(5, 5), padding="SAME")
    by_object = genbounds.linalg.conv_operator_norm(k, method=NormMethod("lanczos", tol=1e-8),
                                                    **kw)
    by_name = genbounds.linalg.conv_operator_norm(k, method="power", tol=1e-8, **kw)
    assert by_object.value == by_name.value and by_object.method == by_name.method


def test_unknown_norm_options_are_refused_by_name():
    from genbounds.linalg import NormMethod

    tree = _tree([np.eye(3), np.eye(3)])
    with pytest.raises(TypeError, match="'foo'"):
        genbounds.spectral_norms(tree, foo=1)
    with pytest.raises(TypeError, match="'foo'"):
        genbounds.spectral_complexity(tree, foo=1)
    with pytest.raises(TypeError, match="'foo'"):
        genbounds.spectral(tree, foo=1)
    with pytest.raises(TypeError, match="'bogus'"):
        genbounds.spectral(tree, options=genbounds.bounds.SpectralOptions(), bogus=2)
    with pytest.raises(ValueError, match="method"):
        NormMethod("svd")
    with pytest.raises(ValueError, match="tol"):
        NormMethod("lanczos", tol=-1.0)
    with pytest.raises(ValueError, match="inside the NormMethod"):
        genbounds.spectral_norms(tree, method=NormMethod("lanczos", tol=1e-3), tol=1e-9)


def test_spectral_option_bundle_equals_keywords():
    from genbounds.bounds import SpectralOptions
    from genbounds.linalg import NormMethod

    rng = np.random.default_rng(3)
    params, f = _mlp(rng, [4, 7, 3])
    X = rng.standard_normal((50, 4))
    y = np.argmax(np.asarray(f(params, X)), axis=1)
    by_kw = genbounds.spectral(params, X=X, y=y, apply_fn=f, margin_quantile=0.05, delta=0.1,
                               grid_loss=0.1, method="exact")
    opts = SpectralOptions(margin_quantile=0.05, delta=0.1, grid_loss=0.1,
                           method=NormMethod("exact"))
    by_bundle = genbounds.spectral(params, X=X, y=y, apply_fn=f, options=opts)
    assert by_bundle.value == by_kw.value and by_bundle.delta == 0.1
    # a keyword applies over the bundle
    over = genbounds.spectral(params, X=X, y=y, apply_fn=f, options=opts, delta=0.05)
    plain = genbounds.spectral(params, X=X, y=y, apply_fn=f, margin_quantile=0.05,
                               grid_loss=0.1, method="exact")
    assert over.value == plain.value
    assert SpectralOptions().method == NormMethod() and SpectralOptions().delta == 0.05


def test_certified_lanczos_path_at_bound_level():
    # 600 x 700: m n min(m, n) > 2^27, so the certified norm runs Lanczos with its certificate
    # instead of the host SVD; the bound charges its failure probability to delta.
    rng = np.random.default_rng(4)
    params, f = _mlp(rng, [600, 700, 4])
    for leaf in params.values():
        leaf["kernel"] *= 0.05
    X = rng.standard_normal((40, 600))
    y = np.argmax(np.asarray(f(params, X)), axis=1)
    norms = genbounds.spectral_norms(params)
    r = norms.results["Dense_0"]
    assert r.method == "certified-lanczos" and not r.estimated
    assert r.failure_probability == 1e-6 and norms.failure_probability == 1e-6
    truth = np.linalg.norm(np.asarray(params["Dense_0"]["kernel"], np.float64), 2)
    assert truth * (1 - 1e-12) <= r.value <= truth * (1 + 1e-3) * (1 + 1e-12)
    b = genbounds.spectral(params, X=X, y=y, apply_fn=f)
    assert b.terms["spectral_norms"]["Dense_0"] == r.value
    assert b.terms["failure_probability"] >= 1e-6 and not b.estimated
    assert b.terms["delta_bound"] < 0.05
    # the augmented [[A, b], [0, 1]] is certified too, and above its float64 SVD
    W0 = np.asarray(params["Dense_0"]["kernel"], np.float64)
    b0 = np.asarray(params["Dense_0"]["bias"], np.float64)
    aug = np.block([[W0, np.zeros((600, 1))], [b0[None, :], np.ones((1, 1))]])
    assert b.terms["grid"]["s"][0] >= np.linalg.norm(aug, 2) * (1 - 1e-12)
