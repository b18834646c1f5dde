"""Max and min pooling in linear bound propagation (`genbounds/verify/_pooling.py`).

The window's lines (the input with the largest lower bound; the chord of the input with the
largest upper bound) against enumeration of the windows in numpy, and above the maximum at every
corner of the window's box; on a tiny net with 2-D inputs that pools after a ReLU, after a dense
layer with overlapping padded windows, and globally (max and min): the bounds of every method
contain the outputs of dense samples of the ball, the certified radius (float32, its rounding
enclosed) never exceeds the distance to the nearest misclassified point of a dense grid,
certified training's bounds hold and have finite gradients (slow); a window made only of
padding is refused by name.
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_verify import _ball_points, _grid_distance
from test_verify import _net as _verify_net

import genbounds
from genbounds.core._checks import NotBoundable
from genbounds.verify import Propagator, crown_radius
from genbounds.verify._ops import Op
from genbounds.verify._pooling import choice


class Pooled(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(8)(x))
        h = nn.max_pool(h.reshape(-1, 8, 1), (2,), strides=(2,))  # after a ReLU
        g = nn.Dense(6)(h.reshape(-1, 4))
        # after a dense layer: overlapping windows, padded at both ends
        g = nn.max_pool(g.reshape(-1, 6, 1), (3,), strides=(1,), padding="SAME")
        g = nn.relu(g.reshape(-1, 6))
        top = jnp.max(g, axis=1, keepdims=True)
        low = jnp.min(g, axis=1, keepdims=True)
        return nn.Dense(3)(jnp.concatenate([g, top, low], axis=1))


def _net(seed: int = 0):
    return _verify_net("pooled", seed, model=Pooled())


def _windows(shape, wd, ws, pad, wdil):
    """Per output position (numpy enumeration): the flat input indices of its window."""
    out_shape = [(s + lo + hi - ((w - 1) * d + 1)) // st + 1
                 for s, w, st, (lo, hi), d in zip(shape, wd, ws, pad, wdil, strict=True)]
    result = {}
    for o in itertools.product(*map(range, out_shape)):
        members = []
        for k in itertools.product(*map(range, wd)):
            pos = [oi * st + ki * d - lo for oi, ki, st, d, (lo, _) in
                   zip(o, k, ws, wdil, pad, strict=True)]
            if all(0 <= p < s for p, s in zip(pos, shape, strict=True)):
                members.append(int(np.ravel_multi_index(pos, shape)))
        result[o] = members
    return out_shape, result


@pytest.mark.parametrize(("kind", "wd", "ws", "pad", "wdil"), [
    ("max", (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1)),
    ("max", (3, 2), (1, 2), ((1, 1), (0, 1)), (1, 1)),
    ("max", (2, 2), (1, 1), ((0, 0), (1, 0)), (2, 1)),
    ("global_max", None, None, None, None),
    ("global_min", None, None, None, None),
])
def test_the_windows_choice_is_that_of_enumeration(kind, wd, ws, pad, wdil):
    rng = np.random.default_rng(0)
    shape = (4, 5)
    b = 3
    centre = rng.normal(size=(b,) + shape)
    # a grid of values makes ties; the windows of the first element get one far above the rest
    centre = np.round(centre * 2) / 2
    centre[:, 0, 0] += 4.0
    half = rng.uniform(0.0, 0.4, size=(b,) + shape)
    lo, hi = centre - half, centre + half
    if kind.startswith("global_"):
        axes = (2,)
        info = {"kind": kind, "axes": axes, "window": shape[1]}
        out_shape = (shape[0],)
        windows = {(r,): [r * shape[1] + c for c in range(shape[1])] for r in range(shape[0])}
    else:
        info = {"kind": kind, "window": wd, "params": {
            "window_dimensions": (1,) + wd, "window_strides": (1,) + ws,
            "padding": ((0, 0),) + pad, "base_dilation": (1, 1, 1),
            "window_dilation": (1,) + wdil}}
        out_shape, windows = _windows(shape, wd, ws, pad, wdil)
        out_shape = tuple(out_shape)
    op = Op("monotone", (0,), out_shape, pool=info)
    lines = choice(op, jnp.asarray(lo), jnp.asarray(hi))
    low, up, slope, icpt = (np.asarray(v) for v in lines)
    s = -1 if kind.endswith("min") else 1
    lz, uz = (lo, hi) if s == 1 else (-hi, -lo)
    exact = 0
    for e in range(b):
        lzf, uzf = lz[e].ravel(), uz[e].ravel()
        for o, members in windows.items():
            at = (e,) + o
            assert low[at] == max(members, key=lambda k: (lzf[k], -k))  # ties: smallest index
            j = max(members, key=lambda k: (uzf[k], -k))
            assert up[at] == j
            m = max([lzf[j]] + [uzf[k] for k in members if k != j])
            want = (uzf[j] - m) / (uzf[j] - lzf[j]) if uzf[j] > lzf[j] else 0.0
            np.testing.assert_allclose(slope[at], want, rtol=1e-12)
            np.testing.assert_allclose(icpt[at], uzf[j] * (1 - want), rtol=1e-12, atol=1e-15)
            exact += bool(want == 1.0)
            # the chord lies above the maximum at the corners of the window's box
            for corner in itertools.product(*[(lzf[k], uzf[k]) for k in members]):
                x = dict(zip(members, corner, strict=True))
                assert max(corner) <= slope[at] * x[j] + icpt[at] + 1e-12
    assert 0 < exact < b * len(windows)  # dominated windows (exact) and others both occur


@pytest.mark.parametrize("norm", ["l2", pytest.param("linf", marks=pytest.mark.slow)])
def test_bounds_of_a_pooled_net_contain_the_outputs_of_samples_of_the_ball(norm):
    apply_fn, params, X, _ = _net()
    net = genbounds.Network.trace(apply_fn, params, X)
    rng = np.random.default_rng(0)
    x0 = np.asarray(X[:4])
    eps = 0.4
    pts = np.stack([_ball_points(x, eps, norm, 3000, rng) for x in x0])
    out = np.asarray(apply_fn(params, jnp.asarray(pts.reshape(-1, 2)))).reshape(4, -1, 3)
    widths = {}
    methods = [("ibp", {"method": "ibp"}), ("crown", {}),
               ("forward", {"intermediate": "forward"}),
               ("unstable-only", {"unstable_only": True})]
    if norm == "linf":  # (slow) alpha-CROWN's compilation
        methods.append(("alpha-crown", {"method": "alpha-crown"}))
    for method, kw in methods:
        lo, hi = (np.asarray(v) for v in Propagator(net, norm=norm, **kw).bounds(
            jnp.asarray(x0), eps))
        assert np.all(out >= lo[:, None] - 1e-9), method
        assert np.all(out <= hi[:, None] + 1e-9), method
        widths[method] = hi - lo
    assert np.mean(widths["crown"]) < 0.8 * np.mean(widths["ibp"])  # not vacuous
    if "alpha-crown" in widths:
        assert np.all(widths["alpha-crown"] <= widths["crown"] + 1e-9)


@pytest.mark.parametrize("norm", [pytest.param("l2", marks=pytest.mark.slow), "linf"])
def test_certified_radius_of_a_pooled_net_never_exceeds_a_misclassified_point(norm):
    apply_fn, params, X, y = _net()
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    # float32 intervals with their rounding enclosed (the default), on the float32 network
    r = crown_radius(p32, X=X[:6], y=y[:6], apply_fn=apply_fn, norm=norm, search_steps=14)
    for i in range(6):
        found = _grid_distance(apply_fn, p32, np.asarray(X[i], np.float32), y[i],
                               2.0 * r.radius[i] + 0.05, norm)
        assert r.radius[i] <= found, (i, r.radius[i], found)
    assert np.all(r.radius > 0)


@pytest.mark.slow  # (the default run's time; the l2 gradients: test_certified_training.py)
def test_certified_training_rebuilds_a_pooled_net_and_differentiates_its_bounds():
    from genbounds.train._certified import CertifiedSpec, ParamOps, robust_loss

    model = Pooled()
    x = jax.random.normal(jax.random.key(1), (5, 2), jnp.float32)
    params = model.init(jax.random.key(0), x)["params"]

    def apply(p, x):
        return model.apply({"params": p}, x)

    y = jnp.asarray(np.argmax(np.asarray(apply(params, x)), axis=1))
    pops = ParamOps(apply, params, x)
    # the bounds of the records rebuilt from the parameters hold at the centres, and have
    # gradients (through the windows' lines)
    m = np.asarray(jax.jit(lambda p: pops.margins(p, x, jnp.full(5, 0.2, jnp.float32), y,
                                                  norm="l2", method="crown"))(params))
    z = np.asarray(apply(params, x), np.float64)
    other = np.arange(3)[None] != np.asarray(y)[:, None]
    true = z[np.arange(5), np.asarray(y)][:, None] - z
    assert np.all(np.isfinite(m[other])) and np.all(m[other] <= true[other] + 1e-5)
    spec = CertifiedSpec("crown-ibp", 0.2, "l2", 0, 1, 0.5, 0.0)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(robust_loss(
        pops, spec, p, apply(p, x), x, y, jnp.float32(0.2), jnp.float32(0.25),
        jnp.float32(0.6)))))(params)
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert all(np.any(g != 0) for g in leaves)


def test_a_window_of_padding_only_is_refused_by_name():
    # tracing refuses such a network first (its outputs are -inf); the guard is for records
    # read by other means
    from genbounds.network._graph import Node
    from genbounds.verify._ops import _monotone_op

    params = {"window_dimensions": (1, 2, 1), "window_strides": (1, 2, 1),
              "padding": ((0, 0), (3, 3), (0, 0)), "base_dilation": (1, 1, 1),
              "window_dilation": (1, 1, 1)}
    node = Node("pool", (1,), (5, 1), info={"kind": "max", "window": (2,), "params": params})
    with pytest.raises(NotBoundable, match="record 2.*only padding"):
        _monotone_op(node, (4, 1), "record 2 (max pool)")
    ok = dict(params, padding=((0, 0), (1, 1), (0, 0)))
    op = _monotone_op(Node("pool", (1,), (3, 1), info={"kind": "max", "params": ok}), (4, 1),
                      "record 2 (max pool)")
    assert op.kind == "monotone" and op.terms == 2
