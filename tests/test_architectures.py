"""Every common architecture through the trace, `report`, `lipschitz` and `certified_radius`:
the nets of tests/nets.py (MLP, CNN, linen ResNet with a projection shortcut and global pooling,
nnx CNN with BatchNorm, MLP-Mixer with and without LayerNorm, a small transformer)."""

import math

import jax
import jax.numpy as jnp
import nets
import numpy as np
import pytest

import genbounds
from genbounds import Network, NotBoundable
from genbounds.adversarial import certified_radius, pgd

BOUNDED = ["mlp", "cnn", "resnet", "nnx_cnn", "mixer", "mixer_ln"]


def _some(names, fast):
    """`names` as parameters, those not in `fast` marked slow (the default run stays short;
    ``-m slow`` runs every architecture)."""
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _call(net):
    return jax.jit(lambda x: net.apply_fn(net.params, x))


def _largest_jacobian_norm(net, steps: int = 20) -> float:
    """The largest input-output Jacobian norm found at the data and by gradient ascent on
    ||J(x) v|| from there (a lower estimate of the Lipschitz constant)."""
    f = _call(net)
    one = lambda x: f(x[None])[0]  # noqa: E731
    jac = jax.jit(jax.jacfwd(one))  # jitted: eager ops on a ResNet cost tens of seconds
    ascent = jax.jit(jax.grad(lambda z, v: jnp.sum(jax.jvp(one, (z,), (v,))[1] ** 2)))
    best = 0.0
    for x in net.X[:6]:
        J = np.asarray(jac(x)).reshape(-1, x.size)
        best = max(best, float(np.linalg.norm(J, 2)))
        _, _, vt = np.linalg.svd(J)
        v = jnp.asarray(vt[0].reshape(x.shape))
        xs = x
        for _ in range(steps):  # ascend ||J(x) v|| with v the top right singular vector
            g = ascent(xs, v)
            xs = xs + 0.05 * g / (jnp.linalg.norm(g) + 1e-12)
            J = np.asarray(jac(xs)).reshape(-1, x.size)
            best = max(best, float(np.linalg.norm(J, 2)))
    return best


@pytest.mark.parametrize("name", _some(list(nets.ALL), ("nnx_cnn", "transformer")))
def test_trace_reproduces_every_architecture(name):
    net = nets.ALL[name]()
    traced = Network.trace(net.apply_fn, net.params, net.X)
    np.testing.assert_allclose(np.asarray(traced.evaluate(net.X)),
                               np.asarray(_call(net)(net.X)), rtol=1e-9, atol=1e-9)
    if name != "transformer":
        return
    # on a batch of another size too (opaque records run in chunks of the traced batch)
    np.testing.assert_allclose(np.asarray(traced.evaluate(net.X[:5])),
                               np.asarray(_call(net)(net.X[:5])), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", _some(BOUNDED, ("resnet", "mixer_ln")))
def test_lipschitz_never_below_the_largest_jacobian_norm(name):
    net = nets.ALL[name]()
    b = genbounds.lipschitz(net.params, apply_fn=net.apply_fn, X=net.X)
    measured = _largest_jacobian_norm(net)
    assert measured <= b.complexity * (1 + 1e-9)
    assert b.complexity <= b.terms["composition"] * (1 + 1e-12)


def test_resnet_block_bound_is_tighter_than_the_composition():
    net = nets.make_resnet()
    b = genbounds.lipschitz(net.params, apply_fn=net.apply_fn, X=net.X)
    assert b.terms["merged"]["blocks"]  # the residual blocks were merged
    assert b.complexity < 0.5 * b.terms["composition"]


@pytest.mark.parametrize("name", _some(["mlp", "resnet", "mixer_ln"], ("mlp", "resnet")))
def test_certified_radii_are_never_broken_by_pgd(name):
    net = nets.ALL[name]()
    r = certified_radius(net.params, X=net.X, y=net.y, apply_fn=net.apply_fn)
    assert np.all(r.radius >= 0)
    ok = r.radius > 0
    assert ok.any()
    eps = float(np.median(r.radius[ok]))
    inside = r.radius > eps  # certified at eps: PGD must not flip these
    att = pgd(net.params, X=net.X, y=net.y, apply_fn=net.apply_fn, eps=eps, norm="l2",
              steps=30, restarts=2)
    assert np.all(att.robust[inside])


def test_transformer_is_recorded_and_refused_only_where_a_lipschitz_constant_is_needed():
    net = nets.make_transformer()
    traced = Network.trace(net.apply_fn, net.params, net.X)
    ops = [n.op for n in traced.nodes]
    assert ops.count("norm") == 3 and "opaque" in ops
    # the query, key, value and output projections are dense maps over (tokens, features)
    assert sum(1 for n in traced.nodes if n.op == "linear") >= 8
    with pytest.raises(NotBoundable, match="attention"):
        genbounds.lipschitz(traced)
    with pytest.raises(NotBoundable, match="attention"):
        certified_radius(traced, X=net.X, y=net.y)


@pytest.mark.parametrize("name", _some(list(nets.ALL), ("resnet", "mixer_ln", "transformer")))
def test_report_runs_on_every_architecture(name):
    net = nets.ALL[name]()
    rep = genbounds.report(net.params, X=net.X, y=net.y, apply_fn=net.apply_fn,
                           init_params=net.init_params)
    measures = {m.name: m for m in rep.measures}
    # structure-free measures on every architecture
    for key in ("num_weights", "num_params", "l2", "l2_dist", "fro_dist", "sum_spec"):
        assert key in measures, (name, sorted(measures), rep.skipped)
    layers = Network.trace(net.apply_fn, net.params, net.X).layers
    want = math.sqrt(sum(float(np.sum(np.asarray(la.kernel, np.float64) ** 2))
                         for la in layers))
    np.testing.assert_allclose(measures["l2"].complexity, want, rtol=1e-10)
    assert measures["num_weights"].complexity == sum(la.num_weights for la in layers)
    # every entry is there or skipped with its reason
    names = {b.name for b in rep.bounds} | set(measures) | {k for k, _ in rep.skipped}
    for key in ("vc", "spectral", "pac_bayes", "golowich", "lipschitz"):
        assert key in names
    assert all(why for _, why in rep.skipped)
    if name == "transformer":
        assert "attention" in dict(rep.skipped)["lipschitz"]
    else:
        assert "lipschitz" in measures


@pytest.mark.parametrize("name", _some(["mixer_ln", "transformer", "resnet"], ()))
def test_stochastic_bound_runs_and_keeps_batch_statistics_fixed(name):
    net = nets.ALL[name]()
    opts = {"steps": 40, "chunk": 20, "num_mc_samples": 50, "batch_size": 12}
    rep = genbounds.report(net.params, X=net.X, y=net.y, apply_fn=net.apply_fn,
                           init_params=net.init_params, dziugaite_roy_options=opts)
    dr = next(b for b in rep.bounds if b.name == "dziugaite_roy")
    assert math.isfinite(dr.value) and rep.train_error <= dr.value <= 1.0
    if "batch_stats" in net.params:
        assert any("'batch_stats'" in note for note in dr.notes)


@pytest.mark.slow
def test_the_examples_of_docs_networks_run():
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "networks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for code in blocks[1:]:  # the first block's report call is commented out; it runs too
        exec(compile(code, "docs/networks.md", "exec"), {})
