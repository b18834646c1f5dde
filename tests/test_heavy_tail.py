"""`genbounds.heavy_tail` (default preset) and its parts against float64 numpy references.

The power-law MLE and KS distance are checked against a direct loop written from Clauset,
Shalizi & Newman (2009), eqs. (3.5) and (3.9); the norm metrics against their definitions; the
exact conv spectrum against the dense matrix of the circular convolution; the bootstrap
interval's coverage on Pareto samples of known exponent.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

import genbounds
from genbounds.spectra import bootstrap_alpha, fit_power_law, mp_fit


def _reference_fit(evals, min_tail):
    """Direct loop: every first-of-its-value candidate with a tail >= min_tail."""
    x = np.sort(evals[evals > 1e-5])
    n = len(x)
    best = (math.inf, None, None)
    for i in range(n - min_tail + 1):
        if i > 0 and x[i] == x[i - 1]:
            continue
        tail = x[i:]
        s = np.sum(np.log(tail / x[i]))
        if s <= 0:
            continue
        a = 1 + len(tail) / s
        F = 1 - (tail / x[i]) ** (1 - a)
        k = np.arange(len(tail))
        D = max(np.max(F - k / len(tail)), np.max((k + 1) / len(tail) - F))
        if D < best[0]:
            best = (D, a, x[i])
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_power_law_fit_matches_direct_loop(seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_t(3.0, size=(150, 90))
    evals = np.linalg.svd(W, compute_uv=False) ** 2
    f = fit_power_law(evals, min_tail=10)
    D, a, xmin = _reference_fit(evals, 10)
    assert f.xmin == xmin
    assert abs(f.alpha - a) <= 1e-10 * a
    assert abs(f.D - D) <= 1e-10
    assert f.tail_size == int(np.sum(evals >= xmin))


def test_power_law_recovers_pareto_exponent():
    rng = np.random.default_rng(3)
    x = (1 - rng.random(3000)) ** (-1 / 1.5)  # density ~ x^-2.5 on [1, inf)
    f = fit_power_law(x)
    assert abs(f.alpha - 2.5) < 0.15


def test_min_tail_and_failure_reported_not_averaged():
    evals = np.r_[np.ones(5), 2.0]  # too few for min_tail = 10
    f = fit_power_law(evals, min_tail=10)
    assert not f.ok and math.isnan(f.alpha) and "min_tail" in f.status
    W = np.random.default_rng(0).standard_normal((40, 20))
    tiny = np.random.default_rng(1).standard_normal((12, 9))
    res = genbounds.heavy_tail({"a": {"kernel": W}, "b": {"kernel": tiny}}, bootstrap=0)
    assert res["b"]["status"].startswith("failed") and math.isnan(res["b"]["alpha"])
    assert res.summary()["alpha"] == res["a"]["alpha"]  # the failed layer is not averaged
    assert res.summary()["num_failed"] == 1
    with pytest.raises(ValueError, match="power-law fit of layer 'b' failed"):
        genbounds.heavy_tail({"a": {"kernel": W}, "b": {"kernel": tiny}}, bootstrap=0,
                             on_failure="raise")


def test_norm_metrics_from_definitions():
    rng = np.random.default_rng(4)
    K = rng.standard_normal((70, 50))
    r = genbounds.heavy_tail([K], bootstrap=0)["0"]
    ev = np.sort(np.linalg.svd(K, compute_uv=False) ** 2)
    np.testing.assert_allclose(r.evals, ev, rtol=1e-12)
    a = r["alpha"]
    assert r["log_norm"] == pytest.approx(np.log10(np.sum(K ** 2)), rel=1e-12)
    assert r["log_spectral_norm"] == pytest.approx(np.log10(ev[-1]), rel=1e-12)
    assert r["alpha_weighted"] == pytest.approx(a * np.log10(ev[-1]), rel=1e-12)
    assert r["log_alpha_norm"] == pytest.approx(np.log10(np.sum(ev ** a)), rel=1e-12)
    assert r["stable_rank"] == pytest.approx(np.sum(ev) / ev[-1], rel=1e-12)
    p = ev / ev.sum() + 1e-10
    assert r["entropy"] == pytest.approx(-np.sum(p * np.log(p)) / np.log(50 + 1e-10), rel=1e-10)
    assert (r["N"], r["M"], r["Q"]) == (70, 50, 1.4)


def test_homogeneity_alpha_is_scale_invariant():
    K = np.random.default_rng(5).standard_t(2.5, size=(120, 80))
    a = genbounds.heavy_tail([K], bootstrap=0)["0"]
    b = genbounds.heavy_tail([3.0 * K], bootstrap=0)["0"]
    assert b["alpha"] == pytest.approx(a["alpha"], rel=1e-9)
    assert b["log_spectral_norm"] == pytest.approx(a["log_spectral_norm"] + 2 * np.log10(3.0))


def test_conv_operator_spectrum_is_the_circular_convolution():
    rng = np.random.default_rng(6)
    K = rng.standard_normal((3, 3, 2, 4))
    n = 6
    res = genbounds.heavy_tail([K], conv_spectrum="operator", conv_input_shape=(n, n),
                               bootstrap=0)
    # dense matrix of the circular convolution x -> y[p] = sum_{a,b} K[a,b]^T x[p + (a,b)]
    T = np.zeros((n * n * 4, n * n * 2))
    for i in range(n):
        for j in range(n):
            for a in range(3):
                for b in range(3):
                    r, c = (i * n + j) * 4, (((i + a) % n) * n + (j + b) % n) * 2
                    T[r:r + 4, c:c + 2] += K[a, b].T
    ev = np.sort(np.linalg.svd(T, compute_uv=False) ** 2)
    np.testing.assert_allclose(res["0"].evals, ev, rtol=1e-9, atol=1e-12)
    assert res["0"]["num_evals"] == n * n * 2
    slices = genbounds.heavy_tail([K], bootstrap=0)["0"]
    assert slices["num_evals"] == 9 * 2


def test_randomize_reproducible_from_key_and_traps():
    W = np.random.default_rng(7).standard_normal((80, 60))
    W[0, 0] = 40.0  # one large entry: a correlation trap survives the shuffle
    k = jax.random.key(3)
    a = genbounds.heavy_tail([W], randomize=True, key=k, bootstrap=0)["0"]
    b = genbounds.heavy_tail([W], randomize=True, key=k, bootstrap=0)["0"]
    assert a["rand_distance"] == b["rand_distance"]
    assert a["num_traps"] >= 1
    clean = genbounds.heavy_tail([W[1:]], randomize=True, key=k, bootstrap=0)["0"]
    assert clean["num_traps"] == 0


def test_mp_fit_on_gaussian_matrix_finds_the_bulk():
    W = np.random.default_rng(8).standard_normal((400, 200))
    ev = np.linalg.svd(W, compute_uv=False) ** 2
    f = mp_fit(ev, Q=2.0, M=200)
    assert f.num_spikes == 0
    # the MP edge for Q = 2 at unit variance: (1 + 1/sqrt 2)^2 in mean-1 units
    assert f.sigma_mp == pytest.approx(1.0, abs=0.1)
    assert f.bulk_max == pytest.approx(ev.mean() * (1 + 2 ** -0.5) ** 2, rel=0.15)


def test_bad_arguments_are_named():
    W = np.ones((20, 10))
    with pytest.raises(ValueError, match="preset"):
        genbounds.heavy_tail([W], preset="ww")
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        genbounds.heavy_tail([W], dtype="float16")
    with pytest.raises(ValueError, match="conv_spectrum"):
        genbounds.heavy_tail([W], conv_spectrum="fft")
    with pytest.raises(ValueError, match="NaN"):
        genbounds.heavy_tail([np.full((20, 10), np.nan)])
    res = genbounds.heavy_tail([np.ones((3, 5, 2, 4))], conv_spectrum="operator")
    assert "conv_input_shape" in res.skipped[0][1]


def test_records_and_pandas_and_layers_of_linen_variables():
    rng = np.random.default_rng(10)
    # Flax linen variables in module-creation order, with biases and BatchNorm statistics
    v = {"params": {"Conv_0": {"kernel": rng.standard_normal((3, 3, 1, 8)),
                               "bias": np.zeros(8)},
                    "BatchNorm_0": {"scale": np.ones(8), "bias": np.zeros(8)},
                    "Dense_0": {"kernel": rng.standard_normal((288, 32)), "bias": np.zeros(32)},
                    "Dense_1": {"kernel": rng.standard_normal((32, 10)), "bias": np.zeros(10)}},
         "batch_stats": {"BatchNorm_0": {"mean": np.zeros(8), "var": np.ones(8)}}}
    res = genbounds.heavy_tail(v, bootstrap=0)
    names = [x.name for x in res.layers]
    assert names == ["Conv_0", "Dense_0", "Dense_1"]
    recs = res.to_records()
    assert recs[0]["layer"] == "Conv_0" and recs[0]["kind"] == "conv"
    pd = pytest.importorskip("pandas")
    df = res.to_pandas()
    assert isinstance(df, pd.DataFrame) and list(df["layer"]) == names
    assert "alpha" in str(res)


def _pareto_coverage(reps, n, alpha, seed):
    rng = np.random.default_rng(seed)
    hits = 0
    for r in range(reps):
        x = (1 - rng.random(n)) ** (-1 / (alpha - 1))
        ci = bootstrap_alpha(x, np.random.default_rng(1000 + r), num_resamples=200,
                             confidence=0.9, min_tail=10)
        hits += ci.low <= alpha <= ci.high
    return hits / reps


def test_bootstrap_interval_coverage_on_pareto_fast():
    # 30 samples of a pure Pareto tail, alpha = 2.5, nominal 90%: the count of hits is
    # Binomial(30, ~0.9); P(<= 21) < 1% for the nominal rate.
    assert _pareto_coverage(30, 300, 2.5, seed=11) >= 22 / 30


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_bootstrap_interval_coverage_on_pareto(alpha):
    # 200 samples: the 99% binomial range around 0.9 is about [0.85, 0.95]
    cov = _pareto_coverage(200, 500, alpha, seed=12)
    assert cov >= 0.84, cov


def test_bootstrap_interval_reported_and_wider_than_sigma():
    W = np.random.default_rng(9).standard_t(2.5, size=(300, 200))
    r = genbounds.heavy_tail([W], key=jax.random.key(1))["0"]
    assert r["alpha_low"] <= r["alpha"] <= r["alpha_high"]
    assert r["alpha_se"] > 0


@pytest.mark.slow  # a whole report; tests/test_report.py checks the names in the default run
def test_report_lists_the_summary_metrics():
    rng = np.random.default_rng(13)
    params = {"Dense_0": {"kernel": rng.standard_normal((12, 40)) / 4},
              "Dense_1": {"kernel": rng.standard_normal((40, 10)) / 6}}
    X = rng.standard_normal((60, 12))

    def f(p, x):
        return np.maximum(x @ p["Dense_0"]["kernel"], 0) @ p["Dense_1"]["kernel"]

    y = np.argmax(f(params, X), axis=1)
    # report's margins run under standard promotion until they are strict-clean
    with jax.numpy_dtype_promotion("standard"):
        rep = genbounds.report(params, X=X, y=y, apply_fn=f)
    ms = {m.name: m for m in rep.measures}
    direct = genbounds.heavy_tail(params, bootstrap=0).summary()
    for k in ("alpha", "alpha_weighted", "log_alpha_norm", "stable_rank"):
        assert ms[f"ht_{k}"].complexity == pytest.approx(direct[k], rel=1e-12)
        assert ms[f"ht_{k}"].value is None


def test_gram_eigenvalues_within_their_stated_error_and_svd_where_unresolved():
    from scipy import linalg

    rng = np.random.default_rng(14)
    W = rng.standard_t(3.0, size=(150, 90))
    ref = np.sort(linalg.svd(W, compute_uv=False) ** 2)
    auto = genbounds.heavy_tail([W], bootstrap=0)["0"]  # default preset: the Gram route
    assert np.max(np.abs(auto.evals - ref)) <= 150 * np.finfo(float).eps * ref[-1]
    svd = genbounds.heavy_tail([W], bootstrap=0, method="svd")["0"]
    np.testing.assert_array_equal(svd.evals, ref)  # LAPACK gesdd, as before
    # a rank-20 matrix: the Gram route cannot resolve its zero eigenvalues, so the SVD runs
    # and the rank columns are the SVD's
    low = rng.standard_normal((100, 20)) @ rng.standard_normal((20, 60))
    a = genbounds.heavy_tail([low], bootstrap=0)["0"]
    b = genbounds.heavy_tail([low], bootstrap=0, method="svd")["0"]
    np.testing.assert_array_equal(a.evals, b.evals)
    assert a["rank_loss"] == b["rank_loss"] == 40 and a["matrix_rank"] == 20


def test_default_randomised_distance_uses_the_first_pooled_shuffle():
    W = np.random.default_rng(15).standard_normal((150, 120))  # 120 components: 1 replica
    r = genbounds.heavy_tail([W], randomize=True, bootstrap=0)["0"]
    assert r["ww_softrank"] == r["max_rand_eval"] / r["lambda_max"]  # fresh = pooled
    small = np.random.default_rng(16).standard_normal((60, 40))  # 40 components: 5 replicas
    s = genbounds.heavy_tail([small], randomize=True, bootstrap=0)["0"]
    assert s.rand_evals.size == 5 * 40
    assert s["ww_softrank"] <= s["max_rand_eval"] / s["lambda_max"]  # fresh is one of them
