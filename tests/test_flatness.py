"""Flatness measures: Lanczos/Hutchinson against the full Hessian (jax.hessian + eigh), Keskar
sharpness against a closed form, Jiang's sigma'/alpha' searches recomputed independently, random
labels sharper than true labels, bad input."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import promoting
from jax.flatten_util import ravel_pytree
from sklearn.datasets import load_digits

from genbounds.internal import full_hessian
from genbounds.linalg import hessian_vector_product
from genbounds.measures import (
    hessian_top_eigenvalues,
    hessian_trace,
    magnitude_aware_flatness,
    pac_bayes_flatness,
    sharpness,
)


def mlp(p, X):
    h = jnp.maximum(X @ p["W1"] + p["b1"], 0.0)
    return h @ p["W2"] + p["b2"]


@pytest.fixture(scope="module")
def tiny():
    k = jax.random.split(jax.random.key(0), 6)
    p = {
        "W1": jax.random.normal(k[0], (3, 5), jnp.float64),
        "b1": 0.1 * jax.random.normal(k[1], (5,), jnp.float64),
        "W2": jax.random.normal(k[2], (5, 3), jnp.float64),
        "b2": jnp.zeros(3, jnp.float64),
    }
    X = jax.random.normal(k[3], (40, 3), jnp.float64)
    y = jnp.argmax(mlp(p, X), axis=1)  # a net that fits its labels: training error 0
    return p, X, y


def loss_ref(p, X, y):
    logits = mlp(p, X)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(len(y)), y])


def full_hessian_ref(p, X, y):
    x0, unravel = ravel_pytree(p)
    return np.asarray(jax.jit(jax.hessian(lambda x: loss_ref(unravel(x), X, y)))(x0), np.float64)


def test_hvp_and_full_hessian(tiny):
    p, X, y = tiny
    H = full_hessian_ref(p, X, y)
    x0, unravel = ravel_pytree(p)
    v = jax.random.normal(jax.random.key(9), x0.shape, jnp.float64)
    hv = ravel_pytree(hessian_vector_product(lambda q: loss_ref(q, X, y), p, unravel(v)))[0]
    np.testing.assert_allclose(hv, H @ np.asarray(v), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        full_hessian(lambda q: loss_ref(q, X, y), p), H, rtol=1e-10, atol=1e-12
    )


def test_lanczos_matches_eigh(tiny):
    p, X, y = tiny
    eig = np.linalg.eigh(full_hessian_ref(p, X, y))[0][::-1]
    P = eig.size
    # Krylov space = whole space: Lanczos is exact.
    m = hessian_top_eigenvalues(p, X=X, y=y, apply_fn=mlp, key=jax.random.key(1), k=5, num_iters=P)
    np.testing.assert_allclose(m.terms["eigenvalues"], eig[:5], rtol=1e-8, atol=1e-10)
    assert m.complexity == pytest.approx(eig[0], rel=1e-8)
    assert m.terms["smallest_ritz"] == pytest.approx(eig[-1], abs=1e-8)
    assert m.is_measure and m.estimated
    # Fewer steps: a lower estimate of the top eigenvalue, within its residual of the spectrum.
    m = hessian_top_eigenvalues(p, X=X, y=y, apply_fn=mlp, key=jax.random.key(1), k=1, num_iters=15)
    top, res = m.complexity, m.terms["residuals"][0]
    assert top <= eig[0] + 1e-10
    assert np.min(np.abs(eig - top)) <= res + 1e-10
    assert top == pytest.approx(eig[0], rel=1e-3)


def test_hutchinson_trace(tiny):
    p, X, y = tiny
    tr = float(np.trace(full_hessian_ref(p, X, y)))
    m = hessian_trace(p, X=X, y=y, apply_fn=mlp, key=jax.random.key(2), num_samples=400)
    se = m.terms["stderr"]
    assert 0 < se < 0.2 * abs(tr)
    assert abs(m.complexity - tr) <= 4 * se
    m2 = hessian_trace(p, X=X, y=y, apply_fn=mlp, key=jax.random.key(2), num_samples=100)
    assert m2.terms["stderr"] > se  # the error shrinks with more probes


def test_sharpness_closed_form():
    # One example, logistic loss softplus(-w.x): decreasing in w.x, so the max over the box
    # |z_i| <= eps (|w_i| + 1) is at z_i = -eps (|w_i| + 1) sign(x_i).
    f = lambda p, X: X @ p["w"]  # noqa: E731
    w = {"w": jnp.array([[0.5], [-2.0], [1.0]], jnp.float64)}
    X = jnp.array([[1.0, -0.5, 2.0]], jnp.float64)
    y = jnp.array([1])
    eps = 1e-2
    wv = np.array([0.5, -2.0, 1.0])
    xv = np.array([1.0, -0.5, 2.0])
    base = np.log1p(np.exp(-wv @ xv))
    worst = np.log1p(np.exp(-(wv - eps * (np.abs(wv) + 1) * np.sign(xv)) @ xv))
    phi = (worst - base) / (1 + base) * 100
    m = sharpness(w, X=X, y=y, apply_fn=f, epsilon=eps, steps=5)
    assert m.complexity == pytest.approx(phi, rel=1e-10)
    assert m.terms["loss"] == pytest.approx(base, rel=1e-12)
    # From a random start in the box it also ends at the corner (a lower estimate in general).
    m = sharpness(
        w, X=X, y=y, apply_fn=f, epsilon=eps, steps=10, step_size=0.5, key=jax.random.key(0)
    )
    assert m.complexity == pytest.approx(phi, rel=1e-10)


def _perturbed_error(p, X, y, std, noise):
    x0, unravel = ravel_pytree(p)
    errs = []
    for z in np.asarray(noise):
        logits = mlp(unravel(x0 + std * z), X)
        errs.append(np.mean(np.asarray(jnp.argmax(logits, 1) != y)))
    return np.mean(errs)


def test_sigma_prime_search_recomputed(tiny):
    p, X, y = tiny
    x0, unravel = ravel_pytree(p)
    w0 = jax.tree.map(lambda a: 0.5 * a, p)
    key = jax.random.key(3)
    m = pac_bayes_flatness(
        p, X=X, y=y, apply_fn=mlp, key=key, init_params=w0, num_samples=8, search_depth=12,
        deviation_tol=None,
    )
    t = m.terms
    base = np.mean(np.asarray(jnp.argmax(mlp(p, X), 1) != y))
    noise = jax.random.normal(key, (8, x0.size), jnp.float64)  # documented: same draws
    # The bracket straddles the target: deviation <= 0.1 at the low end, > 0.1 at the high end.
    assert t["reached_target"]
    assert _perturbed_error(p, X, y, t["bracket_low"], noise) - base <= 0.1
    assert _perturbed_error(p, X, y, t["bracket_high"], noise) - base > 0.1
    assert t["bracket_high"] - t["bracket_low"] == pytest.approx(2.0 / 2**12)
    s = t["sigma_prime"]
    assert m.complexity == pytest.approx(1 / s**2, rel=1e-12)
    xw, w0v = np.asarray(x0), np.asarray(ravel_pytree(w0)[0])
    tail = math.log(40 / s) + 10
    assert t["mu_49"] == pytest.approx(np.sum(xw**2) / (4 * s**2) + tail, rel=1e-12)
    assert t["mu_48"] == pytest.approx(np.sum((xw - w0v) ** 2) / (4 * s**2) + tail, rel=1e-12)
    assert t["mu_48_adjusted"] == pytest.approx(math.sqrt(t["mu_48"] / 40), rel=1e-12)


def test_alpha_prime_uses_std_not_variance(tiny):
    p, X, y = tiny
    x0, _ = ravel_pytree(p)
    key = jax.random.key(4)
    eps = 1e-3
    m = magnitude_aware_flatness(
        p,
        X=X,
        y=y,
        apply_fn=mlp,
        key=key,
        init_params=p,
        num_samples=8,
        search_depth=12,
        epsilon=eps,
        deviation_tol=None,
    )
    t = m.terms
    base = np.mean(np.asarray(jnp.argmax(mlp(p, X), 1) != y))
    noise = jax.random.normal(key, (8, x0.size), jnp.float64)
    w = np.asarray(x0)

    def std(a):  # variance a^2 w^2 + eps^2
        return np.sqrt(a * a * w * w + eps * eps)

    assert _perturbed_error(p, X, y, std(t["bracket_low"]), noise) - base <= 0.1
    assert _perturbed_error(p, X, y, std(t["bracket_high"]), noise) - base > 0.1
    a = t["alpha_prime"]
    # mu_57 by Jiang's formula (v = w; with init_params = params the denominators are eps^2).
    omega = w.size
    mu57 = (
        0.25 * omega * math.log((eps**2 + (a * a + 1) * np.sum(w**2) / omega) / eps**2)
        + math.log(40 / a)
        + 10
    )
    assert t["mu_57"] == pytest.approx(mu57, rel=1e-12)
    assert m.complexity == pytest.approx(1 / a**2, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Krueger et al.'s finding: nets that memorise random labels sit in sharper minima.
# ---------------------------------------------------------------------------------------------


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


def _train(model, X, y, seed, steps=1500):
    p = model.init(jax.random.key(seed), X[:1])
    tx = optax.adam(1e-2)

    @jax.jit
    def run(p):
        def loss(q):
            logits = model.apply(q, X)
            return jnp.mean(jax.nn.logsumexp(logits, 1) - logits[jnp.arange(len(y)), y])

        def step(c, _):
            q, s = c
            u, s = promoting(tx.update)(jax.grad(loss)(q), s, q)  # Adam: float ** int32
            return (optax.apply_updates(q, u), s), None

        return jax.lax.scan(step, (p, tx.init(p)), None, length=steps)[0][0]

    return run(p)


def test_random_labels_are_sharper():
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    model = _Net()
    for seed in range(3):
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(X), 300, replace=False)
        Xs = jnp.asarray(X[idx])
        y_true = jnp.asarray(d.target[idx])
        y_rand = jnp.asarray(rng.integers(0, 10, 300))
        res = {}
        for name, lab in (("true", y_true), ("random", y_rand)):
            p = _train(model, Xs, lab, seed)
            assert float(jnp.mean(jnp.argmax(model.apply(p, Xs), 1) != lab)) == 0.0
            eig = hessian_top_eigenvalues(
                p, X=Xs, y=lab, apply_fn=model.apply, key=jax.random.key(0), num_iters=20
            ).complexity
            sig = pac_bayes_flatness(
                p, X=Xs, y=lab, apply_fn=model.apply, key=jax.random.key(0), search_depth=10
            ).terms["sigma_prime"]
            res[name] = (eig, sig)
        # Margins: observed ratios ~10x (eigenvalue) and ~2.7x (sigma').
        assert res["random"][0] > 3.0 * res["true"][0]
        assert res["random"][1] < res["true"][1] / 1.5


# ---------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------


def test_bad_input(tiny):
    p, X, y = tiny
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="init_params must have the same tree structure"):
        pac_bayes_flatness(p, X=X, y=y, apply_fn=mlp, key=key, init_params={"W1": p["W1"]})
    with pytest.raises(ValueError, match="init_params must match"):
        magnitude_aware_flatness(
            p, X=X, y=y, apply_fn=mlp, key=key, init_params={**p, "b2": jnp.zeros(4, jnp.float64)}
        )
    with pytest.raises(ValueError, match="target_deviation must lie in"):
        pac_bayes_flatness(p, X=X, y=y, apply_fn=mlp, key=key, target_deviation=1.5)
    with pytest.raises(ValueError, match="k must be <= num_iters"):
        hessian_top_eigenvalues(p, X=X, y=y, apply_fn=mlp, key=key, k=5, num_iters=3)
    with pytest.raises(ValueError, match="num_iters must be <= the number of parameters"):
        hessian_top_eigenvalues(p, X=X, y=y, apply_fn=mlp, key=key, num_iters=1000)
    with pytest.raises(ValueError, match="y must hold labels"):
        hessian_trace(p, X=X, y=y.at[0].set(3), apply_fn=mlp, key=key)
    with pytest.raises(ValueError, match="epsilon must be a finite number > 0"):
        sharpness(p, X=X, y=y, apply_fn=mlp, epsilon=-1.0)
    with pytest.raises(ValueError, match="params must be finite"):
        sharpness({**p, "b2": jnp.full(3, jnp.nan)}, X=X, y=y, apply_fn=mlp)
    with pytest.raises(ValueError, match="must return logits"):
        sharpness(p, X=X, y=y, apply_fn=lambda q, X: mlp(q, X)[None])
    with pytest.raises(TypeError, match=r"key must be a PRNG key such as jax.random.key\(0\)"):
        hessian_trace(p, X=X, y=y, apply_fn=mlp, key=None)


# ---------------------------------------------------------------------------------------------
# The batched, early-stopping search against plain bisection on the same draws.
# ---------------------------------------------------------------------------------------------


def _bisection_reference(p, X, y, noise, std_of, *, depth, scale_max=2.0, target=0.1):
    """Plain bisection, every example and every perturbation evaluated at every step (float64)."""
    base = np.mean(np.asarray(jnp.argmax(mlp(p, X), 1) != y))

    def dev(s):
        return _perturbed_error(p, X, y, std_of(s), noise) - base

    lo, hi = 0.0, scale_max
    if not dev(hi) > target:
        return hi, hi, dev(hi)
    for _ in range(depth):
        mid = 0.5 * (lo + hi)
        if dev(mid) > target:
            hi = mid
        else:
            lo = mid
    return lo, hi, dev(0.5 * (lo + hi))


@pytest.fixture(scope="module")
def wide():
    # 2500 examples: three chunks, so that steps can stop before reading all of them.
    k = jax.random.split(jax.random.key(7), 5)
    p = {
        "W1": jax.random.normal(k[0], (4, 16), jnp.float64),
        "b1": 0.1 * jax.random.normal(k[1], (16,), jnp.float64),
        "W2": jax.random.normal(k[2], (16, 3), jnp.float64) / 4,
        "b2": jnp.zeros(3, jnp.float64),
    }
    X = jax.random.normal(k[3], (2500, 4), jnp.float64)
    y = jnp.argmax(mlp(p, X), axis=1)
    return p, X, y


def _measure(measure, w, eps):
    """(function, name of its scale, per-parameter std at a scale) of sigma' or alpha'."""
    if measure == "sigma":
        return pac_bayes_flatness, "sigma_prime", lambda s: s
    return (magnitude_aware_flatness, "alpha_prime",
            lambda a: np.sqrt(a * a * w * w + eps * eps))


@pytest.mark.parametrize("measure", ["sigma", "alpha"])
def test_batched_search_equals_plain_bisection(wide, measure):
    from genbounds.internal import flatness_chunk_counts as _chunk_counts

    p, X, y = wide
    x0, _ = ravel_pytree(p)
    w = np.asarray(x0)
    key, S, depth, eps = jax.random.key(11), 4, 10, 1e-3
    noise = np.asarray(jax.random.normal(key, (S, x0.size), jnp.float64))
    fn, name, std_of = _measure(measure, w, eps)

    m = fn(p, X=X, y=y, apply_fn=mlp, key=key, num_samples=S, search_depth=depth,
           deviation_tol=None)
    lo, hi, dev = _bisection_reference(p, X, y, noise, std_of, depth=depth)
    t = m.terms
    assert t["reached_target"]
    assert (t["bracket_low"], t["bracket_high"]) == (lo, hi)  # the same decisions, exactly
    assert t[name] == 0.5 * (lo + hi)
    assert t["deviation"] == pytest.approx(dev, abs=1e-12)
    assert t["search_steps"] == depth
    # Steps far above the target stop after the first chunk: fewer passes than steps + 2.
    assert t["data_passes"] < depth + 2 - 1

    # A stated tolerance stops earlier, with a bracket that contains the full-depth one.
    cached = _chunk_counts._cache_size()
    loose = fn(p, X=X, y=y, apply_fn=mlp, key=key, num_samples=S, search_depth=depth,
               search_tol=0.05, deviation_tol=None)
    tl = loose.terms
    assert tl["bracket_high"] - tl["bracket_low"] <= 0.05 * tl["bracket_high"]
    assert tl["search_steps"] < depth
    assert tl["bracket_low"] <= lo and hi <= tl["bracket_high"]
    # Same shapes, second call: no recompilation of the batched kernel.
    assert _chunk_counts._cache_size() == cached


def test_search_tol_is_checked(tiny):
    p, X, y = tiny
    with pytest.raises(ValueError, match="search_tol"):
        pac_bayes_flatness(p, X=X, y=y, apply_fn=mlp, key=jax.random.key(0), search_tol=0.0)
    with pytest.raises(ValueError, match=r"deviation_tol must lie in \(0, target_deviation"):
        pac_bayes_flatness(p, X=X, y=y, apply_fn=mlp, key=jax.random.key(0), deviation_tol=0.2)
    with pytest.raises(ValueError, match="deviation_tol"):
        magnitude_aware_flatness(p, X=X, y=y, apply_fn=mlp, key=jax.random.key(0),
                                 deviation_tol=-0.01)


def _jiang_reference(p, X, y, noise, std_of, *, depth, tol, scale_max=2.0, target=0.1):
    """Jiang et al.'s search as in their reference code, every example and perturbation read at
    every step (float64): return the first midpoint whose deviation is within tol of target."""
    base = np.mean(np.asarray(jnp.argmax(mlp(p, X), 1) != y))

    def dev(s):
        return _perturbed_error(p, X, y, std_of(s), noise) - base

    lo, hi = 0.0, scale_max
    for step in range(1, depth + 1):
        mid = 0.5 * (lo + hi)
        d = dev(mid)
        if abs(d - target) < tol:
            return mid, step, d
        if d > target:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi), depth, dev(0.5 * (lo + hi))


@pytest.mark.parametrize("measure", ["sigma", "alpha"])
def test_tolerance_search_equals_reference(wide, measure):
    p, X, y = wide
    x0, _ = ravel_pytree(p)
    w = np.asarray(x0)
    key, S, depth, eps, tol = jax.random.key(11), 4, 12, 1e-3, 0.01
    noise = np.asarray(jax.random.normal(key, (S, x0.size), jnp.float64))
    fn, name, std_of = _measure(measure, w, eps)

    m = fn(p, X=X, y=y, apply_fn=mlp, key=key, num_samples=S, search_depth=depth)  # default 0.01
    scale, steps, dev = _jiang_reference(p, X, y, noise, std_of, depth=depth, tol=tol)
    t = m.terms
    assert t["within_tolerance"] and t["deviation_tol"] == tol
    assert t[name] == scale and t["search_steps"] == steps < depth
    assert t["deviation"] == pytest.approx(dev, abs=1e-12)
    assert abs(t["deviation"] - 0.1) < tol
    # The returned scale was the midpoint of the bracket reported.
    assert t[name] == 0.5 * (t["bracket_low"] + t["bracket_high"])
    # No extra pass for the reported deviation: fewer passes than steps + 1.
    assert t["data_passes"] < steps + 1


def test_private_entry_keeps_the_public_defaults():
    # report calls _sigma_prime (to pass the logits it computed): same defaults, same options.
    import inspect

    from genbounds.internal import sigma_prime as _sigma_prime

    pub = inspect.signature(pac_bayes_flatness).parameters
    priv = inspect.signature(_sigma_prime).parameters
    assert set(priv) - set(pub) == {"logits"}
    for name, par in pub.items():
        assert priv[name].default == par.default, name


def test_report_flatness_entry_equals_the_public_call(wide):
    from genbounds import report

    p, X, y = wide
    r = report(p, X=X, y=y, apply_fn=mlp, flatness=True, key=jax.random.key(5))
    [entry] = [m for m in r.measures if m.name == "pac_bayes_flatness"]
    direct = pac_bayes_flatness(p, X=X, y=y, apply_fn=mlp, key=jax.random.key(5), search_depth=8)
    assert entry.terms["sigma_prime"] == direct.terms["sigma_prime"]
    assert entry.terms["deviation"] == direct.terms["deviation"]
