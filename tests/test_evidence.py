"""Laplace evidence: the linear-Gaussian closed form, Dinh et al.'s rescaling, stochastic
quadrature against the exact log-determinant, explicit non-positive curvature, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import promoting
from scipy.stats import multivariate_normal
from sklearn.datasets import load_digits

from genbounds.internal import full_hessian
from genbounds.measures import laplace_evidence


def linear(p, X):
    return X @ p["w"] + p["b"]


@pytest.fixture(scope="module")
def linear_gaussian():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    sigma, lam_w, lam_b = 0.5, 2.0, 0.5
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3 + sigma * rng.normal(size=30)
    # Posterior mode of (w, b): (A^T A / s^2 + Lambda)^{-1} A^T y / s^2 with A = [X, 1].
    A = np.hstack([X, np.ones((30, 1))])
    Lam = np.diag([lam_w] * 4 + [lam_b])
    mode = np.linalg.solve(A.T @ A / sigma**2 + Lam, A.T @ y / sigma**2)
    params = {"w": jnp.asarray(mode[:4]), "b": jnp.asarray(mode[4])}
    cov = sigma**2 * np.eye(30) + X @ X.T / lam_w + np.ones((30, 30)) / lam_b
    ref = multivariate_normal(np.zeros(30), cov).logpdf(y)
    prior = {"w": lam_w, "b": lam_b}
    return params, jnp.asarray(X), jnp.asarray(y), sigma, prior, ref


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_linear_gaussian_closed_form(linear_gaussian, curvature):
    params, X, y, sigma, prior, ref = linear_gaussian
    r = laplace_evidence(
        params, X=X, y=y, apply_fn=linear,
        prior_precision=prior,
        likelihood="gaussian",
        noise_std=sigma,
        curvature=curvature,
        method="exact",
    )
    # Laplace is exact for a linear-Gaussian model.
    assert r.complexity == pytest.approx(ref, rel=1e-10)
    assert r.terms["grad_norm"] < 1e-8 and r.terms["num_nonpositive"] == 0
    assert r.is_measure and not r.estimated


def test_linear_gaussian_scalar_prior_smith_le_form():
    # Scalar lambda: -C(w0) - 1/2 sum ln(lambda_i / lambda) (Smith & Le), and the closed form.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 3))
    y = X @ np.array([0.5, 1.0, -1.0]) + rng.normal(size=20)
    lam = 3.0
    w = np.linalg.solve(X.T @ X + lam * np.eye(3), X.T @ y)
    f = lambda p, X: X @ p  # noqa: E731
    r = laplace_evidence(
        jnp.asarray(w), X=jnp.asarray(X), y=jnp.asarray(y), apply_fn=f,
        prior_precision=lam,
        likelihood="gaussian",
    )
    eig = np.linalg.eigvalsh(X.T @ X + lam * np.eye(3))
    cost = 0.5 * np.sum((y - X @ w) ** 2) + 10 * np.log(2 * np.pi) + 0.5 * lam * w @ w
    assert r.complexity == pytest.approx(-cost - 0.5 * np.sum(np.log(eig / lam)), rel=1e-12)
    ref = multivariate_normal(np.zeros(20), np.eye(20) + X @ X.T / lam).logpdf(y)
    assert r.complexity == pytest.approx(ref, rel=1e-10)


def test_slq_against_exact(linear_gaussian):
    params, X, y, sigma, prior, ref = linear_gaussian
    # 5 parameters, 5 Lanczos steps: each probe's quadrature is exact; only the probe noise is
    # left, and it is covered by the reported standard error.
    r = laplace_evidence(
        params, X=X, y=y, apply_fn=linear,
        prior_precision=prior,
        likelihood="gaussian",
        noise_std=sigma,
        method="slq",
        key=jax.random.key(0),
        num_probes=200,
        num_iters=5,
    )
    assert r.estimated and r.terms["stderr"] > 0
    assert abs(r.complexity - ref) <= 4 * r.terms["stderr"]


# ---------------------------------------------------------------------------------------------
# Dinh et al. (2017): rescaling two ReLU layers changes sharpness but not the function, and not
# the evidence once the prior is rescaled to match.
# ---------------------------------------------------------------------------------------------


def relu_net(p, X):
    return jnp.maximum(X @ p["W1"] + p["b1"], 0.0) @ p["W2"] + p["b2"]


def _rescale(p, a):
    return {"W1": a * p["W1"], "b1": a * p["b1"], "W2": p["W2"] / a, "b2": p["b2"]}


@pytest.fixture(scope="module")
def trained_relu():
    d = load_digits()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(d.data), 120, replace=False)
    X = jnp.asarray(d.data[idx] / 16.0)
    y = jnp.asarray((d.target[idx] >= 5).astype(np.int32))
    k = jax.random.split(jax.random.key(0), 2)
    p = {
        "W1": 0.3 * jax.random.normal(k[0], (64, 6), jnp.float64),
        "b1": jnp.full(6, 0.1, jnp.float64),
        "W2": 0.3 * jax.random.normal(k[1], (6, 2), jnp.float64),
        "b2": jnp.zeros(2, jnp.float64),
    }
    lam = 1.0

    def cost(q):
        logits = relu_net(q, X)
        nll = jnp.sum(jax.nn.logsumexp(logits, 1) - logits[jnp.arange(len(y)), y])
        return nll + 0.5 * lam * sum(jnp.sum(v * v) for v in jax.tree.leaves(q))

    # Adam with a decaying rate. The minimum of an L2-regularised ReLU net typically lies on a
    # kink (some pre-activation exactly 0), where the gradient does not vanish; the rescaling
    # identity below is exact at any point where the curvature is positive definite.
    tx = optax.adam(optax.exponential_decay(1e-2, 1000, 0.3))

    @jax.jit
    def run(q):
        def step(c, _):
            q, s = c
            u, s = promoting(tx.update)(jax.grad(cost)(q), s, q)  # Adam: float ** int32
            return (optax.apply_updates(q, u), s), None

        return jax.lax.scan(step, (q, tx.init(q)), None, length=3000)[0][0]

    p = run(p)
    return p, X, y, lam, cost


def test_dinh_rescaling(trained_relu):
    p, X, y, lam, cost = trained_relu
    a = 10.0
    q = _rescale(p, a)
    # The function is unchanged ...
    np.testing.assert_allclose(relu_net(q, X), relu_net(p, X), rtol=1e-12, atol=1e-12)

    # ... the sharpness (top eigenvalue of the unregularised loss Hessian) is not ...
    def sharp(r):
        def loss(s):
            logits = relu_net(s, X)
            return jnp.mean(jax.nn.logsumexp(logits, 1) - logits[jnp.arange(len(y)), y])

        return float(np.linalg.eigvalsh(np.asarray(full_hessian(loss, r)))[-1])

    base = sharp(p)
    for b in (0.01, 100.0):  # either direction, as sharp as one likes (observed: ~360x, ~10^4x)
        assert sharp(_rescale(p, b)) > 300 * base

    # ... and the evidence, with the prior pushed through the same map, is unchanged. The map is
    # w' = D w with D = diag(a, .., a, 1/a, .., 1, ..): the curvature becomes D^-1 A D^-1 and
    # the prior precision D^-1 Lambda D^-1, so the two log-determinants move together.
    def priors(lam):
        return (
            {"W1": lam, "b1": lam, "W2": lam, "b2": lam},
            {"W1": lam / a**2, "b1": lam / a**2, "W2": lam * a**2, "b2": lam},
        )

    shift = 2 * (64 * 6 + 6) * np.log(a) - 2 * 12 * np.log(a)  # 2 ln det D
    prior, prior_q = priors(lam)
    e_p = laplace_evidence(p, X=X, y=y, apply_fn=relu_net, prior_precision=prior, curvature="ggn")
    e_q = laplace_evidence(q, X=X, y=y, apply_fn=relu_net, prior_precision=prior_q, curvature="ggn")
    assert np.isfinite(e_p.complexity) and e_p.terms["num_nonpositive"] == 0
    assert e_q.complexity == pytest.approx(e_p.complexity, rel=1e-9)
    assert e_q.terms["cost"] == pytest.approx(e_p.terms["cost"], rel=1e-10)
    assert e_p.terms["log_det_curvature"] - e_q.terms["log_det_curvature"] == pytest.approx(
        shift, rel=1e-8
    )
    # The exact Hessian at this kinked minimum is indefinite: flagged (NaN), never silently
    # used; its inertia (number of non-positive eigenvalues) is preserved by the congruence.
    h_p = laplace_evidence(p, X=X, y=y, apply_fn=relu_net, prior_precision=prior,
                           nonpositive="nan")
    h_q = laplace_evidence(q, X=X, y=y, apply_fn=relu_net, prior_precision=prior_q,
                           nonpositive="nan")
    assert h_p.terms["num_nonpositive"] == h_q.terms["num_nonpositive"] > 0
    assert np.isnan(h_p.complexity) and np.isnan(h_q.complexity)
    # With a prior strong enough for a positive-definite Hessian the exact-Hessian Laplace
    # formula is invariant too (an identity: it does not need a minimum).
    strong, strong_q = priors(20.0)
    h_p = laplace_evidence(p, X=X, y=y, apply_fn=relu_net, prior_precision=strong)
    h_q = laplace_evidence(q, X=X, y=y, apply_fn=relu_net, prior_precision=strong_q)
    assert h_p.terms["num_nonpositive"] == 0
    assert h_q.complexity == pytest.approx(h_p.complexity, rel=1e-9)
    # Without the matching prior the evidence does change (the test can fail).
    e_bad = laplace_evidence(q, X=X, y=y, apply_fn=relu_net, prior_precision=prior, curvature="ggn")
    assert abs(e_bad.complexity - e_p.complexity) > 1.0


def test_slq_on_a_network(trained_relu):
    p, X, y, lam, _ = trained_relu
    exact = laplace_evidence(p, X=X, y=y, apply_fn=relu_net, prior_precision=lam, curvature="ggn")
    slq = laplace_evidence(
        p, X=X, y=y, apply_fn=relu_net,
        prior_precision=lam,
        curvature="ggn",
        method="slq",
        key=jax.random.key(1),
        num_probes=40,
        num_iters=40,
    )
    assert abs(slq.complexity - exact.complexity) <= 4 * slq.terms["stderr"] + 1e-3 * abs(
        exact.complexity
    )


def test_nonpositive_curvature_is_flagged(trained_relu):
    _, X, y, _, _ = trained_relu
    # Far from a minimum, with a weak prior, the exact Hessian has negative eigenvalues.
    k = jax.random.split(jax.random.key(3), 2)
    p = {
        "W1": jax.random.normal(k[0], (64, 6), jnp.float64),
        "b1": jnp.zeros(6, jnp.float64),
        "W2": jax.random.normal(k[1], (6, 2), jnp.float64),
        "b2": jnp.zeros(2, jnp.float64),
    }
    r = laplace_evidence(p, X=X, y=y, apply_fn=relu_net, prior_precision=1e-3,
                         nonpositive="nan")
    assert r.terms["num_nonpositive"] > 0 and r.terms["min_eigenvalue"] < 0
    assert np.isnan(r.complexity) and any("non-positive" in n for n in r.notes)
    with pytest.raises(ValueError, match="non-positive eigenvalue"):  # the default
        laplace_evidence(p, X=X, y=y, apply_fn=relu_net, prior_precision=1e-3)
    g = laplace_evidence(p, X=X, y=y, apply_fn=relu_net, prior_precision=1e-3, curvature="ggn")
    assert np.isfinite(g.complexity) and g.terms["num_nonpositive"] == 0
    s = laplace_evidence(
        p, X=X, y=y, apply_fn=relu_net,
        prior_precision=1e-3,
        method="slq",
        key=jax.random.key(0),
        num_probes=4,
        num_iters=30,
        nonpositive="nan",
    )
    assert np.isnan(s.complexity) and s.terms["num_nonpositive"] > 0


def test_bad_input(linear_gaussian):
    params, X, y, sigma, prior, _ = linear_gaussian
    kw = dict(likelihood="gaussian", noise_std=sigma)
    with pytest.raises(ValueError, match="prior_precision must be a finite number > 0"):
        laplace_evidence(params, X=X, y=y, apply_fn=linear, prior_precision=-1.0, **kw)
    with pytest.raises(ValueError, match="prior_precision must be finite and > 0"):
        laplace_evidence(
            params, X=X, y=y, apply_fn=linear, prior_precision={"w": 1.0, "b": 0.0}, **kw
        )
    with pytest.raises(ValueError, match="prior_precision must be a positive number or a tree"):
        laplace_evidence(params, X=X, y=y, apply_fn=linear, prior_precision={"w": 1.0}, **kw)
    with pytest.raises(ValueError, match="method must be one of"):
        laplace_evidence(
            params, X=X, y=y, apply_fn=linear, prior_precision=1.0, method="magic", **kw
        )
    with pytest.raises(ValueError, match="noise_std must be a finite number > 0"):
        laplace_evidence(
            params,
            X=X,
            y=y,
            apply_fn=linear,
            prior_precision=1.0,
            likelihood="gaussian",
            noise_std=0.0,
        )
    with pytest.raises(ValueError, match="same number of examples"):
        laplace_evidence(params, X=X, y=y[:-1], apply_fn=linear, prior_precision=1.0, **kw)
    with pytest.raises(TypeError, match=r"key must be a PRNG key such as jax.random.key\(0\)"):
        laplace_evidence(params, X=X, y=y, apply_fn=linear, prior_precision=1.0, method="slq", **kw)
