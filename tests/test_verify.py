"""Bound propagation (IBP, CROWN, alpha-CROWN) on traced networks: soundness first.

Tiny ReLU networks with 2-D inputs (a chain, a residual net, a convolution over a 2x1 image, a
leaky-ReLU chain): the output bounds contain the outputs of dense samples of the ball (interior,
boundary, corners); the certified radius never exceeds the distance to the nearest misclassified
point of a dense grid of the ball; alpha-CROWN is never looser than CROWN, CROWN never looser than
IBP; certified accuracy never exceeds PGD robust accuracy.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import promoting

import genbounds
from genbounds.core._checks import NotBoundable
from genbounds.verify import Propagator, crown_radius


class Chain(nn.Module):
    leaky: bool = False

    @nn.compact
    @promoting
    def __call__(self, x):
        act = (lambda t: nn.leaky_relu(t, 0.1)) if self.leaky else nn.relu
        x = act(nn.Dense(8)(x))
        x = act(nn.Dense(8)(x))
        return nn.Dense(3)(x)


class Residual(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x):
        h = nn.relu(nn.Dense(6)(x))
        h = nn.relu(nn.Dense(6)(h)) + h
        h = nn.relu(nn.Dense(6)(h)) - 0.5 * h
        return nn.Dense(3)(h)


class Conv(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x):
        x = x.reshape((x.shape[0], 2, 1, 1))
        x = nn.relu(nn.Conv(4, (2, 1), padding="SAME")(x))
        x = nn.relu(nn.Conv(3, (2, 1), strides=(2, 1), padding="VALID")(x))
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


MODELS = {"chain": Chain(), "residual": Residual(), "conv": Conv(), "leaky": Chain(leaky=True)}


def _net(name: str, seed: int = 0, model: nn.Module | None = None):
    """A float64 net of ``MODELS`` (or ``model``), 12 Gaussian 2-D inputs and its labels."""
    model = MODELS[name] if model is None else model
    key = jax.random.key(seed)
    X = jax.random.normal(jax.random.fold_in(key, 1), (12, 2), jnp.float64)
    params = promoting(model.init)(jax.random.fold_in(key, 2), X)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    apply_fn = promoting(model.apply)
    y = np.argmax(np.asarray(apply_fn(params, X)), axis=1)
    return apply_fn, params, X, y


def _ball_points(x0: np.ndarray, eps: float, norm: str, n: int, rng) -> np.ndarray:
    """Points of the ball: uniform interior, boundary, and (l_inf) the four corners."""
    if norm == "linf":
        inner = rng.uniform(-eps, eps, (n, 2))
        edge = inner.copy()
        edge[np.arange(n), rng.integers(0, 2, n)] = rng.choice([-eps, eps], n)
        corners = eps * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float64)
        d = np.concatenate([inner, edge, corners])
    else:
        ang = rng.uniform(0, 2 * np.pi, n)
        rad = eps * np.sqrt(rng.uniform(0, 1, n))
        u = np.stack([np.cos(ang), np.sin(ang)], 1)
        d = np.concatenate([rad[:, None] * u, eps * u])
    return x0[None] + d


@pytest.mark.parametrize(("norm", "name"), [
    pytest.param(n, m, marks=pytest.mark.slow) if (n, m) == ("linf", "residual") else (n, m)
    for n in ("l2", "linf") for m in MODELS])
def test_bounds_contain_the_outputs_of_samples_of_the_ball(name, norm):
    apply_fn, params, X, _ = _net(name)
    net = genbounds.Network.trace(apply_fn, params, X)
    rng = np.random.default_rng(0)
    x0 = np.asarray(X[:4])
    eps = 0.4
    pts = np.stack([_ball_points(x, eps, norm, 3000, rng) for x in x0])  # (4, m, 2)
    out = np.asarray(apply_fn(params, jnp.asarray(pts.reshape(-1, 2)))).reshape(4, -1, 3)
    widths = {}
    methods = ["ibp", "crown"] + (["forward"] if name == "residual" else [])
    if (name, norm) == ("residual", "linf"):  # (slow) alpha-CROWN's compilation; its l2
        methods.append("alpha-crown")  # margins are checked against CROWN's below
    for method in methods:
        # "forward": CROWN on the logits, forward linear bounds for the pre-activations
        p = (Propagator(net, norm=norm, intermediate="forward") if method == "forward"
             else Propagator(net, norm=norm, method=method))
        lo, hi = p.bounds(jnp.asarray(x0), eps)
        lo, hi = np.asarray(lo), np.asarray(hi)
        assert np.all(out >= lo[:, None] - 1e-9), method
        assert np.all(out <= hi[:, None] + 1e-9), method
        widths[method] = hi - lo
    # not vacuous: CROWN's bounds are tighter than the intervals and close to the sampled range
    assert np.mean(widths["crown"]) < np.mean(widths["ibp"])
    if "forward" in widths:
        assert np.mean(widths["forward"]) < np.mean(widths["ibp"])
    if "alpha-crown" in widths:
        assert np.all(widths["alpha-crown"] <= widths["crown"] + 1e-9)
    sampled = out.max(1) - out.min(1)
    assert np.all(widths["crown"] >= sampled - 1e-9)


def _grid_distance(apply_fn, params, x0, y, r_max: float, norm: str) -> float:
    """The distance of the nearest misclassified point of a dense grid of the ball of radius
    ``r_max`` around x0 (inf if none): an upper bound on the minimal adversarial distance up to
    the grid spacing (r_max / 300)."""
    m = 601
    g = np.linspace(-r_max, r_max, m)
    d = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    dist = np.max(np.abs(d), 1) if norm == "linf" else np.linalg.norm(d, axis=1)
    keep = dist <= r_max
    d, dist = d[keep], dist[keep]
    pred = np.argmax(np.asarray(apply_fn(params, jnp.asarray(x0[None] + d))), axis=1)
    wrong = pred != y
    return float(dist[wrong].min()) if np.any(wrong) else np.inf


def _check_radii(name: str, norm: str, methods: tuple[str, ...]) -> None:
    apply_fn, params, X, y = _net(name)
    radii = {}
    for method in methods:
        r = crown_radius(params, X=X[:6], y=y[:6], apply_fn=apply_fn, norm=norm,
                         method=method, search_steps=14)
        assert r.method == method
        for i in range(6):
            x0 = np.asarray(X[i])
            found = _grid_distance(apply_fn, params, x0, y[i], 2.0 * r.radius[i] + 0.05, norm)
            # every grid point inside the certified ball is classified y
            assert r.radius[i] <= found, (method, i, r.radius[i], found)
        radii[method] = r.radius
    assert np.all(radii["crown"] > 0)  # every example is correctly classified: not vacuous
    if "ibp" in radii:
        assert np.median(radii["ibp"]) < np.median(radii["crown"])


@pytest.mark.parametrize(("name", "norm"), [
    # l_inf on the plain chains in the slow run only (the default run's time)
    pytest.param(m, n, marks=pytest.mark.slow) if n == "linf" and m in ("chain", "leaky")
    else (m, n) for n in ("l2", "linf") for m in MODELS])
def test_certified_radius_never_exceeds_the_distance_to_a_misclassified_point(name, norm):
    _check_radii(name, norm, ("crown",))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_certified_radius_of_every_method_never_exceeds_a_misclassified_point(name, norm):
    _check_radii(name, norm, ("crown", "alpha-crown", "ibp"))


def test_radius_of_a_linear_classifier_is_the_distance_to_its_boundary():
    W = np.array([[1.0, -1.0], [2.0, 0.5]])
    X = np.array([[0.5, 0.0], [-2.0, 1.0], [1.0, 1.0]])
    y = np.argmax(X @ W, axis=1)
    gaps = X @ W[:, 0] - X @ W[:, 1]
    for norm, q in (("l2", 2), ("linf", 1)):
        exact = np.abs(gaps) / np.linalg.norm(W[:, 0] - W[:, 1], q)
        for dtype, rtol in ((np.float64, 1e-6), (np.float32, 1e-3)):
            r = crown_radius({"W": W}, X=X, y=y, apply_fn=lambda p, x: x @ p["W"], norm=norm,
                             search_steps=40, dtype=dtype)
            assert np.all(r.radius <= exact)
            np.testing.assert_allclose(r.radius, exact, rtol=rtol)


@pytest.mark.parametrize(("name", "norm"), [
    pytest.param(n, q, marks=pytest.mark.slow) if (n, q) != ("residual", "l2") else (n, q)
    for n in ("chain", "residual") for q in ("l2", "linf")])
def test_alpha_crown_is_never_looser_than_crown_nor_crown_than_ibp(name, norm):
    apply_fn, params, X, y = _net(name, seed=3)
    net = genbounds.Network.trace(apply_fn, params, X)
    m = {meth: np.asarray(Propagator(net, norm=norm, method=meth).margins(
        X, 0.5, jnp.asarray(y))) for meth in ("ibp", "crown", "alpha-crown")}
    tol = 1e-12 * (1 + np.abs(np.where(np.isfinite(m["crown"]), m["crown"], 0)))
    # equal up to the rounding of two compiled programs where the slopes do not move
    assert np.all(m["alpha-crown"] >= m["crown"] - tol)
    assert np.all(m["crown"] >= m["ibp"] - tol)
    assert np.any(m["alpha-crown"] > m["crown"] + 1e-6)  # the slopes do move


def test_certified_accuracy_is_never_above_pgd_robust_accuracy():
    apply_fn, params, X, y = _net("chain", seed=1)
    for norm in ("l2", "linf"):
        r = crown_radius(params, X=X, y=y, apply_fn=apply_fn, norm=norm, method="alpha-crown")
        for eps in (0.05, 0.2, 0.5):
            a = genbounds.adversarial.pgd(params, X=X, y=y, apply_fn=apply_fn, eps=eps,
                                          norm=norm, steps=50, restarts=2)
            certified = r.radius > eps
            assert not np.any(certified & ~np.asarray(a.robust))
            assert np.mean(certified) <= a.robust_accuracy


def test_refusals_name_what_cannot_be_relaxed():
    apply_fn, params, X, y = _net("chain")
    V = np.random.default_rng(1).normal(size=(2, 3))

    def gelu(p, x):
        return jax.nn.gelu(x @ p["V"]) @ p["V"].T @ p["V"]

    def layer_norm(p, x):
        h = x @ p["V"]
        h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-5)
        return h @ p["V"].T @ p["V"]

    def hard_tanh(p, x):
        return jnp.clip(x @ p["V"], -1.0, 1.0) @ p["V"].T @ p["V"]

    for fn, match in ((gelu, "activation.*not piecewise linear"),
                      (layer_norm, "cannot relax.*Norm"),
                      (hard_tanh, "breakpoint away from 0")):
        with pytest.raises(NotBoundable, match=match):
            crown_radius({"V": V}, X=X, y=y, apply_fn=fn)
    with pytest.raises(NotBoundable, match="function"):
        crown_radius(params, X=X, y=y)
    with pytest.raises(ValueError, match="norm"):
        crown_radius(params, X=X, y=y, apply_fn=apply_fn, norm="l1")
    with pytest.raises(ValueError, match="method"):
        crown_radius(params, X=X, y=y, apply_fn=apply_fn, method="beta")
    with pytest.raises(ValueError, match="search_steps"):
        crown_radius(params, X=X, y=y, apply_fn=apply_fn, search_steps=0)


@pytest.mark.slow  # the default run checks the curve's CROWN column in test_robustness.py
def test_robustness_curve_shows_crown_beside_pgd_and_lipschitz():
    apply_fn, params, X, y = _net("residual", seed=2)
    curve = genbounds.robustness(params, apply_fn=apply_fn, X=X, y=y, eps=[0.0, 0.1, 0.3],
                                 norm="l2", steps=30, restarts=1, fgsm_too=False)
    assert curve.propagated is not None and curve.propagated.method == "crown"
    assert curve.propagated_violations == 0
    assert np.all(curve.propagated_accuracy <= curve.pgd_accuracy)
    # CROWN certifies at least as much as the Lipschitz radius on this net, and more
    assert np.sum(curve.propagated_accuracy) > np.sum(curve.certified_accuracy)
    assert "crown certified acc" in curve.to_markdown()
    # the curve decides its grid; with the per-example search it holds crown_radius's radii
    same = genbounds.certified_radius(params, X=X, y=y, apply_fn=apply_fn, method="crown")
    full = genbounds.robustness(params, apply_fn=apply_fn, X=X, y=y, eps=[0.0, 0.1, 0.3],
                                norm="l2", steps=30, restarts=1, fgsm_too=False,
                                propagation_search="bracket")
    np.testing.assert_array_equal(same.radius, full.propagated.radius)


def test_a_float32_network_is_bounded_in_float64():
    apply_fn, params, X, y = _net("chain", seed=4)
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    X32 = X.astype(jnp.float32)
    r = crown_radius(p32, X=X32, y=y, apply_fn=apply_fn, norm="linf")
    r64 = crown_radius(params, X=X, y=y, apply_fn=apply_fn, norm="linf")
    assert np.all(r.radius > 0)
    np.testing.assert_allclose(r.radius, r64.radius, rtol=1e-3)


def _unstable_only_matches_full(name: str, norms: tuple[str, ...]) -> None:
    # CROWN passes only for the neurons interval and forward bounds leave unstable: every
    # relaxation, hence every bound after it, is that of a pass for every neuron
    from genbounds.verify._crown import crown_intervals

    apply_fn, params, X, y = _net(name, seed=5)
    net = genbounds.Network.trace(apply_fn, params, X)
    r = 0.2 if name == "conv" else 0.3  # (at 0.3 every l_inf neuron of the conv net is unstable)
    for norm in norms:
        p = Propagator(net, norm=norm, unstable_only=True)
        x0, eps = jnp.asarray(X), jnp.full((X.shape[0],), r)
        full, _ = jax.jit(lambda a, e, p=p, norm=norm: crown_intervals(
            p.ops, a, e, norm, "crown", p.logits - 1))(x0, eps)
        part, counts = jax.jit(lambda a, e, p=p, norm=norm: crown_intervals(
            p.ops, a, e, norm, "crown", p.logits - 1, p.sizes))(x0, eps)
        assert counts and set(counts) <= set(p.sizes)  # the first layer needs no pass
        assert any(0 < int(np.max(c)) < p.sizes[i] for i, c in counts.items())  # skips some
        for i in p.sizes:  # the pre-activations
            (lo, hi), (lo_p, hi_p) = full[i], part[i]
            unstable = np.asarray((lo < 0) & (hi > 0))
            # the unstable neurons get the same interval, the stable ones stay stable
            np.testing.assert_allclose(np.asarray(lo_p)[unstable], np.asarray(lo)[unstable],
                                       rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(np.asarray(hi_p)[unstable], np.asarray(hi)[unstable],
                                       rtol=1e-12, atol=1e-12)
            assert not np.any(np.asarray((lo_p < 0) & (hi_p > 0))[~unstable])
        m_full = np.asarray(Propagator(net, norm=norm, dtype=jnp.float64).margins(
            X, r, jnp.asarray(y)))
        p.caps = dict(p.sizes)
        m_part = np.asarray(p.linear_margins(X, jnp.full((X.shape[0],), r),
                                             jnp.asarray(y))[0])
        np.testing.assert_allclose(m_part, m_full, rtol=1e-10, atol=1e-10)


def test_unstable_only_intermediates_equal_the_full_computation():
    _unstable_only_matches_full("residual", ("l2",))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["residual", "conv", "leaky"])
def test_unstable_only_intermediates_equal_the_full_computation_everywhere(name):
    _unstable_only_matches_full(name, ("l2", "linf"))


def test_unstable_only_with_too_few_passes_stays_sound():
    apply_fn, params, X, _ = _net("residual", seed=6)
    net = genbounds.Network.trace(apply_fn, params, X)
    rng = np.random.default_rng(1)
    x0 = np.asarray(X[:4])
    pts = np.stack([_ball_points(x, 0.4, "l2", 2000, rng) for x in x0])
    out = np.asarray(apply_fn(params, jnp.asarray(pts.reshape(-1, 2)))).reshape(4, -1, 3)
    p = Propagator(net, norm="l2", unstable_only=True)
    p.caps = {i: 1 for i in p.sizes}  # one CROWN pass per pre-activation and example
    spec = jnp.broadcast_to(jnp.eye(3), (4, 3, 3))
    from genbounds.verify._crown import lower_bound

    @jax.jit
    def both(a, e):
        bounds, _ = p._intervals(a, e, p.logits - 1, p.caps)
        return (lower_bound(p.ops, p.logits, spec, a, e, "l2", bounds),
                -lower_bound(p.ops, p.logits, -spec, a, e, "l2", bounds))

    lo, hi = (np.asarray(v) for v in both(jnp.asarray(x0), jnp.full((4,), 0.4)))
    assert np.all(out >= lo[:, None] - 1e-9) and np.all(out <= hi[:, None] + 1e-9)


@pytest.mark.slow  # a search's quality, not soundness (the default run's time)
def test_bracketing_search_finds_the_radius_bisection_finds():
    apply_fn, params, X, y = _net("residual", seed=7)
    kw = dict(X=X, y=y, apply_fn=apply_fn, norm="l2", dtype=np.float64)
    slow = crown_radius(params, search="bisection", search_steps=30, **kw)
    fast = crown_radius(params, **kw)
    part = crown_radius(params, unstable_only=True, **kw)
    assert fast.terms["search"] == "bracket" and np.all(slow.radius > 0)
    # both certify what the bound certifies; the bracket stops within 2% of its root
    np.testing.assert_allclose(fast.radius, slow.radius, rtol=0.03)
    np.testing.assert_allclose(part.radius, fast.radius, rtol=1e-9)


def test_grid_search_decides_each_radius_as_the_bound_does():
    # search="grid" (what robustness uses): radius > e exactly where CROWN, evaluated on the
    # closed ball of radius e itself, certifies every margin past the acceptance margin
    from genbounds.verify._radius import _above

    apply_fn, params, X, y = _net("chain", seed=7)
    net = genbounds.Network.trace(apply_fn, params, X)
    grid = np.array([0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6])
    r = crown_radius(net, X=X, y=y, norm="l2", search="grid", grid=grid, dtype=np.float64)
    assert r.terms["search"] == "grid"
    p = Propagator(net, norm="l2", dtype=jnp.float64)
    f = np.asarray(apply_fn(params, X), np.float64)
    top2 = np.sort(f, axis=1)[:, -2:]
    slack = np.sqrt(np.finfo(np.float64).eps) * (1 + top2[:, 1] - top2[:, 0])
    decided = []
    for e in grid[1:]:
        lb = np.asarray(p.margins(jnp.asarray(X), jnp.full((X.shape[0],), _above(e, np.float64)),
                                  jnp.asarray(y)))
        direct = np.all(lb > slack[:, None], axis=1)
        np.testing.assert_array_equal(r.radius > e, direct)
        decided.append(direct.mean())
    assert 0 < np.mean(decided) < 1  # some radii certified, some not: the test decides both
    # in float32 with centres that float32 cannot hold, the grid is evaluated past the
    # centre's move: the same verdicts as at the float32 centres themselves
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    X32 = np.asarray(X, np.float32)
    X64 = X32.astype(np.float64) + 1e-9
    kw = dict(y=y, apply_fn=apply_fn, norm="l2", search="grid", grid=grid, dtype=np.float32)
    exact, moved = crown_radius(p32, X=X32, **kw), crown_radius(p32, X=X64, **kw)
    assert np.all(moved.radius <= exact.radius) and np.any(exact.radius > 0.05)
    for e in grid:
        np.testing.assert_array_equal(moved.radius > e, exact.radius > e)
    for bad in ({"search": "grid"}, {"grid": grid}, {"search": "grid", "grid": [-0.1, 0.2]},
                {"search": "grid", "grid": [0.0]}):
        with pytest.raises(ValueError, match="grid"):
            crown_radius(net, X=X, y=y, **bad)


def test_a_first_layer_interval_is_that_of_its_crown_pass():
    # a pre-activation affine in the input takes its exact interval from its forward function
    from genbounds.verify._crown import crown_intervals, lower_bound

    apply_fn, params, X, _ = _net("conv", seed=8)
    net = genbounds.Network.trace(apply_fn, params, X)
    p = Propagator(net, norm="l2", dtype=jnp.float64)
    x0, eps = jnp.asarray(X), jnp.full((X.shape[0],), 0.3)
    first = min(p.sizes)
    lo, hi = crown_intervals(p.ops, x0, eps, "l2", "crown", first + 1)[0][first]
    n = p.sizes[first]
    eye = jnp.eye(n).reshape((n,) + p.ops[first].shape)
    spec = jnp.broadcast_to(jnp.concatenate([eye, -eye]), (X.shape[0], 2 * n) + eye.shape[1:])
    lb = np.asarray(lower_bound(p.ops, first, spec, x0, eps, "l2", [(x0 - 0.3, x0 + 0.3)]))
    np.testing.assert_allclose(np.asarray(lo).reshape(-1, n), lb[:, :n], rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(np.asarray(hi).reshape(-1, n), -lb[:, n:], rtol=1e-12,
                               atol=1e-12)
