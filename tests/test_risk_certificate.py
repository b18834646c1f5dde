"""Risk certificates (Pérez-Ortiz et al. 2021): formulas against float64 references, the
relaxation property of the objectives, the union bound, jitted training without recompiles, a
coverage test on a problem whose true risk is known, and bad input."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import gaussian_kl_ref
from helpers import kl_inverse_ref as kl_inv_ref
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, special, stats

import genbounds
from genbounds.internal import run_posterior_loop
from genbounds.pacbayes import (
    Certificate,
    HeldOut,
    PosteriorTraining,
    PriorTraining,
    bounded_cross_entropy,
    learn_prior,
    optimal_lambda,
    pac_bayes_objective,
    perez_ortiz,
    risk_certificate,
    risk_certificate_from_terms,
    split_data,
    train_posterior,
)

# ---------------------------------------------------------------------------------------------
# Independent float64 references, written from the papers (the shared ones in tests/helpers.py).
# ---------------------------------------------------------------------------------------------


def kappa_ref(kl, n, delta):
    return kl + math.log(2.0 * math.sqrt(n) / delta)


def objective_ref(name, L, kl, n, delta, lam=None):
    k = kappa_ref(kl, n, delta)
    if name == "quad":
        return (math.sqrt(L + k / (2 * n)) + math.sqrt(k / (2 * n))) ** 2
    if name == "lambda":
        return L / (1 - lam / 2) + k / (n * lam * (1 - lam / 2))
    if name == "classic":
        return L + math.sqrt(k / (2 * n))
    return L + math.sqrt((kl + math.log(n / delta)) / (2 * (n - 1)))


def linear(p, X):
    return X @ p["w"]


# ---------------------------------------------------------------------------------------------
# Closed forms.
# ---------------------------------------------------------------------------------------------


def test_bounded_cross_entropy_matches_reference():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=8.0, size=(50, 4))
    y = rng.integers(0, 4, 50)
    p_min = 1e-3
    logp = z - special.logsumexp(z, axis=1, keepdims=True)
    ref = np.minimum(-logp[np.arange(50), y], math.log(1 / p_min)) / math.log(1 / p_min)
    got = np.asarray(bounded_cross_entropy(jnp.asarray(z), jnp.asarray(y), p_min=p_min))
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)  # float64 log-sum-exp
    assert got.min() >= 0.0 and got.max() <= 1.0 and np.any(got == 1.0)
    # One output unit: logistic probability of the label.
    z1 = rng.normal(scale=8.0, size=50)
    y1 = rng.integers(0, 2, 50)
    nll = np.logaddexp(0.0, -np.where(y1 == 1, z1, -z1))  # -ln sigmoid(+-z), accurate
    ref1 = np.minimum(nll, math.log(1 / p_min)) / math.log(1 / p_min)
    got1 = np.asarray(bounded_cross_entropy(jnp.asarray(z1), jnp.asarray(y1), p_min=p_min))
    np.testing.assert_allclose(got1, ref1, rtol=1e-10)


@pytest.mark.parametrize("name", ["quad", "lambda", "classic", "dziugaite_roy"])
def test_objectives_match_reference(name):
    for L, kl, n in [(0.02, 50.0, 30_000), (0.3, 1000.0, 700), (0.0, 0.0, 8)]:
        lam = 0.7 if name == "lambda" else None
        got = pac_bayes_objective(L, kl, n=n, delta=0.025, objective=name, lam=lam)
        assert got == pytest.approx(objective_ref(name, L, kl, n, 0.025, lam), rel=1e-12)


def test_optimal_lambda_minimises_f_lambda():
    for L, kl, n in [(0.02, 50.0, 30_000), (0.3, 1000.0, 700), (0.1, 5.0, 100)]:
        res = optimize.minimize_scalar(
            lambda lam, L=L, kl=kl, n=n: objective_ref("lambda", L, kl, n, 0.025, lam),
            bounds=(1e-9, 2 - 1e-9), method="bounded", options={"xatol": 1e-12},
        )
        assert optimal_lambda(L, kl, n=n) == pytest.approx(res.x, rel=1e-5)
        assert pac_bayes_objective(L, kl, n=n, objective="lambda") == pytest.approx(
            res.fun, rel=1e-10)


@settings(max_examples=60, deadline=None)
@given(
    L=st.floats(0.0, 1.0),
    kl=st.floats(0.0, 1e4),
    n=st.integers(8, 10**6),
    lam=st.floats(0.01, 1.99),
)
def test_objectives_relax_the_kl_certificate(L, kl, n, lam):
    # f_quad, f_lambda (any lambda) and f_classic are relaxations of the PAC-Bayes-kl bound with
    # the same kappa/n: never below the kl inversion (paper §3; Pinsker-type inequalities).
    cert = risk_certificate_from_terms(kl=kl, error=L, n=n, delta=0.025)
    assert cert == pytest.approx(kl_inv_ref(L, kappa_ref(kl, n, 0.025) / n), rel=1e-9, abs=1e-12)
    for name in ("quad", "classic"):
        assert pac_bayes_objective(L, kl, n=n, objective=name) >= cert * (1 - 1e-12)
    assert pac_bayes_objective(L, kl, n=n, objective="lambda", lam=lam) >= cert * (1 - 1e-12)


# ---------------------------------------------------------------------------------------------
# The certificate of a given posterior.
# ---------------------------------------------------------------------------------------------


def _toy(seed=0, m=400, eta=0.1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, 2))
    y = (X @ np.array([1.0, 0.5]) > 0).astype(int)
    flip = rng.random(m) < eta
    return X, np.where(flip, 1 - y, y)


def test_risk_certificate_assembles_its_terms():
    X, y = _toy()
    q = genbounds.DiagonalGaussian({"w": jnp.array([1.0, 0.4])}, {"w": jnp.array([0.2, 0.3])})
    w_p = {"w": jnp.array([0.8, 0.2])}
    key = jax.random.key(3)
    b1 = risk_certificate(
        q, X=X, y=y, apply_fn=linear, prior_mean=w_p, prior_std=0.5, key=key, num_mc_samples=400
    )
    b3 = risk_certificate(
        q,
        X=X,
        y=y,
        apply_fn=linear,
        prior_mean=w_p,
        prior_std=0.5,
        key=key,
        num_mc_samples=400,
        num_candidates=3,
    )
    # KL in float64 from the closed form.
    kl = gaussian_kl_ref([1.0, 0.4], [0.2, 0.3], [0.8, 0.2], 0.5)
    assert b1.terms["kl"] == pytest.approx(kl, rel=1e-6)
    for b, K in ((b1, 1), (b3, 3)):
        e_up = kl_inv_ref(b.terms["bound_set_error_mc"], math.log(2 * K / 0.01) / 400)
        assert b.terms["bound_set_error_upper"] == pytest.approx(e_up, rel=1e-9)
        ref = kl_inv_ref(e_up, kappa_ref(b.terms["kl"], 400, 0.025 / K) / 400)
        assert b.value == pytest.approx(ref, rel=1e-9)
        assert b.delta == pytest.approx(0.035) and b.n == 400
    assert b3.value > b1.value  # the union bound costs something
    assert "stochastic" in b1.notes[0]


def test_certificate_against_the_authors_arithmetic_written_out():
    # The authors' code (mperezortiz/PBB, PBBobj.compute_final_stats_risk) in float64: both kl
    # inversions at delta' = 0.01; its runexp passes n_bound = the whole training set (m). The
    # figures of docs/bounds/risk_certificates.md ("Compared with the authors' code").
    e, kl, n, m, N = 0.0296, 0.05, 719, 1437, 10_000
    e_up = kl_inv_ref(e, math.log(2 / 0.01) / N)

    def authors(nb):
        return kl_inv_ref(e_up, (kl + math.log(2 * math.sqrt(nb) / 0.01)) / nb)

    g_up = genbounds.sample_convergence_bound(e, num_samples=N, delta_prime=0.01)
    ours = risk_certificate_from_terms(kl=kl, error=g_up, n=n, delta=0.025)
    assert g_up == pytest.approx(e_up, rel=1e-10)
    assert ours == pytest.approx(kl_inv_ref(e_up, kappa_ref(kl, n, 0.025) / n), rel=1e-10)
    # delta' in the PAC-Bayes step is the only difference on the same n ...
    theirs = risk_certificate_from_terms(kl=kl, error=g_up, n=n, delta=0.01)
    assert theirs == pytest.approx(authors(n), rel=1e-10)
    # ... and n = m instead of the bound set's n makes it optimistic.
    assert (round(ours, 4), round(authors(n), 4), round(authors(m), 4)) == (0.0694, 0.0718, 0.0601)
    assert authors(m) < ours < authors(n)


def test_split_data_is_a_partition():
    X, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 3
    s = split_data(X, y, prior_fraction=0.3, seed=1)
    assert len(s.prior_indices) == 6 and len(s.bound_indices) == 14
    assert set(s.prior_indices) | set(s.bound_indices) == set(range(20))
    assert not set(s.prior_indices) & set(s.bound_indices)
    np.testing.assert_array_equal(s.X_bound, X[s.bound_indices])
    with pytest.raises(ValueError, match="prior_fraction"):
        split_data(X, y, prior_fraction=1.0)
    with pytest.raises(ValueError, match="at least 8"):
        split_data(X, y, prior_fraction=0.9)


def test_training_is_jitted_once_and_reports_progress():
    X, y = _toy(m=256)
    w0 = {"w": jnp.zeros(2)}
    seen = []
    kw = dict(n_bound=128, prior_std=0.3, epochs=3, batch_size=32, lr=0.01,
              callback=lambda e, m: seen.append((e, m)))
    train_posterior(w0, X=X, y=y, apply_fn=linear, key=jax.random.key(0), **kw)
    before = run_posterior_loop._cache_size()
    q, hist = train_posterior(w0, X=X, y=y, apply_fn=linear, key=jax.random.key(1), **kw)
    assert run_posterior_loop._cache_size() == before  # same shapes: no recompilation
    assert [e for e, _ in seen] == [0, 1, 2, 0, 1, 2]
    assert set(seen[0][1]) == {"objective", "loss", "kl", "error", "lam"}
    assert len(hist["objective"]) == 3 and all(np.isfinite(hist["kl"]))
    # f_lambda keeps lambda at its closed form, inside (0, 2).
    _, hl = train_posterior(
        w0,
        X=X,
        y=y,
        apply_fn=linear,
        key=jax.random.key(1),
        objective="lambda",
        **{**kw, "callback": None},
    )
    assert all(0.0 < v < 2.0 for v in hl["lam"]) and hl["lam"][-1] != 1.0


def test_learn_prior_uses_only_the_prior_data():
    X, y = _toy(m=300)
    w0 = {"w": jnp.zeros(2)}
    a = learn_prior(
        w0, X=X[:100], y=y[:100], apply_fn=linear, key=jax.random.key(0), epochs=5, batch_size=20
    )
    Xb = X.copy()
    Xb[100:] = 0.0  # changing the rest of the data cannot change a prior learnt on X[:100]
    b = learn_prior(
        w0, X=Xb[:100], y=y[:100], apply_fn=linear, key=jax.random.key(0), epochs=5, batch_size=20
    )
    np.testing.assert_array_equal(np.asarray(a["w"]), np.asarray(b["w"]))
    assert float(jnp.linalg.norm(a["w"])) > 0.0
    c = learn_prior(w0, X=X[:100], y=y[:100], apply_fn=linear, key=jax.random.key(0), epochs=3,
                    batch_size=20, objective="quad", prior_std=0.3)
    assert c["w"].shape == (2,)


def _same_tree(a, b):
    for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))


def test_option_bundles_and_earlier_keywords_agree():
    X, y = _toy(m=200)
    w0 = {"w": jnp.zeros(2)}
    common = dict(X=X, y=y, apply_fn=linear, key=jax.random.key(0))
    a, qa = perez_ortiz(
        w0, **common,
        prior=PriorTraining(fraction=0.4, split_seed=1, epochs=2, lr=0.02, batch_size=32),
        posterior=PosteriorTraining(objective="classic", epochs=2, batch_size=32),
        certificate=Certificate(num_mc_samples=50, delta_prime=0.02),
        test=HeldOut(X[:50], y[:50], num_mc_samples=20),
    )
    b, qb = perez_ortiz(
        w0, **common, prior_fraction=0.4, split_seed=1, prior_epochs=2, prior_lr=0.02,
        batch_size=32, objective="classic", epochs=2, num_mc_samples=50, delta_prime=0.02,
        X_test=X[:50], y_test=y[:50], test_mc_samples=20,
    )
    assert a.value == b.value and a.delta == b.delta == pytest.approx(0.045)
    assert a.terms["stochastic_test_error"] == b.terms["stochastic_test_error"]
    assert a.terms["n_prior"] == b.terms["n_prior"] == 80 and a.terms["objective"] == "classic"
    _same_tree(qa, qb)
    with pytest.raises(TypeError, match="prior_epoch"):
        perez_ortiz(w0, **common, prior_epoch=2)
    with pytest.raises(TypeError, match="prior must be a PriorTraining"):
        perez_ortiz(w0, **common, prior=PosteriorTraining())
    # The parts take the same bundles, and the same earlier keywords.
    _same_tree(learn_prior(w0, **common, training=PriorTraining(epochs=2, batch_size=20)),
               learn_prior(w0, **common, epochs=2, batch_size=20))
    q1, h1 = train_posterior(w0, **common, n_bound=100, prior_std=0.3,
                             training=PosteriorTraining(epochs=2, batch_size=32, kl_penalty=0.5))
    q2, h2 = train_posterior(w0, **common, n_bound=100, prior_std=0.3, epochs=2, batch_size=32,
                             kl_penalty=0.5)
    assert h1 == h2
    _same_tree(q1, q2)
    r1 = risk_certificate(q1, **common, prior_mean=w0, prior_std=0.3,
                          certificate=Certificate(num_mc_samples=40, mc_subset=20))
    r2 = risk_certificate(q1, **common, prior_mean=w0, prior_std=0.3, num_mc_samples=40,
                          mc_subset=20)
    assert r1.value == r2.value and r1.terms["num_mc_samples"] == 40
    assert r1.terms["mc_subset"] == 20
    with pytest.raises(TypeError, match="num_samples"):
        risk_certificate(q1, **common, prior_mean=w0, prior_std=0.3, num_samples=40)


@pytest.mark.slow
def test_perez_ortiz_mlp_and_cnn_certificates_hold_on_test_data():
    from genbounds.train import CNN, MLP

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 4, 4, 1)).astype(np.float32)
    y = (X[:, :2].sum(axis=(1, 2, 3)) > X[:, 2:].sum(axis=(1, 2, 3))).astype(int)
    Xt = rng.normal(size=(400, 4, 4, 1)).astype(np.float32)
    yt = (Xt[:, :2].sum(axis=(1, 2, 3)) > Xt[:, 2:].sum(axis=(1, 2, 3))).astype(int)
    for model in (MLP(features=(16,), num_classes=2), CNN(features=(4,), num_classes=2)):
        p0 = model.init(jax.random.key(0), X[:1])
        b, q = perez_ortiz(
            p0,
            X=X,
            y=y,
            apply_fn=model.apply,
            key=jax.random.key(1),
            prior_epochs=10,
            prior_lr=0.05,
            epochs=5,
            batch_size=32,
            prior_stds=(0.01, 0.03),
            num_mc_samples=300,
            X_test=Xt,
            y_test=yt,
            test_mc_samples=100,
        )
        t = b.terms
        assert b.name == "risk_certificate" and b.delta == pytest.approx(0.035)
        assert t["n_prior"] == 300 and t["n_bound"] == 300 and t["num_candidates"] == 2
        assert b.value == min(c["certificate"] for c in t["candidates"])
        assert t["bound_set_error_mc"] <= t["bound_set_error_upper"] <= b.value < 1.0
        # Soundness on held-out data: the certificate is never below the measured test error.
        assert b.value >= t["stochastic_test_error"]
        assert b.value < 0.5  # and it says something


# ---------------------------------------------------------------------------------------------
# Coverage: a problem whose true risk is known in closed form.
# ---------------------------------------------------------------------------------------------


def _true_risk(q, u, eta, key, draws=400_000):
    """e(Q) for x ~ N(0, I_2), y = [x.u > 0] flipped w.p. eta, classifier [x.w > 0]: the error
    of w is eta + (1 - 2 eta) angle(w, u) / pi; averaged over 400k draws w ~ Q."""
    mu, sd = np.asarray(q.mean["w"], np.float64), np.asarray(q.std["w"], np.float64)
    w = mu + sd * np.asarray(jax.random.normal(key, (draws, 2)), np.float64)
    cos = (w @ u) / (np.linalg.norm(w, axis=1) * np.linalg.norm(u))
    return float(np.mean(eta + (1 - 2 * eta) * np.arccos(np.clip(cos, -1, 1)) / np.pi))


def test_coverage_on_a_problem_with_known_risk():
    u, eta, m, R = np.array([1.0, 0.5]), 0.2, 96, 80
    delta, delta_prime = 0.1, 0.05
    w0 = {"w": jnp.array([0.1, -0.1])}
    fails = naive_fails = 0
    for r in range(R):
        rng = np.random.default_rng(1000 + r)
        X = rng.normal(size=(m, 2))
        y = (X @ u > 0).astype(int)
        y = np.where(rng.random(m) < eta, 1 - y, y)
        key = jax.random.key(r)
        k1, k2, k3, k4 = jax.random.split(key, 4)
        s = split_data(X, y, prior_fraction=0.5, seed=r)
        w_p = learn_prior(
            w0, X=s.X_prior, y=s.y_prior, apply_fn=linear, key=k1, epochs=5, batch_size=16, lr=0.05
        )
        q, _ = train_posterior(
            w_p,
            X=X,
            y=y,
            apply_fn=linear,
            n_bound=len(s.X_bound),
            prior_std=0.5,
            key=k2,
            epochs=3,
            batch_size=16,
            lr=0.02,
        )
        b = risk_certificate(
            q,
            X=s.X_bound,
            y=s.y_bound,
            apply_fn=linear,
            prior_mean=w_p,
            prior_std=0.5,
            key=k3,
            delta=delta,
            delta_prime=delta_prime,
            num_mc_samples=50,
        )
        risk = _true_risk(q, u, eta, k4)
        fails += b.value < risk
        naive_fails += b.terms["bound_set_error_mc"] < risk  # not a bound: fails often
    # Failure rate not above delta + delta' within a one-sided 99.9% binomial interval.
    limit = stats.binom.ppf(0.999, R, delta + delta_prime)
    assert fails <= limit, (fails, limit)
    # Power: the test can see an unsound number. The plain Monte-Carlo empirical error is below
    # the true risk in far more than delta + delta' of the runs.
    assert naive_fails > limit, (naive_fails, limit)


# ---------------------------------------------------------------------------------------------
# The experiment and the command line.
# ---------------------------------------------------------------------------------------------


def test_reproduce_risk_certificate_small_run(tmp_path):
    from genbounds.experiments import reproduce_risk_certificate

    rec = reproduce_risk_certificate(
        "digits-binary", tmp_path, verbose=False, prior_epochs=10, epochs=2,
        prior_stds=(0.03,), num_mc_samples=200, test_mc_samples=50,
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["certificate"] == rec["certificate"] and saved["n_bound"] == 719
    assert rec["certificate"] >= rec["stochastic_test_error"]
    assert rec["certificate"] < 0.5
    assert "risk certificate" in (tmp_path / "summary.md").read_text()


def test_reproduce_risk_certificate_is_wired(monkeypatch, tmp_path, capsys):
    import genbounds.experiments as rc
    from genbounds.experiments import main

    seen = {}

    def fake(dataset, out, *, seed, download):
        seen.update(dataset=dataset, out=out, seed=seed)
        (out / "results.json").write_text("{}")
        (out / "summary.md").write_text("")
        return {}

    monkeypatch.setattr(rc, "reproduce_risk_certificate", fake)
    out = tmp_path / "rc"
    assert main(["reproduce", "risk-certificate", "--dataset", "mnist1d", "--out", str(out)]) == 0
    assert seen == {"dataset": "mnist1d", "out": out, "seed": 0}
    assert "results.json" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["digits", "digits-binary"])
def test_digits_targets(dataset):
    from genbounds.experiments import reproduce_risk_certificate

    rec = reproduce_risk_certificate(dataset, None, verbose=False)
    assert rec["certificate"] >= rec["stochastic_test_error"]
    assert rec["certificate"] <= 0.20


# ---------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------


def test_bad_input_is_named():
    X, y = _toy(m=64)
    w0 = {"w": jnp.zeros(2)}
    q = genbounds.DiagonalGaussian({"w": jnp.zeros(2)}, {"w": jnp.ones(2)})
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="objective"):
        pac_bayes_objective(0.1, 1.0, n=100, objective="bbb")
    with pytest.raises(ValueError, match="lam"):
        pac_bayes_objective(0.1, 1.0, n=100, objective="lambda", lam=2.5)
    with pytest.raises(ValueError, match="n must be >= 8"):
        risk_certificate_from_terms(kl=1.0, error=0.1, n=5, delta=0.05)
    with pytest.raises(ValueError, match="p_min"):
        bounded_cross_entropy(jnp.zeros((2, 2)), jnp.zeros(2, int), p_min=0.0)
    with pytest.raises(ValueError, match="X must hold at least 8"):
        risk_certificate(
            q, X=X[:5], y=y[:5], apply_fn=linear, prior_mean=w0, prior_std=1.0, key=key
        )
    with pytest.raises(ValueError, match="delta \\+ delta_prime"):
        risk_certificate(
            q,
            X=X,
            y=y,
            apply_fn=linear,
            prior_mean=w0,
            prior_std=1.0,
            key=key,
            delta=0.6,
            delta_prime=0.5,
        )
    with pytest.raises(ValueError, match="prior_std"):
        train_posterior(w0, X=X, y=y, apply_fn=linear, n_bound=32, prior_std=-1.0, key=key)
    with pytest.raises(ValueError, match="posterior_data"):
        perez_ortiz(w0, X=X, y=y, apply_fn=linear, key=key, posterior_data="test")
    with pytest.raises(ValueError, match="X_test and y_test"):
        perez_ortiz(w0, X=X, y=y, apply_fn=linear, key=key, X_test=X)
    with pytest.raises(ValueError, match="prior_mean"):
        risk_certificate(
            q, X=X, y=y, apply_fn=linear, prior_mean={"w": jnp.zeros(3)}, prior_std=1.0, key=key
        )
