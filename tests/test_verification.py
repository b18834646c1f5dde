"""What a bound reads of a network is checked on all of its data; what cannot be read is refused:
verification on every example of X, untraceable functions, half-precision networks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genbounds
from genbounds import NotBoundable


def _mlp_params(seed=0, d=4, h=8, k=3):
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(size=(d, h)), "W2": rng.normal(size=(h, k))}


def test_records_are_verified_on_every_example_not_the_first_16():
    p = _mlp_params()

    def apply(p, x):  # another function for batches larger than the one traced
        h = jax.nn.relu(x @ p["W1"])
        if x.shape[0] > 16:
            h = h + 0.5 * jnp.tanh(h)
        return h @ p["W2"]

    X = np.random.default_rng(1).normal(size=(40, 4))
    with pytest.raises(ValueError, match=r"does not reproduce apply_fn\(params, X\[0:40\]\)"):
        genbounds.lipschitz(p, apply_fn=apply, X=X)
    ok = genbounds.lipschitz(p, apply_fn=lambda p, x: jax.nn.relu(x @ p["W1"]) @ p["W2"], X=X)
    assert any("all 40 examples of X" in n for n in ok.notes)


def test_untraceable_apply_fn_is_refused_for_certified_quantities():
    p = _mlp_params()

    def numpy_apply(p, x):  # numpy inside: jax cannot read it
        return np.maximum(np.asarray(x) @ p["W1"], 0.0) @ p["W2"]

    X = np.random.default_rng(2).normal(size=(10, 4))
    y = np.argmax(numpy_apply(p, X), axis=1)
    for call in (lambda: genbounds.lipschitz(p, apply_fn=numpy_apply, X=X),
                 lambda: genbounds.certified_radius(p, X=X, y=y, apply_fn=numpy_apply),
                 lambda: genbounds.spectral(p, X=X, y=y, apply_fn=numpy_apply, margin=1.0)):
        with pytest.raises(NotBoundable, match="could not be traced by jax"):
            call()


def test_parameters_alone_say_that_relu_is_assumed():
    p = {"Dense_0": {"kernel": np.ones((3, 4))}, "Dense_1": {"kernel": np.ones((4, 2))}}
    pn = genbounds.measures.path_norm(p)
    assert any("ReLU" in n for n in pn.notes)
    with pytest.raises(NotBoundable, match="lipschitz needs the network's function"):
        genbounds.lipschitz(p)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_net_is_analysed_in_float32(dtype):
    class M(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.gelu(nn.Dense(16, dtype=dtype, param_dtype=dtype)(x))
            x = nn.elu(nn.Dense(16, dtype=dtype, param_dtype=dtype)(x))
            return nn.Dense(3, dtype=dtype, param_dtype=dtype)(x)

    X = jax.random.normal(jax.random.key(0), (32, 6)).astype(dtype)
    v = M().init(jax.random.key(1), X)
    net = genbounds.Network.trace(M().apply, v, X)
    assert all(layer.kernel.dtype == jnp.float32 for layer in net.layers)
    lip = genbounds.lipschitz(net).complexity
    # the bound holds for the function in real arithmetic: measured Jacobian norms of the
    # same network in float64 never exceed it
    v64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), v)

    class M64(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.gelu(nn.Dense(16, param_dtype=jnp.float64)(x))
            x = nn.elu(nn.Dense(16, param_dtype=jnp.float64)(x))
            return nn.Dense(3, param_dtype=jnp.float64)(x)

    jac = jax.vmap(jax.jacobian(lambda x: M64().apply(v64, x[None])[0]))
    J = np.asarray(jac(jnp.asarray(X, jnp.float64) * 3.0))
    assert np.max(np.linalg.norm(J, ord=2, axis=(1, 2))) <= lip
