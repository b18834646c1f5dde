"""Derandomised PAC-Bayes: the factor-2 and tandem (Masegosa et al. 2020) certificates of the
posterior's majority vote against float64 references, the Monte-Carlo tandem U-statistic against
enumeration of the pairs, and soundness on digits (never below the majority vote's measured test
error); perez_ortiz's n is the bound split only, its prior training and weak-prior note."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import kl_inverse_ref
from hypothesis import given, settings
from hypothesis import strategies as st

import genbounds
from genbounds.data import load
from genbounds.internal import tandem_error
from genbounds.pacbayes import (
    Certificate,
    DiagonalGaussian,
    HeldOut,
    PosteriorTraining,
    PriorTraining,
    dziugaite_roy_certificate,
    majority_vote_error,
    majority_vote_first_order,
    majority_vote_tandem,
    perez_ortiz,
    risk_certificate,
    stochastic_error,
)


def tandem_ref(t_hat, kl, n, N, delta, delta_prime):
    """Masegosa et al.'s PAC-Bayes-kl tandem bound x 4, written from the paper, float64."""
    t_up = kl_inverse_ref(t_hat, math.log(2 / delta_prime) / (N // 2))
    rhs = (2 * kl + math.log(2 * math.sqrt(n) / delta)) / n
    return 4 * kl_inverse_ref(t_up, rhs), t_up, rhs


def test_tandem_bound_matches_reference():
    for t, kl, n, N in [(0.01, 3.0, 719, 1000), (0.0, 0.0, 8, 2), (0.2, 50.0, 5000, 10_001)]:
        b = majority_vote_tandem(t, kl, n=n, num_samples=N, delta=0.025, delta_prime=0.01)
        ref, t_up, rhs = tandem_ref(t, kl, n, N, 0.025, 0.01)
        assert b.value == pytest.approx(ref, rel=1e-10)
        assert b.terms["tandem_error_upper"] == pytest.approx(t_up, rel=1e-10)
        assert b.terms["rhs"] == pytest.approx(rhs, rel=1e-14)
        assert b.terms["num_pairs"] == N // 2 and b.delta == pytest.approx(0.035)
        assert b.complexity == 2 * kl
    exact = majority_vote_tandem(0.005, 2.0, n=10_000, num_samples=None, delta=0.05)
    assert exact.value == pytest.approx(
        4 * kl_inverse_ref(0.005, (4.0 + math.log(2 * 100 / 0.05)) / 10_000), rel=1e-10)
    assert exact.delta == 0.05


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 0.5), st.floats(0.0, 100.0), st.integers(8, 10**6))
def test_tandem_bound_grows_with_kl_and_shrinks_with_n(t, kl, n):
    b = majority_vote_tandem(t, kl, n=n, num_samples=None).value
    assert b >= 4 * t
    assert majority_vote_tandem(t, kl + 1.0, n=n, num_samples=None).value >= b
    assert majority_vote_tandem(t, kl, n=2 * n, num_samples=None).value <= b


def test_first_order_is_twice_the_gibbs_bound():
    g = genbounds.pac_bayes_kl_bound(0.03, 10.0, n=1000, delta=0.05)
    b = majority_vote_first_order(g)
    assert b.value == 2 * g.value and b.n == 1000 and b.delta == 0.05
    assert majority_vote_first_order(0.6).vacuous
    with pytest.raises(ValueError, match="gibbs"):
        majority_vote_first_order(1.5)
    with pytest.raises(TypeError, match="gibbs"):
        majority_vote_first_order("0.1")


def test_tandem_u_statistic_matches_enumeration():
    rng = np.random.default_rng(0)
    E = rng.random((9, 40)) < 0.3  # 9 networks x 40 examples, errors
    pairs = [(E[i] & E[j]).mean() for i in range(9) for j in range(9) if i != j]
    assert tandem_error(E.sum(0), 9) == pytest.approx(np.mean(pairs), rel=1e-14)


def linear(p, X):
    return X @ p["w"] + p["b"]


def _toy(m=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, 2))
    y = (X[:, 0] + 0.3 * rng.normal(size=m) > 0).astype(int)
    return X, y


def test_a_point_mass_posterior_votes_as_its_mean():
    # std ~ 0: every drawn network is the mean, so the vote, the Gibbs error and the tandem
    # error all equal the mean network's error (a stated property, no estimate involved).
    X, y = _toy()
    w = {"w": jnp.array([[0.0, 1.0], [0.0, 0.2]]), "b": jnp.zeros(2)}
    q = DiagonalGaussian(w, jax.tree.map(lambda a: jnp.full_like(a, 1e-12), w))
    r = majority_vote_error(q, X=X, y=y, apply_fn=linear, key=jax.random.key(0), num_samples=50)
    mean_err = float(np.mean(np.argmax(X @ np.asarray(w["w"]), 1) != y))
    assert r["majority_vote_error"] == pytest.approx(mean_err, abs=1e-12)
    assert r["stochastic_error"] == pytest.approx(mean_err, abs=1e-6)
    assert r["tandem_error"] == pytest.approx(mean_err, abs=1e-6)


def test_risk_certificate_reports_both_majority_vote_certificates():
    X, y = _toy()
    w0 = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    q = DiagonalGaussian({"w": jnp.array([[0.0, 1.0], [0.0, 0.0]]), "b": jnp.zeros(2)},
                         {"w": jnp.full((2, 2), 0.3), "b": jnp.full(2, 0.3)})
    b = risk_certificate(q, X=X, y=y, apply_fn=linear, prior_mean=w0, prior_std=1.0,
                         key=jax.random.key(1), certificate=Certificate(num_mc_samples=301),
                         num_candidates=2)
    t = b.terms
    assert t["majority_vote_first_order"] == 2 * b.value
    ref, t_up, _ = tandem_ref(t["tandem_error_mc"], t["kl"], 300, 301, 0.0125, 0.005)
    assert t["majority_vote_tandem"] == pytest.approx(ref, rel=1e-10)
    assert t["tandem_error_upper"] == pytest.approx(t_up, rel=1e-10)
    assert t["tandem_num_pairs"] == 150
    assert t["majority_vote_certificate"] == min(t["majority_vote_first_order"],
                                                 t["majority_vote_tandem"])
    assert t["majority_vote_delta"] == pytest.approx(2 * 0.035)
    # Every network on its own subset: no common examples for the pairs, no tandem bound.
    s = risk_certificate(q, X=X, y=y, apply_fn=linear, prior_mean=w0, prior_std=1.0,
                         key=jax.random.key(1), certificate=Certificate(num_mc_samples=50,
                                                                        mc_subset=20))
    assert s.terms["majority_vote_tandem"] is None
    assert s.terms["majority_vote_certificate"] == 2 * s.value


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10)(x)


@pytest.fixture(scope="module")
def digits():
    ds = load("digits", seed=0)
    return (np.asarray(ds.X_train, np.float32), np.asarray(ds.y_train),
            np.asarray(ds.X_test, np.float32), np.asarray(ds.y_test))


def test_digits_derandomised_certificates_hold_and_n_is_the_bound_split(digits):
    X, y, Xt, yt = digits
    model = _MLP()
    p0 = model.init(jax.random.key(0), X[:1])
    b, q = perez_ortiz(p0, X=X, y=y, apply_fn=model.apply, key=jax.random.key(1),
                       prior=PriorTraining(fraction=0.4, epochs=60),
                       posterior=PosteriorTraining(epochs=2),
                       certificate=Certificate(num_mc_samples=400),
                       test=HeldOut(Xt, yt, num_mc_samples=300))
    t = b.terms
    m = len(X)
    # n in the bound is the bound split only, never the whole training set.
    assert t["n_prior"] == round(0.4 * m) and b.n == t["n_bound"] == m - t["n_prior"]
    assert t["n_train_posterior"] == m  # the posterior may see everything; n does not
    kl, e_up = t["kl"], t["bound_set_error_upper"]
    with_n = kl_inverse_ref(e_up, (kl + math.log(2 * math.sqrt(b.n) / 0.025)) / b.n)
    with_m = kl_inverse_ref(e_up, (kl + math.log(2 * math.sqrt(m) / 0.025)) / m)
    assert b.value == pytest.approx(with_n, rel=1e-10) and b.value > with_m
    # The derandomised certificates, each never below the majority vote's measured test error.
    assert t["majority_vote_test_networks"] == 300
    for name in ("majority_vote_first_order", "majority_vote_tandem",
                 "majority_vote_certificate"):
        assert t[name] >= t["majority_vote_test_error"], name
    assert b.value >= t["stochastic_test_error"]
    ref, _, _ = tandem_ref(t["tandem_error_mc"], kl, b.n, 400, 0.025, 0.01)
    assert t["majority_vote_tandem"] == pytest.approx(ref, rel=1e-10)
    # The prior was trained to its stated criterion on the prior split.
    assert t["prior_n_fit"] + t["prior_n_heldout"] == t["n_prior"]
    assert 1 <= t["prior_best_epoch"] <= t["prior_epochs_run"] <= 60
    assert t["prior_heldout_error"] < 0.2 and not any("WEAK PRIOR" in n for n in b.notes)
    # The vote of the test networks, recomputed by majority_vote_error from the same key.
    r = majority_vote_error(q, X=Xt, y=yt, apply_fn=model.apply, key=jax.random.key(5),
                            num_samples=50)
    assert 0.0 <= r["majority_vote_error"] <= 1.0
    s = stochastic_error(q, X=Xt, y=yt, apply_fn=model.apply, key=jax.random.key(5),
                         num_samples=50)
    assert s["error"] == pytest.approx(r["stochastic_error"], abs=1e-6)


def test_dziugaite_roy_reports_the_majority_vote_in_its_form(digits):
    X, y, Xt, yt = digits
    X, y = X[:400], y[:400]
    model = _MLP()
    p0 = model.init(jax.random.key(0), X[:1])
    q = DiagonalGaussian(p0, jax.tree.map(lambda a: jnp.full_like(a, 0.01), p0))
    b = dziugaite_roy_certificate(q, X=X, y=y, apply_fn=model.apply, init_params=p0,
                                  prior_variance=1e-3, key=jax.random.key(2), num_mc_samples=200)
    t = b.terms
    m, j = 400, t["j"]
    t_up = kl_inverse_ref(t["tandem_error_mc"], math.log(2 / 0.01) / 100)
    rhs = (2 * t["kl"] + 2 * math.log(j) + math.log(math.pi**2 * m / (6 * 0.025))) / (m - 1)
    assert t["majority_vote_tandem"] == pytest.approx(4 * kl_inverse_ref(t_up, rhs), rel=1e-10)
    assert t["majority_vote_first_order"] == 2 * b.value


def test_a_weak_prior_is_noted(digits):
    X, y, _, _ = digits
    model = _MLP()
    p0 = model.init(jax.random.key(0), X[:1])
    b, _ = perez_ortiz(p0, X=X[:300], y=y[:300], apply_fn=model.apply, key=jax.random.key(1),
                       prior=PriorTraining(epochs=1, lr=1e-4),
                       posterior=PosteriorTraining(epochs=1),
                       certificate=Certificate(num_mc_samples=20))
    assert b.terms["prior_heldout_error"] > 0.2
    assert any("WEAK PRIOR" in n and "weak_error=0.2" in n for n in b.notes)
    with pytest.raises(ValueError, match="holdout"):
        perez_ortiz(p0, X=X[:300], y=y[:300], apply_fn=model.apply, key=jax.random.key(1),
                    prior=PriorTraining(holdout=1.0))
