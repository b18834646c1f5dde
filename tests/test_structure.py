"""Linear maps over extra axes, LayerNorm/RMSNorm read from their primitives, the block bound
of residual networks, parameters read alone, and the trainable collection of stochastic
bounds; each against a float64 numpy reference."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import promoting  # the Flax models below mix float32 and float64 in places

import genbounds
from genbounds import Network


def _x(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float64)


def _init(model, x, seed=1):
    return jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.key(seed), x))


def _operator(net, node):
    """The linear record `node` as a matrix on one example (float64), by its basis images."""
    src = net.nodes[node].inputs[0]
    shape = net.nodes[src].shape
    d = int(np.prod(shape))
    basis = jnp.eye(d, dtype=jnp.float64).reshape((d,) + shape)
    from genbounds.internal import eval_node
    out = eval_node(net.nodes[node], [basis])
    return np.asarray(out, np.float64).reshape(d, -1)


class TokenDense(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x):  # x: (batch, tokens, features)
        h = nn.Dense(5, use_bias=False, name="per_token")(x)
        h = jnp.swapaxes(h, 1, 2)
        h = nn.Dense(3, use_bias=False, name="token_mix")(h)  # over the token axis
        return nn.Dense(2)(h.reshape((h.shape[0], -1)))


def test_dense_over_extra_axes_has_the_kernels_exact_norm():
    x = _x((4, 6, 3))
    v = _init(TokenDense(), x)
    net = Network.trace(TokenDense().apply, v, x)
    norms = genbounds.spectral_norms(net)
    for path in ("per_token", "token_mix"):
        i = next(k for k, n in enumerate(net.nodes) if n.op == "linear" and n.layer.path == path)
        op = _operator(net, i)
        kernel = np.asarray(v["params"][path]["kernel"], np.float64)
        # I (x) W on one example: its norm is the kernel's, exactly
        np.testing.assert_allclose(np.linalg.norm(op, 2), np.linalg.norm(kernel, 2), rtol=1e-10)
        np.testing.assert_allclose(norms[path], np.linalg.norm(kernel, 2), rtol=1e-10)
    with pytest.raises(genbounds.NotBoundable, match="positions"):
        net.chain("spectral")


def _ln_ref(x, eps, rms=False):
    mu = 0.0 if rms else x.mean()
    u = x - mu
    return u / np.sqrt(np.mean(u * u) + eps)


@pytest.mark.parametrize("module,rms", [
    (lambda: nn.LayerNorm(epsilon=1e-3), False),
    (lambda: nn.LayerNorm(epsilon=1e-3, use_fast_variance=False), False),
    (lambda: nn.RMSNorm(epsilon=1e-3), True)])
def test_layernorm_and_rmsnorm_are_read_with_lipschitz_one_over_sqrt_eps(module, rms):
    class M(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            return nn.Dense(3)(module()(nn.Dense(6)(x)))

    x = _x((5, 4))
    v = _init(M(), x)
    net = Network.trace(M().apply, v, x)
    norm = next(n for n in net.nodes if n.op == "norm")
    assert norm.info["kind"] == ("rms" if rms else "layer")
    np.testing.assert_allclose(norm.lipschitz, 1 / np.sqrt(1e-3), rtol=1e-6)
    # the constant is the supremum of the Jacobian norm: attained at a constant input (u = 0),
    # never exceeded elsewhere (float64 finite differences of the numpy reference)
    f = lambda z: _ln_ref(z, 1e-3, rms)  # noqa: E731
    d = 6

    def jac_norm(z):
        h = 1e-6
        J = np.stack([(f(z + h * e) - f(z - h * e)) / (2 * h) for e in np.eye(d)], axis=1)
        return np.linalg.norm(J, 2)

    at_zero = jac_norm(np.zeros(d) if rms else np.full(d, 0.7))
    np.testing.assert_allclose(at_zero, 1 / np.sqrt(1e-3), rtol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert jac_norm(rng.normal(size=d) * rng.uniform(0.01, 3)) <= norm.lipschitz * (1 + 1e-6)
    b = genbounds.lipschitz(net)
    measured = max(np.linalg.norm(np.asarray(jax.jacfwd(lambda z: M().apply(v, z[None])[0])(xi)),
                                  2) for xi in x)
    assert measured <= b.complexity


class Res(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x):
        h = nn.Dense(6, use_bias=False, name="w1")(x)
        h = nn.Dense(6, use_bias=False, name="w2")(nn.relu(h))
        return nn.Dense(2, use_bias=False, name="out")(x + h)


def test_residual_block_bound_against_its_formula():
    x = _x((4, 6))
    v = _init(Res(), x)
    net = Network.trace(Res().apply, v, x)
    b = genbounds.lipschitz(net)
    k = {p: np.asarray(v["params"][p]["kernel"], np.float64) for p in ("w1", "w2", "out")}
    W1, W2, O = k["w1"].T, k["w2"].T, k["out"].T  # column convention: y = W x
    n2 = lambda a: np.linalg.norm(a, 2)  # noqa: E731
    block = n2(np.eye(6) + 0.5 * W2 @ W1) + 0.5 * n2(W2) * n2(W1)
    np.testing.assert_allclose(b.complexity, block * n2(O), rtol=1e-9)
    np.testing.assert_allclose(b.terms["composition"], (1 + n2(W2) * n2(W1)) * n2(O), rtol=1e-9)
    assert block <= 1 + n2(W2) * n2(W1)


def test_sorted_keys_with_one_chaining_order_are_accepted():
    p = {"alpha": {"kernel": np.ones((3, 2))}, "zeta": {"kernel": np.ones((4, 3))}}
    assert [la.path for la in Network.from_params(p).layers] == ["zeta", "alpha"]
    two = {"a": {"kernel": np.ones((3, 3))}, "b": {"kernel": np.ones((3, 3))}}
    with pytest.raises(ValueError, match="ambiguous"):
        Network.from_params(two)

    class M(nnx.Module):
        def __init__(self, r):
            self.zeta = nnx.Linear(4, 3, rngs=r)
            self.alpha = nnx.Linear(3, 2, rngs=r)

    m = M(nnx.Rngs(0))
    assert [la.path for la in Network.from_params(nnx.state(m)).layers] == ["zeta", "alpha"]
    assert [la.path for la in Network.from_params(m).layers] == ["zeta", "alpha"]


def test_layernorm_named_with_parameters_alone():
    class LN(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            return nn.Dense(2)(nn.LayerNorm()(nn.Dense(4)(x)))

    v = LN().init(jax.random.key(0), jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="LayerNorm module at 'LayerNorm_0'"):
        Network.from_params(v)


def test_dziugaite_roy_perturbs_only_params_with_batch_stats():
    class BN(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            h = nn.BatchNorm(use_running_average=True)(nn.Dense(6)(x))
            return nn.Dense(2)(nn.relu(h))

    x = _x((40, 3))
    v = _init(BN(), x)
    v = {**v, "batch_stats": jax.tree.map(lambda a: a + 0.3, v["batch_stats"])}
    w0 = {**_init(BN(), x, seed=2), "batch_stats": v["batch_stats"]}
    y = np.asarray(jnp.argmax(BN().apply(v, x), axis=1))
    bound, q = genbounds.pacbayes.dziugaite_roy(
        v, X=x, y=y, apply_fn=BN().apply, init_params=w0, key=jax.random.key(0),
        steps=40, chunk=20, num_mc_samples=50, batch_size=20)
    assert np.isfinite(bound.value) and 0 <= bound.value <= 1
    assert jax.tree.structure(q.mean) == jax.tree.structure(v["params"])
    assert any("'batch_stats'" in n for n in bound.notes)
    n_params = sum(a.size for a in jax.tree.leaves(v["params"]))
    assert bound.terms["num_params"] == n_params
