"""Certified training (IBP, CROWN-IBP) in genbounds.train: the bounds in the loss are
genbounds.verify's, the loss is Zhang et al.'s (2020) objective, training raises certified radii,
and bad arguments are refused by name."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genbounds import Network
from genbounds.data import Dataset
from genbounds.train import MLP, train
from genbounds.train._certified import CertifiedSpec, ParamOps, robust_loss
from genbounds.verify import Propagator, crown_radius


def _net(seed=0, d=4, k=3, features=(8, 6)):
    model = MLP(features=features, num_classes=k)
    x = jax.random.normal(jax.random.key(seed + 1), (5, d), jnp.float32)
    params = model.init(jax.random.key(seed), x)["params"]
    # non-zero biases, so that they enter the bounds
    params = jax.tree.map(lambda p: p + 0.1 * jnp.ones_like(p), params)

    def apply(p, x):
        return model.apply({"params": p}, x)

    return model, params, apply, x


@pytest.mark.parametrize("norm", [pytest.param("linf", marks=pytest.mark.slow), "l2"])
def test_training_bounds_are_verifys_and_loss_is_the_objective(norm):
    _, params, apply, x = _net()
    y = jnp.array([0, 1, 2, 1, 0])
    eps = 0.3
    pops = ParamOps(apply, params, x)
    net = Network.trace(apply, params, x)
    ms = {}
    for method in ("ibp", "crown"):
        ref = Propagator(net, norm=norm, method=method, intermediate="ibp",
                         dtype=jnp.float32).margins(x, eps, y)
        got = jax.jit(lambda p, m=method: pops.margins(p, x, jnp.full(5, eps, jnp.float32), y,
                                                       norm=norm, method=m))(params)
        ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
        fin = np.isfinite(ref)
        assert np.array_equal(fin, np.isfinite(got))
        # verify's bounds also enclose their float rounding: a hair lower than training's
        assert np.all(ref[fin] <= got[fin] + 1e-6)
        np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-4, atol=1e-4)
        ms[method] = np.where(fin, ref, 0.0)
    # the loss: kappa CE(z) + (1 - kappa) CE(-(beta m_crown + (1 - beta) m_ibp)), in float64
    spec = CertifiedSpec("crown-ibp", eps, norm, 0, 1, 0.5, 0.0)
    z = np.asarray(apply(params, x), np.float64)
    kappa, beta = 0.25, 0.6
    loss = jax.jit(lambda p, z: robust_loss(pops, spec, p, z, x, y, jnp.float32(eps),
                                            jnp.float32(kappa), jnp.float32(beta)))
    got = loss(params, jnp.asarray(z, jnp.float32))

    def ce(logits):
        m = logits.max(1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(1))
        return lse - logits[np.arange(5), np.asarray(y)]

    m = beta * ms["crown"] + (1 - beta) * ms["ibp"]
    want = kappa * ce(z) + (1 - kappa) * ce(-m)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5)
    # a lower bound: no sampled point of the ball has a smaller margin
    u = jax.random.uniform(jax.random.key(7), (200,) + x.shape, jnp.float32, minval=-1,
                           maxval=1)
    if norm == "l2":
        u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    zs = np.asarray(jax.vmap(lambda d: apply(params, x + eps * d))(u), np.float64)
    true = zs[:, np.arange(5), np.asarray(y)][..., None] - zs
    assert np.all(ms["crown"][None] <= true + 1e-5)
    assert np.all(ms["crown"] >= ms["ibp"] - 1e-6)  # CROWN-IBP is the max of both


def test_gradient_of_the_bound_matches_finite_differences():
    """jax.grad through the rebuilt records (linear_transpose of records holding traced
    kernels) agrees with a central difference of the bound along a random direction."""
    _, params, apply, x = _net(seed=3)
    y = jnp.array([0, 1, 2, 1, 0])
    pops = ParamOps(apply, params, x)

    @jax.jit
    def f(p):
        m = pops.margins(p, x, jnp.full(5, 0.2, jnp.float32), y, norm="linf", method="crown")
        return jnp.sum(jnp.where(jnp.isfinite(m), m, 0.0))

    g = jax.jit(jax.grad(f))(params)
    direction = jax.tree.map(
        lambda p: jax.random.normal(jax.random.key(5), p.shape, jnp.float32), params)
    h = 1e-3
    shifted = [jax.tree.map(lambda a, d, t=t: a + t * d, params, direction) for t in (h, -h)]
    fd = (float(f(shifted[0])) - float(f(shifted[1]))) / (2 * h)
    dd = sum(float(jnp.sum(a * b)) for a, b in zip(jax.tree.leaves(g),
                                                     jax.tree.leaves(direction), strict=True))
    assert fd == pytest.approx(dd, rel=1e-2)


def test_l2_crown_ibp_gradients_are_finite():
    """The margin of an example's own class has a zero specification, whose l2 dual norm is 0:
    its gradient must be a subgradient (0), not the square root's NaN, which had made every
    l2 CROWN-IBP training run stop as diverged in its first epoch."""
    _, params, apply, x = _net()
    y = jnp.array([0, 1, 2, 1, 0])
    pops = ParamOps(apply, params, x)
    spec = CertifiedSpec("crown-ibp", 0.3, "l2", 0, 1, 0.5, 0.0)

    def loss(p):
        return jnp.sum(robust_loss(pops, spec, p, apply(p, x), x, y, jnp.float32(0.3),
                                   jnp.float32(0.25), jnp.float32(0.6)))

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert any(np.any(np.asarray(g) != 0) for g in leaves)


def _strip(n=100, d=10, seed=0):
    """Two classes by the sign of x_0, |x_0| > 0.3, the other d - 1 coordinates uniform noise
    in [-1, 1]: every point is >= 0.3 (l-infinity) from the boundary x_0 = 0."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (3 * n, d))
    X = X[np.abs(X[:, 0]) > 0.3][:n].astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int32)
    return Dataset(X, y, X, y, num_classes=2, input_shape=(d,), name="strip")


@pytest.mark.slow
def test_crown_ibp_training_raises_certified_radii():
    """On a low-dimensional toy task, the same net and budget trained with CROWN-IBP at
    eps = 0.2 has larger CROWN-certified l-infinity radii than trained normally (measured:
    median 0.40 against 0.30; in 2-D both already reach the distance to the boundary)."""
    ds = _strip()
    spec = {"kind": "mlp", "depth": 1, "width": 16}
    kw = dict(batch_size=50, max_epochs=12, stop=None, lr=2e-2, seed=0)
    plain = train(spec, ds, **kw)
    cert = train(spec, ds, certified="crown-ibp", certified_eps=0.2, certified_warmup=1,
                 certified_ramp=6, **kw)
    assert cert.train_acc == 1.0 and plain.train_acc == 1.0
    radii = {}
    for name, r in (("plain", plain), ("cert", cert)):
        rad = crown_radius(r.params, X=ds.X_test[:64], y=ds.y_test[:64],
                           apply_fn=lambda p, x, m=r.model: m.apply({"params": p}, x),
                           norm="linf", search_steps=10)
        radii[name] = rad.radius
    assert np.median(radii["cert"]) > 1.2 * np.median(radii["plain"])
    assert np.mean(radii["cert"] >= 0.2) > np.mean(radii["plain"] >= 0.2)


def test_certified_epochs_raise_the_certified_margins():
    """Fast variant: IBP training at the full radius from the first step (kappa = 0) raises
    the interval lower bounds of the training margins above those at initialisation."""
    ds = _strip(n=40, d=4)
    spec = {"kind": "mlp", "depth": 1, "width": 8}
    r = train(spec, ds, max_epochs=3, batch_size=40, stop=None, lr=1e-2, seed=1,
              certified="ibp", certified_eps=0.1, certified_kappa=0.0)
    x, y = jnp.asarray(ds.X_train), jnp.asarray(ds.y_train)
    pops = ParamOps(lambda p, v: r.model.apply({"params": p}, v), r.params, x)
    worst = []
    for p in (r.init_params, r.params):
        m = np.asarray(pops.margins(p, x, jnp.full(40, 0.1, jnp.float32), y, norm="linf",
                                    method="ibp"))
        worst.append(np.mean(np.min(m, axis=1)))
    assert worst[1] > worst[0]


def test_certified_arguments_are_checked():
    ds = _strip(40, d=2)
    spec = {"kind": "mlp", "depth": 1, "width": 4}
    bad = [
        (dict(certified="pgd", certified_eps=0.1), "certified"),
        (dict(certified="ibp"), "certified_eps"),
        (dict(certified="ibp", certified_eps=-0.1), "certified_eps"),
        (dict(certified="ibp", certified_eps=0.1, certified_norm="l1"), "certified_norm"),
        (dict(certified="ibp", certified_eps=0.1, certified_ramp=0), "certified_ramp"),
        (dict(certified="ibp", certified_eps=0.1, certified_warmup=-1), "certified_warmup"),
        (dict(certified="ibp", certified_eps=0.1, certified_kappa=1.5), "certified_kappa"),
        (dict(certified="crown-ibp", certified_eps=0.1, certified_beta=-0.5), "certified_beta"),
        (dict(certified="ibp", certified_eps=0.1, lipschitz_margin=0.5), "lipschitz_margin"),
        (dict(certified="ibp", certified_eps=0.1, certified_ramp=5), "max_epochs"),
        (dict(certified_eps=0.1), "certified_eps"),
    ]
    for kwargs, name in bad:
        with pytest.raises(ValueError, match=name):
            train(spec, ds, max_epochs=3, **kwargs)


def test_unsupported_networks_are_refused_by_name():
    class Tanh(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(2)(jnp.tanh(nn.Dense(4)(x)))

    class LayerNormed(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(2)(nn.relu(nn.LayerNorm()(nn.Dense(4)(x))))

    ds = _strip(40, d=2)
    for model, what in ((Tanh(), "tanh"), (LayerNormed(), "LayerNorm")):
        with pytest.raises(ValueError, match=r"train: certified training supports .* got .*"
                                             + what):
            train(model, ds, max_epochs=2, certified="ibp", certified_eps=0.1)
