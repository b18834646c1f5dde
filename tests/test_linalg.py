"""Norm kernels (genbounds.linalg) against float64 numpy/scipy references written here.

References: numpy's float64 SVD, closed forms (formulas.md section 11), the Beta law of the
squared first coordinate of a uniform unit vector, and Monte Carlo experiments on the certificate.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genbounds.internal import (
    _certificate_failure,
    _certificate_plan,
    _exact_kernel,
    _gkl_kernel,
    _gram_kernel,
    _log_chebyshev,
    _power_kernel,
    _ritz_host,
    _round_up,
)
from genbounds.linalg import NormResult, frobenius_norm, log_norm_product, norm_21, spectral_norm

METHODS = ("certified", "exact", "lanczos", "power", "gram")
# A loose certificate (few Lanczos steps) so that small test matrices run the Lanczos path
# instead of falling back to the SVD.
LOOSE = dict(rtol=0.05, failure_probability=1e-3)
HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------
# Reference matrices (float64) and the reference norm
# ------------------------------------------------------------------------------------------


def svd64(W) -> float:
    return float(np.linalg.svd(np.asarray(W, np.float64), compute_uv=False)[0])


def orthonormal(rng, m, r):
    q, r_ = np.linalg.qr(rng.standard_normal((m, r)))
    return q * np.sign(np.diag(r_))


def with_singular_values(shape, s, seed):
    """W = U diag(s) V^T with random orthonormal U, V: singular values known exactly."""
    rng = np.random.default_rng(seed)
    m, n = shape
    r = min(m, n)
    return (orthonormal(rng, m, r) * np.asarray(s, np.float64)) @ orthonormal(rng, n, r).T


def spectrum_matrix(kind, shape, seed=0):
    rng = np.random.default_rng(seed)
    r = min(shape)
    if kind == "gaussian":
        return rng.standard_normal(shape)
    if kind == "spiked":  # one large singular value on top of a Gaussian bulk
        W = rng.standard_normal(shape) / math.sqrt(max(shape))
        return W + 10.0 * np.outer(
            rng.standard_normal(shape[0]), rng.standard_normal(shape[1])
        ) / max(shape)
    if kind == "decaying":  # like trained weights: sigma_i = i^-1
        return with_singular_values(shape, 1.0 / np.arange(1, r + 1), seed)
    if kind == "degenerate":  # top two singular values within 1e-4 (relative)
        s = np.concatenate([[1.0, 1.0 - 1e-4], rng.uniform(0.0, 0.99, max(r - 2, 0))])[:r]
        return with_singular_values(shape, s, seed)
    raise ValueError(kind)


SPECTRA = ("gaussian", "spiked", "decaying", "degenerate")
# Few shapes: every new shape compiles the kernels again.
SHAPES = ((60, 40), (40, 60), (1, 17), (17, 1))


# ------------------------------------------------------------------------------------------
# Every method against numpy float64
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SPECTRA)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_method_against_numpy_svd(kind, shape):
    W = spectrum_matrix(kind, shape, seed=1)
    ref = svd64(W)
    q = min(shape)

    ex = spectral_norm(W, method="exact")
    assert ex.method == "exact" and not ex.estimated and ex.failure_probability == 0.0
    assert ex.value == pytest.approx(ref, rel=1e-10)

    for opts in ({}, LOOSE):
        ce = spectral_norm(W, **opts)
        rtol = opts.get("rtol", 1e-3)
        assert ce.value >= ref * (1 - 1e-10)  # sound
        assert ce.value <= ref * (1 + rtol) * (1 + 1e-10)  # slack at most rtol (documented)
        assert not ce.estimated
        k, _ = _certificate_plan(q, opts.get("failure_probability", 1e-6), rtol)
        if k >= q:
            assert ce.method == "exact" and ce.failure_probability == 0.0
        else:
            assert ce.method == "certified-lanczos"
            assert ce.failure_probability == opts["failure_probability"]
            assert ce.lower <= ref * (1 + 1e-10) and ce.lower <= ce.value

    la = spectral_norm(W, method="lanczos")
    assert la.estimated and la.method == "lanczos"
    assert la.value == pytest.approx(ref, rel=1e-6)
    assert la.value <= ref * (1 + 1e-10)  # a Ritz value: from below

    po = spectral_norm(
        W, method="power", tol=1e-9 if kind == "degenerate" else 1e-12, max_iter=20000
    )
    assert po.estimated and po.value <= ref * (1 + 1e-10)
    # The power method on the near-degenerate pair converges to the cluster (gap 1e-4).
    assert po.value == pytest.approx(ref, rel=1e-4 if kind == "degenerate" else 1e-6)

    gr = spectral_norm(W, method="gram")
    assert not gr.estimated and gr.iterations == 10
    assert gr.value >= ref * (1 - 1e-12)
    # Schatten-2^(t+1) norm: at most q^(2^-(t+1)) times sigma_1.
    assert gr.value <= ref * q ** (2.0**-11) * (1 + 1e-12)


@pytest.mark.parametrize("kind", SPECTRA)
def test_certified_lanczos_path_with_default_settings(kind):
    # 300 x 250: the default certificate needs k < 250 steps, so the Lanczos certificate runs.
    W = spectrum_matrix(kind, (300, 250), seed=2)
    ref = svd64(W)
    k, eps = _certificate_plan(250, 1e-6, 1e-3)
    assert k < 250
    res = spectral_norm(W)
    assert res.method == "certified-lanczos" and res.iterations <= k
    assert ref * (1 - 1e-12) <= res.value <= ref * (1 + 1e-3) * (1 + 1e-12)
    assert res.value == pytest.approx(res.lower / math.sqrt(1 - eps), rel=1e-12)
    # The Lanczos estimate is converged after k steps: the slack is essentially 1/sqrt(1-eps).
    assert res.lower == pytest.approx(ref, rel=1e-9)


def test_float32_input():
    W = spectrum_matrix("gaussian", (300, 250), seed=3).astype(np.float32)
    ref = svd64(W)  # the float64 norm of the float32 matrix
    for method in METHODS:
        res = spectral_norm(
            jnp.asarray(W), method=method, max_iter=5000 if method == "power" else None
        )
        assert isinstance(res.value, float)
        if res.vector is not None:
            assert res.vector.dtype == jnp.float32 and res.vector.shape == (250,)
        if method in ("certified", "gram"):
            assert res.value >= ref * (1 - 1e-6)
        else:
            assert res.value == pytest.approx(ref, rel=2e-4 if method == "power" else 1e-5)


def test_low_precision_and_integer_inputs_compute_in_float32():
    W = np.zeros((60, 40), np.int32)
    W[:2, 0] = [3, 4]
    assert spectral_norm(W, method="exact").value == pytest.approx(5.0, rel=1e-12)
    res = spectral_norm(jnp.asarray(W, jnp.float16), method="lanczos")
    assert res.vector.dtype == jnp.float32 and res.value == pytest.approx(5.0, rel=1e-6)


def test_zero_matrix():
    for method in METHODS:
        res = spectral_norm(np.zeros((60, 40)), method=method)
        assert res.value == 0.0


# ------------------------------------------------------------------------------------------
# Oracles (formulas.md section 11)
# ------------------------------------------------------------------------------------------


def oracle_cases():
    # All 60 x 40, so that they share compiled kernels with the other tests.
    rng = np.random.default_rng(4)
    u, v = rng.standard_normal(60), rng.standard_normal(40)
    d = np.zeros((60, 40))
    d[np.arange(40), np.arange(40)] = rng.uniform(-2.0, 2.0, 40)
    d[7, 7] = -3.0
    return [
        ("diag", d, 3.0),
        ("uv^T", np.outer(u, v), np.linalg.norm(u) * np.linalg.norm(v)),
        ("ones", np.ones((60, 40)), math.sqrt(60 * 40)),
        ("identity", np.eye(60, 40), 1.0),
        ("orthogonal", orthonormal(rng, 60, 40), 1.0),  # orthonormal columns
    ]


@pytest.mark.parametrize(
    "name,W,sigma", oracle_cases(), ids=lambda x: x if isinstance(x, str) else ""
)
@pytest.mark.parametrize("method", METHODS)
def test_oracles(name, W, sigma, method):
    opts = {"certified": LOOSE, "power": dict(tol=1e-13, max_iter=20000)}.get(method, {})
    res = spectral_norm(W, method=method, **opts)
    if method == "certified":
        assert sigma * (1 - 1e-12) <= res.value <= sigma * 1.05 * (1 + 1e-12)
    elif method == "gram":
        assert sigma * (1 - 1e-12) <= res.value <= sigma * min(W.shape) ** (2.0**-11) * (1 + 1e-12)
    else:
        assert res.value == pytest.approx(sigma, rel=1e-10)


def test_frobenius_and_21_oracles():
    u, v = np.arange(1.0, 4.0), np.array([2.0, -1.0])
    assert float(frobenius_norm(np.outer(u, v))) == pytest.approx(
        np.linalg.norm(u) * np.linalg.norm(v), rel=1e-12
    )
    assert float(frobenius_norm(np.ones((4, 9)))) == pytest.approx(6.0, rel=1e-12)
    assert float(frobenius_norm(np.eye(7))) == pytest.approx(math.sqrt(7), rel=1e-12)
    assert float(norm_21(np.eye(7))) == pytest.approx(7.0, rel=1e-12)
    q = orthonormal(np.random.default_rng(15), 9, 9)
    assert float(frobenius_norm(q)) == pytest.approx(3.0, rel=1e-12)
    assert float(norm_21(q)) == pytest.approx(9.0, rel=1e-12)


def test_norm_21_sums_over_output_units():
    # Flax kernel (in=2, out=2); columns are the incoming weights of the output units.
    W = np.array([[3.0, 0.0], [4.0, 1.0]])
    assert float(norm_21(W)) == pytest.approx(5.0 + 1.0, rel=1e-12)
    assert float(norm_21(W.T)) == pytest.approx(3.0 + math.sqrt(17.0), rel=1e-12)


@pytest.mark.parametrize("shape", [(30, 20), (1, 5), (5, 1)])
def test_frobenius_and_21_against_numpy(shape):
    W = np.random.default_rng(5).standard_normal(shape)
    assert float(frobenius_norm(W)) == pytest.approx(np.sqrt(np.sum(W**2)), rel=1e-12)
    assert float(norm_21(W)) == pytest.approx(np.sum(np.sqrt(np.sum(W**2, axis=0))), rel=1e-12)


def test_frobenius_does_not_overflow_and_works_under_jit():
    W = np.full((3, 3), 1e200)
    assert float(frobenius_norm(W)) == pytest.approx(3e200, rel=1e-12)
    assert float(norm_21(W)) == pytest.approx(3 * math.sqrt(3) * 1e200, rel=1e-12)
    x = jnp.ones((4, 9))
    assert float(jax.jit(frobenius_norm)(x)) == pytest.approx(6.0, rel=1e-12)
    assert float(jax.jit(norm_21)(x)) == pytest.approx(4 * 9 / 2.0, rel=1e-12)
    frob_conv = frobenius_norm(np.ones((3, 3, 2, 4)))  # any rank: all entries
    assert float(frob_conv) == pytest.approx(math.sqrt(72), rel=1e-12)


def test_log_norm_product():
    big = [1e10] * 200  # the product 1e2000 overflows float64; its log does not
    assert float(log_norm_product(big)) == pytest.approx(200 * math.log(1e10), rel=1e-12)
    small = np.full(300, 1e-10)
    assert float(log_norm_product(small)) == pytest.approx(300 * math.log(1e-10), rel=1e-12)
    mixed = {"a": 2.0, "b": 0.25, "c": 3.0}
    assert float(log_norm_product(mixed)) == pytest.approx(math.log(1.5), rel=1e-12)
    vals = np.random.default_rng(6).uniform(0.1, 10, 150)
    assert float(log_norm_product(list(vals))) == pytest.approx(
        math.fsum(math.log(x) for x in vals), rel=1e-12
    )
    traced = jax.jit(log_norm_product)(jnp.array([math.e, math.e]))
    assert float(traced) == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize(
    "bad,match",
    [
        ([1.0, 0.0], "> 0"),
        ([1.0, -2.0], "> 0"),
        ([1.0, np.nan], "finite"),
        ([np.inf], "finite"),
        ([], "empty"),
        (np.ones((2, 2)), "1-D"),
    ],
)
def test_log_norm_product_rejects(bad, match):
    with pytest.raises(ValueError, match=f"norms.*{match}|{match}.*norms|norms"):
        log_norm_product(bad)


# ------------------------------------------------------------------------------------------
# Hypothesis: homogeneity, soundness over many seeds
# ------------------------------------------------------------------------------------------

HOM_TOL = {"exact": 1e-10, "gram": 1e-10, "certified": 1e-9, "lanczos": 1e-6, "power": 1e-4}


@HYP
@given(
    seed=st.integers(0, 2**31 - 1),
    c=st.floats(1e-3, 1e3).flatmap(lambda x: st.sampled_from([x, -x])),
    shape=st.sampled_from([(60, 40), (40, 60)]),
    method=st.sampled_from(METHODS),
)
def test_homogeneity(seed, c, shape, method):
    W = np.random.default_rng(seed).standard_normal(shape)
    opts = dict(LOOSE) if method == "certified" else {}
    if method == "power":
        opts = dict(tol=1e-10, max_iter=20000)
    a = spectral_norm(W, method=method, key=jax.random.key(seed), **opts).value
    b = spectral_norm(c * W, method=method, key=jax.random.key(seed), **opts).value
    assert b == pytest.approx(abs(c) * a, rel=HOM_TOL[method])


@HYP
@given(
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(SPECTRA),
    shape=st.sampled_from([(60, 40), (40, 60)]),
)
def test_certified_never_below_exact(seed, kind, shape):
    W = spectrum_matrix(kind, shape, seed=seed % 1000)
    ref = svd64(W)
    key = jax.random.key(seed)
    for opts in (LOOSE, dict(rtol=0.2, failure_probability=0.1)):
        res = spectral_norm(W, key=key, **opts)
        assert res.method == "certified-lanczos"
        assert res.value >= ref * (1 - 1e-6)
        assert res.value <= ref * (1 + opts["rtol"]) * (1 + 1e-10)


def test_certified_float32_never_below_exact_many_seeds():
    W = jnp.asarray(spectrum_matrix("degenerate", (300, 250), seed=7), jnp.float32)
    ref = svd64(W)
    for seed in range(20):
        res = spectral_norm(W, key=jax.random.key(seed), **LOOSE)
        assert res.value >= ref * (1 - 1e-6)


# ------------------------------------------------------------------------------------------
# The certificate: Chebyshev growth, the Beta law, the lemma, Monte Carlo, the plan
# ------------------------------------------------------------------------------------------


def test_log_chebyshev_against_numpy():
    for m in (0, 1, 2, 5, 17, 60):
        for x in (1.0 + 1e-6, 1.01, 1.5, 3.0):
            ref = np.polynomial.chebyshev.chebval(x, [0] * m + [1])
            assert _log_chebyshev(m, x) == pytest.approx(math.log(ref), rel=1e-9, abs=1e-12)


def test_betainc_is_the_beta_cdf_and_the_law_of_c1_squared():
    for q in (2, 10, 1000):
        for t in (1e-12, 1e-3, 0.1, 0.9):
            assert scipy.special.betainc(0.5, (q - 1) / 2, t) == pytest.approx(
                scipy.stats.beta.cdf(t, 0.5, (q - 1) / 2), rel=1e-10
            )
    # <b, v1>^2 for b uniform on the sphere (a normalised Gaussian) is Beta(1/2, (q-1)/2).
    q = 12
    g = np.random.default_rng(8).standard_normal((20000, q))
    c1sq = g[:, 3] ** 2 / np.sum(g**2, axis=1)
    assert scipy.stats.kstest(c1sq, scipy.stats.beta(0.5, (q - 1) / 2).cdf).pvalue > 1e-3


@HYP
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 8),
    eps=st.floats(0.01, 0.9),
    q=st.integers(2, 12),
)
def test_the_lemma_behind_the_certificate(seed, k, eps, q):
    # If c1^2 >= tau then the Rayleigh quotient of y = p(S) b is >= (1 - eps) lambda_1, with
    # p = T_{k-1} mapped from [0, (1-eps) lambda_1] to [-1, 1]. Checked directly in numpy.
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.uniform(0, 1, q))[::-1]
    lam[0] = 1.0
    b = rng.standard_normal(q)
    b[0] *= rng.uniform(0, 1) ** 3  # small c1 as well
    b /= np.linalg.norm(b)
    x = 2 * lam / (1 - eps) - 1
    p = np.polynomial.chebyshev.chebval(x, [0] * (k - 1) + [1])
    y = p * b  # coordinates of p(S) b in the eigenbasis
    rq = np.sum(lam * y**2) / np.sum(y**2)
    t = np.polynomial.chebyshev.chebval((1 + eps) / (1 - eps), [0] * (k - 1) + [1])
    tau = (1 - eps) / (eps * t**2 + 1 - eps)
    if b[0] ** 2 >= tau:
        assert rq >= (1 - eps) * lam[0] * (1 - 1e-9)


def _ritz_values(W, k, starts):
    """Top Ritz value after exactly k GKL steps, for each start vector (rows of `starts`)."""
    run = jax.vmap(
        lambda s: _gkl_kernel(
            W,
            s,
            jnp.asarray(0.0),
            jnp.asarray(k),
            kbuf=_round_up(k),
            transpose=False,
            adaptive=False,
        )
    )
    out = run(jnp.asarray(starts))
    al, be, steps = np.asarray(out["alphas"]), np.asarray(out["betas"]), np.asarray(out["steps"])
    return np.array([_ritz_host(al[i], be[i], int(steps[i]))[0] for i in range(len(starts))])


def test_failure_probability_is_exact_for_one_step_on_a_rank_one_matrix():
    # S = diag(1, 0, ..., 0), k = 1: theta_1 = c1^2 and the formula is tight:
    # P(theta_1 < 1 - eps) = I_{1-eps}(1/2, (q-1)/2).
    q, eps, N = 10, 0.6, 4000
    W = jnp.asarray(np.diag([1.0] + [0.0] * (q - 1)))
    starts = np.random.default_rng(9).standard_normal((N, q))
    theta = _ritz_values(W, 1, starts)
    empirical = np.mean(theta < 1 - eps)
    formula = _certificate_failure(1, eps, q)
    assert formula == pytest.approx(scipy.special.betainc(0.5, 4.5, 1 - eps), rel=1e-12)
    se = math.sqrt(formula * (1 - formula) / N)
    assert abs(empirical - formula) <= 4 * se


@pytest.mark.parametrize("k,eps", [(2, 0.3), (3, 0.2), (4, 0.1)])
def test_failure_probability_bounds_monte_carlo_on_adversarial_spectra(k, eps):
    # lambda_1 = 1 and the rest spread evenly over [0, 1 - eps): failures are frequent.
    q, N = 10, 3000
    lam = np.concatenate([[1.0], np.linspace(0.0, 0.999 * (1 - eps), q - 1)])
    W = jnp.asarray(np.diag(np.sqrt(lam)))
    starts = np.random.default_rng(10 + k).standard_normal((N, q))
    theta = _ritz_values(W, k, starts)
    empirical = np.mean(theta < (1 - eps) * lam[0])
    formula = _certificate_failure(k, eps, q)
    assert empirical > 0  # the experiment is not vacuous
    assert empirical <= formula + 4 * math.sqrt(max(formula * (1 - formula), 1e-4) / N)


def test_certified_pipeline_failure_rate_is_below_eta():
    # End to end, on a matrix whose top two singular values nearly coincide, with a large eta.
    W = np.zeros((60, 40))
    W[np.arange(40), np.arange(40)] = np.sqrt([1.0, 0.9, 0.9, 0.8] + [0.5] * 36)
    W = jnp.asarray(W)
    eta = 0.2
    below = sum(
        spectral_norm(W, key=jax.random.key(s), rtol=0.05, failure_probability=eta).value < 1.0
        for s in range(300)
    )
    assert below / 300 <= eta


def test_certificate_plan_is_minimal_and_monotone():
    for q in (30, 250, 4096):
        for eta in (1e-3, 1e-6):
            for rtol in (1e-2, 1e-3):
                k, eps = _certificate_plan(q, eta, rtol)
                eps_t = 1 - (1 + rtol) ** -2
                assert _certificate_failure(k, eps_t, q) <= eta
                assert k == 1 or _certificate_failure(k - 1, eps_t, q) > eta
                assert 0 < eps <= eps_t
                assert _certificate_failure(k, eps, q) <= eta
                assert _certificate_failure(k, eps * (1 - 1e-6), q) > eta
    assert _certificate_plan(4096, 1e-9, 1e-3)[0] > _certificate_plan(4096, 1e-6, 1e-3)[0]
    assert _certificate_plan(4096, 1e-6, 1e-4)[0] > _certificate_plan(4096, 1e-6, 1e-3)[0]


# ------------------------------------------------------------------------------------------
# Vectors, warm starts, convergence warnings
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(60, 40), (40, 60)])
@pytest.mark.parametrize("method", ["lanczos", "power", "certified"])
def test_vector_is_a_right_singular_vector(shape, method):
    W = spectrum_matrix("decaying", shape, seed=11)
    res = spectral_norm(W, method=method, **(LOOSE if method == "certified" else {}))
    v = np.asarray(res.vector)
    assert v.shape == (shape[1],)
    assert np.linalg.norm(v) == pytest.approx(1.0, rel=1e-8)
    assert np.linalg.norm(W @ v) == pytest.approx(svd64(W), rel=1e-6)


def test_warm_start():
    W = spectrum_matrix("gaussian", (60, 40), seed=12)
    cold = spectral_norm(W, method="lanczos")
    warm = spectral_norm(W, method="lanczos", v0=cold.vector)
    assert warm.iterations < cold.iterations
    assert warm.value == pytest.approx(svd64(W), rel=1e-6)
    Wt = W.T  # wide: the start is mapped to the other side internally
    warm_t = spectral_norm(Wt, method="lanczos", v0=spectral_norm(Wt, method="lanczos").vector)
    assert warm_t.value == pytest.approx(svd64(W), rel=1e-6)
    v1 = np.linalg.svd(W)[2][0]
    p = spectral_norm(W, method="power", v0=v1)
    assert p.iterations <= 3 and p.value == pytest.approx(svd64(W), rel=1e-10)


def test_not_converged_warns():
    W = spectrum_matrix("gaussian", (60, 40), seed=13)
    with pytest.warns(RuntimeWarning, match="lanczos did not reach"):
        spectral_norm(W, method="lanczos", max_iter=3)
    with pytest.warns(RuntimeWarning, match="power iteration did not reach"):
        spectral_norm(W, method="power", max_iter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spectral_norm(np.eye(60, 40), method="lanczos", max_iter=300)  # invariant Krylov space


# ------------------------------------------------------------------------------------------
# Bad input, compilation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(W=np.array([[1.0, np.nan]])), ValueError, "W must be finite"),
        (dict(W=np.array([[1.0, np.inf]])), ValueError, "W must be finite"),
        (dict(W=np.ones(3)), ValueError, "W must have rank 2"),
        (dict(W=np.ones((2, 2, 2))), ValueError, "W must have rank 2"),
        (dict(W=np.ones((0, 3))), ValueError, "W must not be empty"),
        (dict(W=np.ones((2, 2), complex)), TypeError, "W must be a real matrix"),
        (dict(W=np.array([["a"]])), TypeError, "W must be a numeric array"),
        (dict(W=None), TypeError, "W must be an array"),
        (dict(method="svd"), ValueError, "method must be one of"),
        (dict(failure_probability=0.0), ValueError, r"failure_probability must lie in \(0, 1\)"),
        (dict(failure_probability=1.0), ValueError, r"failure_probability must lie in \(0, 1\)"),
        (dict(failure_probability=1.5), ValueError, r"failure_probability must lie in \(0, 1\)"),
        (dict(tol=0.0), ValueError, "tol must be a finite number > 0"),
        (dict(tol=-1e-6), ValueError, "tol must be a finite number > 0"),
        (dict(rtol=0.0), ValueError, "rtol must be a finite number > 0"),
        (dict(max_iter=0), ValueError, "max_iter must be an integer >= 1"),
        (dict(gram_iters=0), ValueError, "gram_iters must be an integer >= 1"),
        (dict(key=3), TypeError, "key must be a jax.random key"),
        (dict(v0=np.ones(3)), ValueError, "v0 cannot be used with method='certified'"),
        (dict(method="lanczos", v0=np.ones(4)), ValueError, r"v0 must have shape \(3,\)"),
        (dict(method="power", v0=np.zeros(3)), ValueError, "v0 must be nonzero"),
        (dict(method="power", v0=np.array([1.0, np.nan, 0.0])), ValueError, "v0 must be finite"),
    ],
)
def test_bad_input(kwargs, exc, match):
    kwargs = dict(kwargs)
    W = kwargs.pop("W", np.ones((4, 3)))
    with pytest.raises(exc, match=match):
        spectral_norm(W, **kwargs)


@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_entries_are_caught_by_every_method(method):
    # The iterative methods detect NaN/inf through their first product instead of a separate pass.
    W = spectrum_matrix("gaussian", (60, 40), seed=16)
    for bad in (np.nan, np.inf, -np.inf):
        Wb = W.copy()
        Wb[17, 23] = bad
        with pytest.raises(ValueError, match="W must be finite, got 1 NaN or infinite"):
            spectral_norm(Wb, method=method, **(LOOSE if method == "certified" else {}))
    huge = jnp.asarray(W * 1e37, jnp.float32)  # finite entries, but the products overflow
    if method in ("lanczos", "power", "certified"):
        with pytest.raises(ValueError, match="overflows"):
            spectral_norm(huge, method=method, **(LOOSE if method == "certified" else {}))


@pytest.mark.parametrize("fn", [frobenius_norm, norm_21])
def test_bad_input_other_norms(fn):
    with pytest.raises(ValueError, match="W must be finite"):
        fn(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="W must have rank"):
        fn(np.float64(3.0))
    with pytest.raises(ValueError, match="W must not be empty"):
        fn(np.ones((0, 2)))


def test_no_recompilation_on_second_call():
    rng = np.random.default_rng(14)
    W1, W2 = rng.standard_normal((60, 40)), rng.standard_normal((60, 40))
    kernels = (_gkl_kernel, _exact_kernel, _power_kernel, _gram_kernel)
    opts = dict(LOOSE, gram_iters=3)  # LOOSE: the certificate runs Lanczos, not the SVD
    for method in METHODS:
        spectral_norm(W1, method=method, **opts)
    sizes = [k._cache_size() for k in kernels]
    for method in METHODS:
        spectral_norm(W2, method=method, key=jax.random.key(5), **opts)
    assert [k._cache_size() for k in kernels] == sizes


def test_bucket_sizes():
    from genbounds.internal import bucket

    sizes = [bucket(d) for d in range(1, 5000)]
    for d, b in zip(range(1, 5000), sizes, strict=True):
        assert d <= b < 1.5 * d or b == d  # never below d, less than half above
        assert b <= 4 or b & (b - 1) == 0 or (b // 3) & (b // 3 - 1) == 0  # 2^k or 3 * 2^j
    assert [bucket(d) for d in (600, 768, 769, 784, 1024, 1025, 4096)] == [
        768, 768, 1024, 1024, 1024, 1536, 4096]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("method", ["lanczos", "certified"])
def test_padded_kernel_equals_the_matrix_and_shares_one_compilation(method):
    # (700, 350) and (600, 300) both run in the (768, 384) kernel: one compilation, and the
    # values are those of each matrix (zero padding leaves the Krylov iterates unchanged).
    rng = np.random.default_rng(21)
    opts = dict(LOOSE) if method == "certified" else {}
    A = rng.standard_normal((700, 350))
    first = spectral_norm(A, method=method, **opts)
    size = _gkl_kernel._cache_size()
    for shape in [(600, 300), (300, 600), (650, 380)]:
        W = rng.standard_normal(shape)
        res = spectral_norm(W, method=method, **opts)
        exact = svd64(W)
        if method == "certified":
            assert exact * (1 - 1e-12) <= res.value <= exact * (1 + LOOSE["rtol"]) * (1 + 1e-12)
        else:
            assert res.value == pytest.approx(exact, rel=1e-6)
        v = np.asarray(res.vector)
        assert v.shape == (shape[1],)
        assert np.linalg.norm(W @ v) == pytest.approx(exact, rel=1e-3)
    assert first.value > 0
    # (300, 600) is the transposed orientation: a second kernel, and no more than that.
    assert _gkl_kernel._cache_size() <= size + 1


def test_result_type():
    res = spectral_norm(np.eye(60, 40) * 2.0)
    assert isinstance(res, NormResult)
    assert res._fields == (
        "value",
        "method",
        "estimated",
        "failure_probability",
        "iterations",
        "lower",
        "vector",
    )
    assert type(res.value) is float and type(res.iterations) is int
