"""Every bad or extreme input at the newer surface ends in a clear error (naming the argument,
what was expected and what came) or a stated, finite result: labels in range, eps within the
input dtype, keys and seeds checked first, prior scales the training dtype holds, divergence
reported as divergence, half precision refused, the KL exact at Q = P, Lipschitz bounds beyond
float64 in log space, infinities ranked in Kendall's tau, untraceable functions named."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genbounds import Network, NotBoundable, adversarial, measures, pacbayes, spectral_norms
from genbounds.internal import clamp_kl

RNG = np.random.default_rng(1)
X = RNG.normal(size=(40, 4))
Y = RNG.integers(0, 3, 40)
W = {"w": jnp.asarray(RNG.normal(size=(4, 3))), "b": jnp.zeros(3)}
KEY = jax.random.key(0)


def f(p, x):
    return x.astype(p["w"].dtype) @ p["w"] + p["b"]


def q_of(p, s=0.1):
    return pacbayes.DiagonalGaussian(p, jax.tree.map(lambda a: jnp.full_like(a, s), p))


# -- attacks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_attack_label_out_of_range(attack):
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\) .* got labels up to 7"):
        getattr(adversarial, attack)(W, X=X, y=np.where(Y == 0, 7, Y), apply_fn=f, eps=0.1)


def test_attack_eps_beyond_the_input_dtype():
    X32 = X.astype(np.float32)
    with pytest.raises(ValueError, match=r"eps must keep the perturbed inputs finite in X's "
                                         r"dtype float32"):
        adversarial.pgd(W, X=X32, y=Y, apply_fn=f, eps=1e39, steps=2)
    r = adversarial.pgd(W, X=X32, y=Y, apply_fn=f, eps=1e30, steps=2)  # in range: runs
    assert r.robust_accuracy == 0.0


def test_attack_wrong_output_shape_and_input_width():
    with pytest.raises(ValueError, match=r"pgd: apply_fn\(params, X\) must return logits of "
                                         r"shape .* n = 40, got shape \(39, 3\)"):
        adversarial.pgd(W, X=X, y=Y, apply_fn=lambda p, x: f(p, x)[1:], eps=0.1)
    with pytest.raises(TypeError, match=r"pgd: apply_fn\(params, X\) failed on X of shape "
                                        r"\(40, 3\)"):
        adversarial.pgd(W, X=X[:, :3], y=Y, apply_fn=f, eps=0.1)


@pytest.mark.parametrize("key", [0, None])
def test_keys_checked_before_any_work(key):
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        pacbayes.risk_certificate(q_of(W), X=X, y=Y, apply_fn=f, prior_mean=W, prior_std=0.1,
                                  key=key, num_mc_samples=5)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        pacbayes.perez_ortiz(W, X=X, y=Y, apply_fn=f, key=key)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        pacbayes.DiagonalGaussian(W, W).sample(key)
    if key is not None:  # None means "no key" where a key is optional
        with pytest.raises(TypeError, match="key must be a PRNG key"):
            adversarial.pgd(W, X=X, y=Y, apply_fn=f, eps=0.1, key=key)
        with pytest.raises(TypeError, match="key must be a PRNG key"):
            measures.sharpness(W, X=X, y=Y, apply_fn=f, key=key)


def test_seeds_checked_before_any_work():
    with pytest.raises(ValueError, match=r"split_seed must be an integer >= 0, got -1"):
        pacbayes.perez_ortiz(W, X=X, y=Y, apply_fn=f, key=KEY, split_seed=-1)
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got -1"):
        pacbayes.split_data(X, Y, prior_fraction=0.5, seed=-1)


# -- certified radii ---------------------------------------------------------------------------


def test_certified_label_out_of_range_and_nan_logits():
    dense = {"Dense_0": {"kernel": np.asarray(W["w"])}}
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\) .* up to 7"):
        adversarial.certified_radius(dense, X=X, y=np.where(Y == 0, 7, Y), apply_fn=linear)
    huge = {"Dense_0": {"kernel": np.full((4, 4), 1e200)}, "Dense_1": {"kernel": np.eye(4, 3)}}
    with pytest.raises(ValueError, match=r"apply_fn\(params, x\) is not finite on finite inputs "
                                         r"\(\d+ NaN and \d+ infinite"):
        adversarial.certified_radius(huge, X=np.abs(X) * 1e200, y=Y, apply_fn=chain)


def linear(p, x):
    """The one-layer network of a {"Dense_0": {"kernel": W}} dict."""
    return x @ p["Dense_0"]["kernel"]


def overflowing_net(pairs=2, big=1e155):
    """A ReLU chain whose layer-norm product is big**pairs (> e^709) while its logits stay
    small: diag(big, 1) scales a coordinate that the next layer, diag(0, 1), zeroes."""
    p = {}
    for i in range(pairs):
        p[f"Dense_{2 * i}"] = {"kernel": np.diag([big, 1.0])}
        p[f"Dense_{2 * i + 1}"] = {"kernel": np.diag([0.0, 1.0])}
    p[f"Dense_{2 * pairs}"] = {"kernel": np.array([[0.0, 0.0], [1.0, -1.0]])}
    return p


def chain(p, x):
    """The ReLU chain of `overflowing_net` as a function."""
    n = len(p)
    for i in range(n):
        x = x @ p[f"Dense_{i}"]["kernel"]
        x = jax.nn.relu(x) if i < n - 1 else x
    return x


@pytest.mark.parametrize("method", ["product", "tight"])
def test_certified_radius_in_log_space_beyond_float64(method):
    Xp = np.abs(RNG.normal(size=(6, 2))) + 0.5
    y = np.zeros(6, int)
    r = adversarial.certified_radius(overflowing_net(), X=Xp, y=y, apply_fn=chain, method=method)
    log_l = r.terms["log_lipschitz"]
    assert r.lipschitz == math.inf and log_l > 709
    np.testing.assert_allclose(log_l, 2 * math.log(1e155) + 0.5 * math.log(2.0), rtol=1e-9)
    # The exact tiny radius m / (sqrt 2 L) ~ 1e-310 (subnormal), computed from logarithms.
    want = np.exp(np.log(r.margins / math.sqrt(2.0)) - log_l)
    assert np.all(r.radius > 0) and np.all(np.isfinite(r.radius))
    np.testing.assert_allclose(r.radius, want, rtol=1e-6) if method == "product" else None
    assert np.all(r.radius >= want * (1 - 1e-6))
    assert any("log space" in s for s in r.terms["notes"])
    if method == "product":
        return
    curve = adversarial.robustness(overflowing_net(), apply_fn=chain, X=Xp, y=y, eps=[0.0, 0.1],
                                   steps=2, restarts=1, fgsm_too=False, method=method)
    assert list(curve.certified_accuracy) == [1.0, 0.0]


# -- PAC-Bayes ---------------------------------------------------------------------------------


def test_kl_exact_at_q_equals_p_and_negative_beyond_rounding_raises():
    big = {"w": jnp.asarray(RNG.normal(size=(300, 300)))}
    for sp in (0.03, 0.1234567, 3.0):
        q = pacbayes.DiagonalGaussian(big, {"w": jnp.full_like(big["w"], sp)})
        assert pacbayes.diag_gaussian_kl(q, big, sp * sp) == 0.0
    assert clamp_kl(-1e-12, 1e5, 10**5) == 0.0  # within (17 + 8) u 1e5 = 2.8e-10
    assert clamp_kl(0.5, 1.0, 10) == 0.5
    with pytest.raises(ValueError, match="negative beyond the float64 rounding"):
        clamp_kl(-1e-6, 1e5, 10**5)
    with pytest.raises(ValueError, match="NaN"):
        clamp_kl(float("nan"), 1.0, 10)


def test_certifying_the_prior_itself():
    q = q_of(W, 0.1)
    b = pacbayes.risk_certificate(q, X=X, y=Y, apply_fn=f, prior_mean=W, prior_std=0.1,
                                  key=KEY, num_mc_samples=20)
    assert b.terms["kl"] == 0.0 and 0.0 < b.value <= 1.0


def test_prior_scales_the_training_dtype_holds():
    with pytest.raises(ValueError, match=r"prior_stds\[0\] must lie in \(1\.08e-19, 1\.84e\+19\)"):
        pacbayes.perez_ortiz(W, X=X, y=Y, apply_fn=f, key=KEY, prior_stds=[1e30])
    with pytest.raises(ValueError, match=r"prior_std must have a finite, non-zero square"):
        pacbayes.risk_certificate(q_of(W), X=X, y=Y, apply_fn=f, prior_mean=W, prior_std=1e200,
                                  key=KEY, num_mc_samples=5)


def test_large_prior_std_trains_without_overflow():
    q, hist = pacbayes.train_posterior(W, X=X, y=Y, apply_fn=f, n_bound=40, prior_std=1000.0,
                                       key=KEY, epochs=1, batch_size=40)
    std = np.asarray(q.std["w"], np.float64)
    assert np.all(np.isfinite(std)) and np.allclose(std, 1000.0, rtol=1e-2)


def test_diverging_posterior_reported_as_divergence():
    with pytest.raises(ValueError, match=r"train_posterior: the optimisation (diverged|collapsed)"
                                         r".*lr=1e\+30"):
        pacbayes.train_posterior(W, X=X, y=Y, apply_fn=f, n_bound=40, prior_std=0.03, key=KEY,
                                 epochs=2, lr=1e30, batch_size=20)


def test_diverging_prior_reported_as_divergence():
    # SGD at lr = 3e38 overflows float32 weights (lr = 1e30 still leaves a finite, useless
    # prior: that is a valid, if vacuous, prior and no error).
    with pytest.raises(ValueError, match=r"learn_prior: the optimisation diverged.*lr=3e\+38"):
        pacbayes.learn_prior(W, X=X, y=Y, apply_fn=f, key=KEY, epochs=5, lr=3e38,
                             batch_size=10)


def test_posterior_with_nan_named_as_the_posterior():
    bad = {"w": W["w"].at[0, 0].set(jnp.nan), "b": W["b"]}
    with pytest.raises(ValueError, match=r"posterior.mean must be finite"):
        pacbayes.risk_certificate(q_of(bad), X=X, y=Y, apply_fn=f, prior_mean=W,
                                  prior_std=0.1, key=KEY, num_mc_samples=5)


def test_dziugaite_roy_dtype_and_divergence():
    with pytest.raises(ValueError, match=r"dtype must be float32 or float64, got float16"):
        pacbayes.dziugaite_roy(W, X=X, y=Y, apply_fn=f, init_params=W, key=KEY,
                               training=pacbayes.DziugaiteRoyTraining(dtype=jnp.float16))
    with pytest.raises(ValueError, match=r"dziugaite_roy: the optimisation diverged"):
        pacbayes.dziugaite_roy(W, X=X, y=Y, apply_fn=f, init_params=W, key=KEY,
                               training=pacbayes.DziugaiteRoyTraining(steps=20, chunk=10,
                                                                      lr=1e30),
                               certificate=pacbayes.Certificate(num_mc_samples=10))


# -- rank statistics ---------------------------------------------------------------------------


def test_kendall_ranks_infinities_as_ordered_values():
    mu = np.array([1.0, np.inf, 3.0, -np.inf, np.inf])
    gap = np.array([0.2, 0.5, 0.3, 0.0, 0.4])
    finite = np.array([1.0, 1e300, 3.0, -1e300, 1e300])  # the same order, ties alike
    assert measures.kendall_tau(mu, gap) == measures.kendall_tau(finite, gap)
    hp = {"a": [0, 0, 1, 1, 1], "b": [0, 1, 0, 1, 1]}
    g = measures.granulated_kendall(mu, gap, hp)
    g_fin = measures.granulated_kendall(finite, gap, hp)
    assert g.per_axis == g_fin.per_axis and g.num_groups == g_fin.num_groups
    assert any("+inf" in s for s in g.notes) and g_fin.notes == ()


def test_granulated_groups_nan_hyperparameters_together():
    hp = {"lr": np.array([np.nan, np.nan, 1.0, 1.0]), "d": [1, 2, 1, 2]}
    g = measures.granulated_kendall([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 4.0, 3.0], hp)
    assert g.num_groups == {"lr": 2, "d": 2}


# -- networks ----------------------------------------------------------------------------------


def test_trace_names_python_control_flow_and_wrong_width():
    def branchy(p, x):
        z = f(p, x)
        return z if z.sum() > 0 else -z

    with pytest.raises(NotBoundable, match=r"apply_fn could not be traced by jax: .*jnp.where"):
        Network.trace(branchy, W, X)
    with pytest.raises(TypeError, match=r"apply_fn\(params, x\) failed on x of shape \(40, 3\)"):
        Network.trace(f, W, X[:, :3])


@pytest.mark.parametrize("kernel", [np.array([[1, 2], [3, None]], dtype=object),
                                    np.array([["a", "b"], ["c", "d"]]), np.eye(2) * 1j])
def test_kernels_that_are_not_real_numbers(kernel):
    with pytest.raises(TypeError, match=r"params\['Dense_0'\]\['kernel'\] must be a real "
                                        r"numeric array"):
        spectral_norms({"Dense_0": {"kernel": kernel}})


def test_unknown_norm_option_refused_by_name():
    with pytest.raises(TypeError, match="unknown norm option.*'foo'"):
        spectral_norms({"Dense_0": {"kernel": np.eye(2)}}, foo=1)


def test_bootstrap_kendall_checks_its_counts():
    from genbounds.internal import bootstrap_kendall

    with pytest.raises(ValueError, match="num_resamples must be an integer >= 1"):
        bootstrap_kendall([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], {"a": [1, 2, 3]}, num_resamples=0)
