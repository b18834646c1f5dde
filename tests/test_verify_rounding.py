"""The rounding enclosure of bound propagation (genbounds/verify/_rounding.py): bounds computed
in float32 hold for the network's records in real arithmetic.

References in float64: interval propagation of the same float32 weights (its rounding is 2^29
times smaller), and, on a ball small enough that no ReLU changes its state, the exact minimum of
each margin (the network is affine there: margin at the centre less the radius times the
dual norm of its gradient, computed with numpy). Without the enclosure float32 CROWN lands
above that exact minimum for some margins; with it, never.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genbounds
from genbounds.verify import Propagator
from genbounds.verify._ibp import ibp
from genbounds.verify._ops import read_ops
from genbounds.verify._propagate import spec_parts

DIMS = (48, 96, 96, 10)


def _params(seed: int):
    rng = np.random.default_rng(seed)
    ps = []
    for a, b in zip(DIMS[:-1], DIMS[1:], strict=True):
        ps.append((rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32),
                   rng.normal(0, 0.1, b).astype(np.float32)))
    return ps


def _apply(ps, x):
    for i, (k, b) in enumerate(ps):
        x = x @ k + b
        if i < len(ps) - 1:
            x = jax.nn.relu(x)
    return x


def _net(seed: int, n: int = 8):
    ps = _params(seed)
    x = np.random.default_rng(seed + 100).normal(0, 1, (n, DIMS[0])).astype(np.float32)
    net = genbounds.Network.trace(_apply, ps, jnp.asarray(x))
    return ps, x, net


def test_float32_parameters_compute_in_float32_with_the_rounding_enclosed():
    ps, x, net = _net(0)
    p = Propagator(net, norm="l2")
    assert p.dtype == jnp.float32 and p.enclose
    p64 = Propagator(net, norm="l2", intermediate="forward")  # no enclosure: float64
    assert p64.dtype == jnp.float64 and not p64.enclose
    ps64 = [(k.astype(np.float64), b.astype(np.float64)) for k, b in ps]
    q = Propagator(genbounds.Network.trace(_apply, ps64, jnp.asarray(x, jnp.float64)))
    assert q.dtype == jnp.float64  # float64 parameters are not rounded to float32


@pytest.mark.parametrize("eps", [1e-3, 0.05, 0.5])
def test_float32_intervals_contain_the_exact_ones(eps):
    _, x, net = _net(1)
    ops32, ops64 = read_ops(net, jnp.float32), read_ops(net, jnp.float64)
    e = np.full(x.shape[0], eps, np.float32)
    b32 = ibp(ops32, jnp.asarray(x), jnp.asarray(e), enclose=True)
    b64 = ibp(ops64, jnp.asarray(x, jnp.float64), jnp.asarray(e, jnp.float64))
    for (lo, hi), (lo64, hi64) in zip(b32, b64, strict=True):
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        lo64, hi64 = np.asarray(lo64), np.asarray(hi64)
        assert np.all(lo <= lo64) and np.all(hi >= hi64)
        # and hardly wider (the rounding bounds of each layer are widened by the next ones)
        assert np.all((hi - lo) - (hi64 - lo64) <= 1e-3 * (1 + np.max(np.abs(hi64))))


def _exact_margin_minima(ps, x, eps):
    """Per example and label j: min over the l2 ball of f_y - f_j, the network being affine on
    the ball (asserted: every pre-activation keeps its sign), in float64."""
    out = []
    for x0 in x.astype(np.float64):
        h, J = x0, np.eye(x0.size)
        for i, (k, b) in enumerate(ps):
            k, b = k.astype(np.float64), b.astype(np.float64)
            z = h @ k + b
            J = J @ k
            if i < len(ps) - 1:
                # the state of every ReLU is fixed on the ball: |z| > eps * ||dz/dx||
                assert np.all(np.abs(z) > 2 * eps * np.linalg.norm(J, axis=0))
                on = z > 0
                h, J = z * on, J * on
            else:
                h = z
        y = int(np.argmax(h))
        m = h[y] - h
        g = np.linalg.norm(J[:, [y]] - J, axis=0)
        out.append((y, m - eps * g))
    return np.array([o[0] for o in out]), np.stack([o[1] for o in out])


def test_float32_crown_margins_never_exceed_the_exact_minimum():
    ps, x, net = _net(2)
    eps = float(np.float32(1e-4))  # the radius as float32 holds it
    y, exact = _exact_margin_minima(ps, x, eps)
    own = np.arange(DIMS[-1])[None, :] == y[:, None]
    p = Propagator(net, norm="l2")
    e = jnp.full((x.shape[0],), eps, jnp.float32)
    eye = jnp.eye(DIMS[-1], dtype=jnp.float32)
    spec = eye[jnp.asarray(y)][:, None, :] - eye[None, :, :]

    def f32(enclose):  # every pass in float32
        return np.asarray(spec_parts(p.ops, p.logits, jnp.asarray(x), e, spec, norm="l2",
                                     method="crown", intermediate="crown",
                                     enclose=enclose)[0], np.float64)[~own]

    enclosed, raw = f32(True), f32(False)
    assert np.all(enclosed <= exact[~own])
    np.testing.assert_allclose(enclosed, exact[~own], rtol=0, atol=3e-3)
    # without the enclosure, float32 rounding lands above the exact minimum for some margins
    assert np.any(raw > exact[~own])
    # the default: float32 intervals, the last pass in float64
    assert p.final_ops is not None and p.result_dtype == jnp.float64
    got = np.asarray(p.margins(jnp.asarray(x), e, jnp.asarray(y)), np.float64)[~own]
    assert np.all(got <= exact[~own] + 1e-12)  # the reference's own float64 rounding
    np.testing.assert_allclose(got, exact[~own], rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_float32_radii_are_float64_radii_within_a_fraction_of_a_percent():
    ps, x, net = _net(3, n=4)
    y = np.argmax(np.asarray(_apply(ps, jnp.asarray(x))), axis=1)
    r32 = genbounds.verify.crown_radius(net, X=x, y=y, search_steps=10)
    r64 = genbounds.verify.crown_radius(net, X=x, y=y, search_steps=10, dtype=np.float64)
    assert r32.terms["dtype"] == "float32" and r32.terms["rounding_enclosed"]
    assert np.all(r32.radius > 0)
    np.testing.assert_allclose(r32.radius, r64.radius, rtol=0.03)  # the search's 2%
    assert abs(np.median(r32.radius / r64.radius) - 1) < 0.005


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_float32_crown_intervals_contain_float64_ones_with_unstable_neurons(eps):
    from genbounds.verify._propagate import intervals

    _, x, net = _net(1)
    p = Propagator(net, norm="l2")
    ops64 = read_ops(net, jnp.float64, output=p.logits)
    e = np.full(x.shape[0], eps, np.float32)
    b32, _ = intervals(p.ops, jnp.asarray(x), jnp.asarray(e), p.logits - 1, norm="l2",
                       mode="crown", enclose=True)
    b64, _ = intervals(ops64, jnp.asarray(x, jnp.float64), jnp.asarray(e, jnp.float64),
                       p.logits - 1, norm="l2", mode="crown")
    unstable = 0
    for i in p.sizes:
        lo, hi = (np.asarray(v, np.float64) for v in b32[i])
        lo64, hi64 = (np.asarray(v) for v in b64[i])
        assert np.all(lo <= lo64) and np.all(hi >= hi64)
        unstable += int(np.sum((lo64 < 0) & (hi64 > 0)))
    assert unstable > 0  # the relaxations matter here


def test_centres_and_radii_rounded_to_float32_give_a_ball_that_contains_the_asked_one():
    _, x, net = _net(4, n=3)
    p = Propagator(net, norm="l2")
    assert p.dtype == jnp.float32
    x64 = np.asarray(x, np.float64) + 1e-9  # not float32 values
    x32, e32 = jax.jit(p._prepare)(jnp.asarray(x64), jnp.float64(0.7))
    move = np.linalg.norm(x64 - np.asarray(x32, np.float64), axis=1)
    assert np.all(move > 0)
    assert np.all(np.asarray(e32, np.float64) >= 0.7 + move)
