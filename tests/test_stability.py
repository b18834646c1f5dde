"""Uniform stability: HRS Theorems 3.8 and 3.12 against independent formulas (3.12 also against
a numerical minimisation of its proof's last step), and the empirical estimate against the
per-path bound of the convex proof, batched vs looped, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from genbounds.bounds import (
    empirical_stability,
    hardt_stability_convex,
    hardt_stability_nonconvex,
)


def test_convex_formula():
    alpha = np.linspace(0.5, 0.01, 300)
    r = hardt_stability_convex(lipschitz=1.5, step_sizes=alpha, n=250, smoothness=0.25)
    assert r.complexity == pytest.approx(2 * 1.5**2 * alpha.sum() / 250, rel=1e-14)
    assert r.is_measure and r.terms["num_steps"] == 300
    with pytest.raises(ValueError, match=r"step_sizes must be <= 2/smoothness = 8"):
        hardt_stability_convex(lipschitz=1.0, step_sizes=[9.0], n=10, smoothness=0.25)


def thm_3_12(L, beta, c, T, n):
    q = beta * c
    return (1 + 1 / q) / (n - 1) * (2 * c * L**2) ** (1 / (q + 1)) * T ** (q / (q + 1))


@settings(max_examples=40, deadline=None)
@given(
    L=st.floats(0.1, 5.0),
    beta=st.floats(0.1, 5.0),
    c=st.floats(0.01, 2.0),
    T=st.integers(1, 10**6),
    n=st.integers(2, 10**6),
)
def test_nonconvex_closed_form(L, beta, c, T, n):
    r = hardt_stability_nonconvex(lipschitz=L, smoothness=beta, c=c, num_steps=T, n=n)
    assert r.complexity == pytest.approx(thm_3_12(L, beta, c, T, n), rel=1e-12)
    # The proof's last step: eps <= min over t0 of t0/(n-1) + 2L^2/(beta(n-1)) (T/t0)^(beta c)
    # (Lemma 3.11 with t0/n <= t0/(n-1)); the closed form is that minimum, attained at t0.
    q = beta * c

    def g(log_t0):
        t0 = math.exp(log_t0)
        return t0 / (n - 1) + 2 * L**2 / (beta * (n - 1)) * (T / t0) ** q

    t0 = r.terms["t0"]
    assert g(math.log(t0)) == pytest.approx(r.complexity, rel=1e-10)
    best = minimize_scalar(g, bracket=(math.log(t0) - 1, math.log(t0) + 1), tol=1e-12)
    assert best.fun == pytest.approx(r.complexity, rel=1e-8)


def test_nonconvex_example_and_monotone():
    r = hardt_stability_nonconvex(lipschitz=1.0, smoothness=1.0, c=1.0, num_steps=100, n=101)
    assert r.complexity == pytest.approx(2 / 100 * math.sqrt(2) * 10, rel=1e-14)
    more = hardt_stability_nonconvex(lipschitz=1.0, smoothness=1.0, c=1.0, num_steps=400, n=101)
    assert more.complexity > r.complexity  # longer training, less stable


# ---------------------------------------------------------------------------------------------
# Empirical stability of SGD on logistic regression (convex, L = 1, beta = 1/4 for |x| <= 1).
# ---------------------------------------------------------------------------------------------

N, D, EPOCHS, ALPHA = 60, 5, 4, 0.5
ORDER = np.concatenate([np.random.default_rng(7).permutation(N) for _ in range(EPOCHS)])


def train_fn(X, y, key):
    # SGD with a fixed sample path (the same for S and S'), one example per step.
    del key

    def step(w, i):
        z = X[i] @ w
        return w - ALPHA * (jax.nn.sigmoid(z) - y[i]) * X[i], None

    return jax.lax.scan(step, jnp.zeros(X.shape[1], X.dtype), jnp.asarray(ORDER))[0]


def loss_fn(w, X, y):
    return jax.nn.softplus(-(2.0 * y - 1.0) * (X @ w))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N + 40, D))
    X /= np.linalg.norm(X, axis=1).max()  # |x| <= 1: L = 1, beta = 1/4
    y = (X @ rng.normal(size=D) + 0.3 * rng.normal(size=N + 40) > 0).astype(np.float64)
    return jnp.asarray(X[:N]), jnp.asarray(y[:N]), jnp.asarray(X[N:]), jnp.asarray(y[N:])


def test_empirical_stability_within_hrs(data):
    X, y, Xt, yt = data
    r = empirical_stability(
        train_fn, loss_fn, X=X, y=y, X_test=Xt, y_test=yt,
        key=jax.random.key(0),
        num_replacements=12,
        num_seeds=2,
        batch=5,
    )
    per_run = r.terms["max_change_per_run"]
    assert per_run.shape == (2, 12)
    # Per sample path (convex proof of Thm 3.8): steps on shared examples are non-expansive, each
    # of the EPOCHS steps on the replaced example adds at most 2 alpha L; |df| <= L |dw|.
    assert np.all(per_run <= 2 * ALPHA * EPOCHS + 1e-12)
    hrs = hardt_stability_convex(
        lipschitz=1.0, step_sizes=np.full(N * EPOCHS, ALPHA), n=N, smoothness=0.25
    )
    assert 0 < r.complexity <= hrs.complexity
    assert r.terms["max_abs_change"] >= r.complexity
    assert r.estimated and r.is_measure

    # Batched (vmap) against a plain loop for each replacement.
    w = train_fn(X, y, None)
    for j, (i, k) in enumerate(
        zip(r.terms["replaced_indices"], r.terms["replacement_indices"], strict=True)
    ):
        Xr, yr = X.at[i].set(Xt[k]), y.at[i].set(yt[k])
        d = np.abs(np.asarray(loss_fn(w, Xt, yt) - loss_fn(train_fn(Xr, yr, None), Xt, yt)))
        assert per_run[0, j] == pytest.approx(d.max(), rel=1e-10, abs=1e-14)


def test_empirical_stability_as_a_sharded_population_matches(data):
    X, y, Xt, yt = data
    kw = dict(X=X, y=y, X_test=Xt, y_test=yt, key=jax.random.key(0), num_replacements=6,
              num_seeds=2, batch=4)
    plain = empirical_stability(train_fn, loss_fn, **kw)
    sharded = empirical_stability(train_fn, loss_fn, devices=jax.devices(), **kw)
    np.testing.assert_allclose(sharded.terms["max_change_per_run"],
                               plain.terms["max_change_per_run"], rtol=1e-10, atol=1e-14)
    assert sharded.complexity == pytest.approx(plain.complexity, rel=1e-10)


def test_bad_input(data):
    X, y, Xt, yt = data
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_replacements must be <= n"):
        empirical_stability(
            train_fn, loss_fn, X=X, y=y, X_test=Xt, y_test=yt, key=key, num_replacements=N + 1
        )
    with pytest.raises(ValueError, match="same number of examples"):
        empirical_stability(train_fn, loss_fn, X=X, y=y[:-1], X_test=Xt, y_test=yt, key=key)
    with pytest.raises(ValueError, match="example shape"):
        empirical_stability(train_fn, loss_fn, X=X, y=y, X_test=Xt[:, :3], y_test=yt, key=key)
    with pytest.raises(TypeError, match="callable"):
        empirical_stability(None, loss_fn, X=X, y=y, X_test=Xt, y_test=yt, key=key)
    with pytest.raises(ValueError, match="lipschitz must be a finite number > 0"):
        hardt_stability_convex(lipschitz=-1.0, step_sizes=[0.1], n=10)
    with pytest.raises(ValueError, match="step_sizes must be >= 0"):
        hardt_stability_convex(lipschitz=1.0, step_sizes=[-0.1], n=10)
    with pytest.raises(ValueError, match="n must be >= 2"):
        hardt_stability_nonconvex(lipschitz=1.0, smoothness=1.0, c=1.0, num_steps=10, n=1)
    with pytest.raises(TypeError, match="num_steps must be an integer"):
        hardt_stability_nonconvex(lipschitz=1.0, smoothness=1.0, c=1.0, num_steps=1.5, n=10)
