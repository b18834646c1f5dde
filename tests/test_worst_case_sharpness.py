"""Jiang et al.'s worst-case sharpness (eqs. 50-52) and its magnitude-aware variant (58-60):
alpha' against a closed form on a logistic model whose worst box corner is known, the mu formulas
recomputed in float64, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from genbounds.measures import magnitude_aware_sharpness, worst_case_sharpness


def logistic(p, X):
    return X @ p["w"] + p["b"]


@pytest.fixture(scope="module")
def corner_problem():
    """Positive inputs, all labels 1, positive margins: one corner (u = -box) lowers every margin
    at once, so the worst-case error of a box is known in closed form."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0.1, 1.0, size=(10, 3))
    p = {"w": np.array([[0.8], [1.3], [0.5]]), "b": np.array([0.2])}
    y = np.ones(10, dtype=np.int32)
    margins = (X @ p["w"] + p["b"])[:, 0]
    assert np.all(margins > 0)
    return p, X, y, margins


def test_alpha_prime_closed_form(corner_problem):
    p, X, y, margins = corner_problem
    # Box |u| <= a on (w, b): margin_i drops to margin_i - a (||x_i||_1 + 1). The error passes
    # 0.1 (one example of ten) when the second example falls: at the second smallest ratio.
    ratio = np.sort(margins / (np.abs(X).sum(1) + 1.0))
    m = worst_case_sharpness(p, X=X, y=y, apply_fn=logistic, key=jax.random.key(1), steps=10,
                             search_depth=20, scale_max=2.0)
    a = m.terms["alpha_prime"]
    assert m.terms["reached_target"]
    assert abs(a - ratio[1]) <= 2.0 / 2**20
    assert m.terms["bracket_low"] <= ratio[1] <= m.terms["bracket_high"]
    assert m.complexity == pytest.approx(1.0 / a**2, rel=1e-12)


def test_magnitude_aware_alpha_prime_closed_form(corner_problem):
    p, X, y, margins = corner_problem
    eps = 1e-3
    # Box |u_j| <= a |w_j| + eps: margin_i - eps (||x_i||_1 + 1) - a (sum_j |w_j| x_ij + |b|).
    wx = (np.abs(X) @ np.abs(p["w"]))[:, 0] + abs(p["b"][0])
    ratio = np.sort((margins - eps * (np.abs(X).sum(1) + 1.0)) / wx)
    m = magnitude_aware_sharpness(
        p,
        X=X,
        y=y,
        apply_fn=logistic,
        key=jax.random.key(2),
        epsilon=eps,
        steps=10,
        search_depth=20,
    )
    assert abs(m.terms["alpha_prime"] - ratio[1]) <= 2.0 / 2**20


def test_mu_formulas_recomputed(corner_problem):
    p, X, y, _ = corner_problem
    w0 = jax.tree.map(lambda a: 0.3 * np.asarray(a), p)
    xw = np.asarray(ravel_pytree(p)[0], np.float64)
    v0 = xw - np.asarray(ravel_pytree(w0)[0], np.float64)
    omega, m_ = xw.size, len(X)

    s = worst_case_sharpness(p, X=X, y=y, apply_fn=logistic, key=jax.random.key(0), init_params=w0,
                             search_depth=10)
    a = s.terms["alpha_prime"]
    tail = math.log(m_ / a) + 10.0
    assert s.terms["mu_51"] == pytest.approx(
        np.sum(xw**2) * math.log(2 * omega) / (4 * a * a) + tail, rel=1e-12)
    assert s.terms["mu_50"] == pytest.approx(
        np.sum(v0**2) * math.log(2 * omega) / (4 * a * a) + tail, rel=1e-12)
    assert s.terms["mu_50_adjusted"] == pytest.approx(math.sqrt(s.terms["mu_50"] / m_))

    eps = 1e-3
    g = magnitude_aware_sharpness(
        p,
        X=X,
        y=y,
        apply_fn=logistic,
        key=jax.random.key(0),
        init_params=w0,
        epsilon=eps,
        search_depth=10,
    )
    a = g.terms["alpha_prime"]
    tail = math.log(m_ / a) + 10.0
    c = a * a + 4 * math.log(2 * omega)
    for v, name in ((v0, "mu_58"), (xw, "mu_59")):
        ref = 0.25 * sum(math.log((eps**2 + c * float(v @ v) / omega) / (eps**2 + a * a * d * d))
                         for d in v0) + tail
        assert g.terms[name] == pytest.approx(ref, rel=1e-12)
    assert g.complexity == pytest.approx(1 / a**2, rel=1e-12)


def test_bad_input(corner_problem):
    p, X, y, _ = corner_problem
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="target_deviation"):
        worst_case_sharpness(p, X=X, y=y, apply_fn=logistic, key=key, target_deviation=1.5)
    with pytest.raises(ValueError, match="restarts"):
        worst_case_sharpness(p, X=X, y=y, apply_fn=logistic, key=key, restarts=0)
    with pytest.raises(ValueError, match="steps"):
        worst_case_sharpness(p, X=X, y=y, apply_fn=logistic, key=key, steps=0)
    with pytest.raises(ValueError, match="epsilon"):
        magnitude_aware_sharpness(p, X=X, y=y, apply_fn=logistic, key=key, epsilon=-1.0)
    with pytest.raises(TypeError, match="key"):
        worst_case_sharpness(p, X=X, y=y, apply_fn=logistic, key=None)
    with pytest.raises(ValueError, match="init_params"):
        worst_case_sharpness(
            p,
            X=X,
            y=y,
            apply_fn=logistic,
            key=key,
            init_params={"w": jnp.zeros((2, 1)), "b": jnp.zeros(1)},
        )
