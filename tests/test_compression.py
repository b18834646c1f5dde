"""Compression (Occam) bounds of Lotfi et al. (2022): the code length against enumeration and
exact integers, the bound against scipy's root finder in float64, its monotonicity, and the
pipeline's bound on a synthetic task against the quantised network's errors recomputed here."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.special import gammaln

import genbounds
from genbounds import compression as gc
from genbounds import internal

# --- code length ------------------------------------------------------------------------------


def _elias_delta(n: int) -> str:
    """Elias's delta code of n >= 1 as a bit string (Elias 1975), written from its definition."""
    b = bin(n)[3:]  # n without its leading 1
    m = len(b) + 1
    gamma = "0" * (m.bit_length() - 1) + bin(m)[2:]
    return gamma + b


def test_elias_delta_lengths_and_prefix_free():
    codes = {n: _elias_delta(n) for n in range(1, 300)}
    for n, c in codes.items():
        assert gc.elias_delta_bits(n) == len(c)
    words = sorted(codes.values())
    for a, b in itertools.pairwise(words):
        assert not b.startswith(a)


@pytest.mark.parametrize("d,L", [(5, 3), (6, 2), (4, 4)])
def test_code_length_against_enumeration(d, L):
    seqs = list(itertools.product(range(L), repeat=d))
    by_counts: dict[tuple, int] = {}
    for s in seqs:
        c = tuple(np.bincount(s, minlength=L))
        by_counts[c] = by_counts.get(c, 0) + 1
    kraft = 0.0
    for s in seqs:
        code = gc.code_length(np.asarray(s), L, codebook_bits=16)
        c = tuple(np.bincount(s, minlength=L))
        # the index of s among the sequences with its counts, and of the counts among all
        assert code.symbols == math.ceil(math.log2(by_counts[c]))
        assert code.counts == math.ceil(math.log2(len(by_counts)))
        assert code.codebook == 16 * L
        assert code.dimension == len(_elias_delta(d)) and code.levels == len(_elias_delta(L))
        assert code.total == (code.dimension + code.levels + code.codebook + code.counts
                              + code.symbols)
        kraft += 2.0 ** -(code.counts + code.symbols)
    assert kraft <= 1.0  # Kraft: the counts+symbols code is prefix-free for fixed (d, L)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=400), st.integers(1, 1000))
def test_symbol_bits_against_float64_and_entropy(symbols, K):
    s = np.asarray(symbols)
    L = int(s.max()) + 1
    code = gc.code_length(s, L, codebook_bits=32, num_candidates=K)
    counts = np.bincount(s, minlength=L)
    log2_m = (gammaln(len(s) + 1) - gammaln(counts + 1).sum()) / math.log(2)
    assert code.symbols - 1 < log2_m + 1e-9 and log2_m - 1e-9 <= code.symbols
    p = counts[counts > 0] / len(s)
    assert code.arithmetic_symbols == pytest.approx(-(counts[counts > 0] * np.log2(p)).sum() + 2)
    assert code.symbols <= code.arithmetic_symbols + 1e-9
    assert code.hyperparameters == pytest.approx(math.log2(K), rel=1e-12)
    log2_counts = (gammaln(len(s) + L) - gammaln(len(s) + 1) - gammaln(L)) / math.log(2)
    assert abs(code.counts - math.ceil(log2_counts - 1e-9)) <= 1


def test_code_length_refuses_bad_symbols():
    with pytest.raises(ValueError, match="symbols must lie in"):
        gc.code_length(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="codebook_bits"):
        gc.code_length(np.array([0, 1]), 2, codebook_bits=8)
    with pytest.raises(ValueError, match="non-empty 1-D integer"):
        gc.code_length(np.array([0.5]), 2)


# --- the bound --------------------------------------------------------------------------------


def _kl(q, p):
    out = 0.0
    if q > 0:
        out += q * math.log(q / p)
    if q < 1:
        out += (1 - q) * math.log((1 - q) / (1 - p))
    return out


def _occam_ref(e, bits, n, delta):
    rhs = (bits * math.log(2) + math.log(2 * math.sqrt(n) / delta)) / n
    if _kl(e, 1 - 1e-15) <= rhs:
        return 1.0
    return brentq(lambda p: _kl(e, p) - rhs, e + 1e-300 if e < 1 else e, 1 - 1e-15,
                  xtol=1e-15, rtol=1e-14)


@pytest.mark.parametrize("e,bits,n,delta", [(0.08, 1000.0, 20_000, 0.05),
                                            (0.03, 500.0, 1437, 0.05),
                                            (0.0, 300.0, 16_000, 0.01),
                                            (0.2, 5000.0, 32_000, 0.1)])
def test_occam_kl_bound_against_brentq(e, bits, n, delta):
    got = gc.occam_kl_bound(e, bits, n=n, delta=delta)
    assert got == pytest.approx(_occam_ref(e, bits, n, delta), rel=1e-9, abs=1e-12)
    assert got >= e


def test_catoni_against_formula():
    e, bits, n, delta = 0.05, 800.0, 10_000, 0.05
    C = np.asarray(internal.compression_catoni_grid, np.float64)
    want = ((1 - np.exp(-C * e - (bits * math.log(2) + math.log(len(C) / delta)) / n))
            / (1 - np.exp(-C))).min()
    assert gc.catoni_bound(e, bits, n=n, delta=delta) == pytest.approx(want, rel=1e-12)
    # one C: Catoni's Theorem 1.2.6 with ln(1/delta)
    one = gc.catoni_bound(e, bits, n=n, delta=delta, grid=(2.0,))
    assert one == pytest.approx((1 - math.exp(-2 * e - (bits * math.log(2) + math.log(1 / delta))
                                              / n)) / (1 - math.exp(-2)), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 0.5), st.floats(0.0, 5000.0), st.floats(1.0, 3000.0),
       st.integers(8, 100_000), st.floats(1e-4, 0.5))
def test_bound_monotone_in_bits_delta_and_n(e, bits, extra, n, delta):
    for f in (gc.occam_kl_bound, gc.catoni_bound):
        b = f(e, bits, n=n, delta=delta)
        assert f(e, bits + extra, n=n, delta=delta) >= b - 1e-12  # grows with bits
        assert f(e, bits, n=n, delta=delta / 2) >= b - 1e-12  # grows as delta shrinks
        assert f(e, bits, n=2 * n, delta=delta) <= b + 1e-12  # falls as n grows
        assert b >= e - 1e-12


@pytest.mark.parametrize("kw,match", [(dict(delta=1.5), "delta"), (dict(delta=0.0), "delta"),
                                      (dict(n=5), "n must be >= 8"),
                                      (dict(bits=-1.0), "bits"),
                                      (dict(train_error=1.5), "train_error")])
def test_occam_refuses(kw, match):
    args = dict(train_error=0.1, bits=10.0, n=100, delta=0.05) | kw
    with pytest.raises(ValueError, match=match):
        gc.occam_kl_bound(args.pop("train_error"), args.pop("bits"), **args)


# --- the pipeline on a synthetic task ------------------------------------------------------


def _task(m, seed):
    rng = np.random.default_rng(seed)
    W = np.random.default_rng(123).normal(size=(4, 3))
    X = rng.normal(size=(m, 4)).astype(np.float32)
    y = np.argmax(X @ W, axis=1).astype(np.int32)
    return X, y


def _apply(p, x):
    h = jax.nn.relu(x @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]


def _params(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"w1": jax.random.normal(k1, (4, 16), jnp.float32) * 0.5,
            "b1": jnp.zeros(16, jnp.float32),
            "w2": jax.random.normal(k2, (16, 3), jnp.float32) * 0.25,
            "b2": jnp.zeros(3, jnp.float32)}


FAST = gc.CompressionTraining(epochs=15, lr=0.05, batch_size=32, finetune_epochs=3,
                              prior_epochs=10, prior_lr=0.01)


def _errors_numpy(params, X, y):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    logits = np.maximum(X.astype(np.float64) @ p["w1"] + p["b1"], 0) @ p["w2"] + p["b2"]
    srt = np.sort(logits, axis=1)
    # genbounds' convention: margin <= 0 is an error (a tie counts as wrong)
    wrong = logits[np.arange(len(y)), y] <= np.where(
        np.argmax(logits, 1) == y, srt[:, -2], srt[:, -1])
    return float(wrong.mean())


@pytest.fixture(scope="module")
def independent():
    X, y = _task(600, 0)
    Xt, yt = _task(5000, 1)
    params = _params()
    b, q = genbounds.compression_bound(params, apply_fn=_apply, X=X, y=y, key=jax.random.key(3),
                                       dim=12, levels=4, X_test=Xt, y_test=yt, training=FAST,
                                       return_params=True)
    return X, y, Xt, yt, params, b, q


def test_bound_holds_and_is_about_the_quantised_network(independent):
    X, y, Xt, yt, params, b, q = independent
    t = b.terms
    assert b.name == "compression" and b.n == 600 and t["n_prior"] == 0
    # the error bounded is the returned network's, recomputed here in float64 numpy
    assert t["train_error"] == pytest.approx(_errors_numpy(q, X, y), abs=1.5 / 600)
    assert t["test_error"] == pytest.approx(_errors_numpy(q, Xt, yt), abs=2.5 / 5000)
    assert b.value >= t["test_error"]
    assert b.value == pytest.approx(gc.occam_kl_bound(t["train_error"], t["bits"], n=600))
    assert b.value < 1.0
    # the returned network is theta_0 + P c_s: recover q by least squares through the projector
    flat = lambda tree: np.concatenate([np.ravel(np.asarray(tree[k], np.float64))  # noqa: E731
                                        for k in sorted(tree)])
    P = gc.make_projector(t["num_params"], 12, seed=t["projector_seed"], kind=t["projector"])
    z = np.linalg.lstsq(np.asarray(P.matrix, np.float64), flat(q) - flat(params), rcond=None)[0]
    centroids = np.asarray(t["centroids"])
    assert len(centroids) == t["levels_used"] <= 4
    assert np.all(np.isin(centroids.astype(np.float16).astype(np.float64), centroids))
    nearest = centroids[np.argmin(np.abs(z[:, None] - centroids[None]), axis=1)]
    np.testing.assert_allclose(z, nearest, atol=1e-4)
    # code length: parts add up; bits ln 2 is the KL
    parts = ("dimension", "levels", "codebook", "counts", "symbols", "hyperparameters")
    assert t["bits"] == pytest.approx(sum(t[f"bits_{p}"] for p in parts))
    assert t["kl_nats"] == pytest.approx(t["bits"] * math.log(2))
    assert t["bits_codebook"] == 16 * t["levels_used"]
    json.dumps(b.to_dict())  # plain values throughout


def test_data_dependent_bound_uses_the_rest_only():
    X, y = _task(600, 0)
    Xt, yt = _task(3000, 1)
    b = genbounds.compression_bound(_params(), apply_fn=_apply, X=X, y=y, key=jax.random.key(4),
                                    dim=6, levels=3, X_test=Xt, y_test=yt, prior_fraction=0.5,
                                    training=FAST)
    assert b.n == b.terms["n_bound"] == 300 and b.terms["n_prior"] == 300
    assert b.value == pytest.approx(gc.occam_kl_bound(b.terms["train_error"], b.terms["bits"],
                                                      n=300))
    assert b.value >= b.terms["test_error"]


@pytest.mark.parametrize("kw,match", [
    (dict(delta=1.0), "delta"), (dict(delta=-0.1), "delta"), (dict(levels=1), "levels"),
    (dict(dim=0), "dim"), (dict(dim=10_000), "dim must be at most"),
    (dict(prior_fraction=1.0), "prior_fraction"), (dict(num_candidates=0), "num_candidates"),
    (dict(codebook_bits=8), "codebook_bits"), (dict(training="fast"), "training"),
    (dict(training=gc.CompressionTraining(lr=float("nan"))), "training.lr"),
    (dict(training=gc.CompressionTraining(projector="fft")), "training.projector"),
    (dict(training=gc.CompressionTraining(schedule="linear")), "training.schedule"),
    (dict(training=gc.CompressionTraining(compensate="yes")), "training.compensate"),
    (dict(training=gc.CompressionTraining(fisher_damping=0.0)), "training.fisher_damping"),
    (dict(training=gc.CompressionTraining(fisher_examples=0)), "training.fisher_examples"),
])
def test_compression_bound_refuses(kw, match):
    X, y = _task(50, 0)
    args = dict(apply_fn=_apply, X=X, y=y, key=jax.random.key(0), dim=4) | kw
    with pytest.raises((ValueError, TypeError), match=match):
        genbounds.compression_bound(_params(), **args)


def test_compression_bound_refuses_nan_params():
    X, y = _task(50, 0)
    p = _params()
    p["b1"] = p["b1"].at[0].set(jnp.nan)
    with pytest.raises(ValueError, match="params"):
        genbounds.compression_bound(p, apply_fn=_apply, X=X, y=y, key=jax.random.key(0), dim=4)


def test_sparse_projector_norm_and_determinism():
    P = gc.make_projector(5000, 50, seed=7, kind="sparse", nnz=4)
    z = jax.random.normal(jax.random.key(1), (50,), jnp.float32)
    a, b = P(z), gc.make_projector(5000, 50, seed=7, kind="sparse", nnz=4)(z)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    dense = np.zeros((5000, 50))
    np.add.at(dense, (np.repeat(np.arange(5000), 4), np.asarray(P.index).ravel()),
              np.asarray(P.weight, np.float64).ravel())
    np.testing.assert_allclose(np.asarray(a), dense @ np.asarray(z, np.float64), rtol=1e-5,
                               atol=1e-6)
    # E||P z||^2 = ||z||^2: columns of unit norm on average
    assert np.mean((dense ** 2).sum(0)) == pytest.approx(1.0, rel=0.05)


def test_cosine_schedule_against_adam_by_hand():
    # Adam (Kingma & Ba 2015) written out in float64 with the learning rate
    # lr (1 + cos(pi t / S)) / 2 at step t (Loshchilov & Hutter 2017), 0 from step S on
    lr, S, b1, b2, eps = 0.1, 5, 0.9, 0.999, 1e-8
    tx = internal.compression_optimiser(("adam", lr, S))
    g = np.array([0.3, -1.0, 2.0])
    x = jnp.zeros(3, jnp.float32)
    state = tx.init(x)
    m = v = np.zeros(3)
    ref = np.zeros(3)
    for t in range(S + 2):
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction: float ** int
            u, state = tx.update(jnp.asarray(g, jnp.float32), state, x)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        step = lr * (1 + math.cos(math.pi * min(t, S) / S)) / 2
        ref = -step * (m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps)
        np.testing.assert_allclose(np.asarray(u, np.float64), ref, rtol=1e-5, atol=1e-9)
    assert np.all(ref == 0.0)  # past S steps the learning rate is 0


def test_kmeans_against_numpy_lloyd():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(-2, 0.1, 50), rng.normal(0, 0.1, 30), rng.normal(3, 0.1, 20)])
    c, s = gc.kmeans_1d(jnp.asarray(z, jnp.float64), 3)
    np.testing.assert_allclose(np.sort(np.asarray(c)),
                               [z[:50].mean(), z[50:80].mean(), z[80:].mean()], rtol=1e-10)
    assert np.bincount(np.asarray(s)).tolist() == [50, 30, 20]


# --- the reproduce target ------------------------------------------------------------------


@pytest.mark.slow
def test_reproduce_compression_writes_results_and_plot(tmp_path):
    from genbounds.experiments import reproduce_compression

    rec = reproduce_compression("digits", tmp_path / "c", seed=0, verbose=False, dims=(16,),
                                dims_dependent=(8,), epochs=2, finetune_epochs=1,
                                prior_epochs=2)
    saved = json.loads((tmp_path / "c" / "results.json").read_text())
    assert (tmp_path / "c" / "bound_vs_dim.png").stat().st_size > 0
    assert [r["kind"] for r in saved["runs"]] == ["data-independent", "data-dependent"]
    for r in saved["runs"]:
        assert r["bound"] >= r["quantised_test_error"] and r["bound"] >= r["quantised_train_error"]
        assert r["bits"] == pytest.approx(sum(r["code_length_parts"].values()))
        assert r["seconds"] > 0
    assert saved["runs"][0]["n_bound"] == rec["m"] and saved["runs"][1]["n_bound"] < rec["m"]


def test_reproduce_compression_is_wired(monkeypatch, tmp_path, capsys):
    import genbounds.experiments as ex
    from genbounds.experiments import main

    seen = {}

    def fake(dataset, out, *, seed, download):
        seen.update(dataset=dataset, seed=seed)
        (out / "results.json").write_text("{}")
        (out / "summary.md").write_text("")
        return {}

    monkeypatch.setattr(ex, "reproduce_compression", fake)
    assert main(["reproduce", "compression", "--dataset", "mnist1d", "--out",
                 str(tmp_path / "c")]) == 0
    assert seen == {"dataset": "mnist1d", "seed": 0}
    # a data set the target does not have is refused, named
    assert main(["reproduce", "compression", "--dataset", "mnist", "--out",
                 str(tmp_path / "x")]) == 2
    assert "digits, mnist1d or synthetic" in capsys.readouterr().err


# --- error-compensating rounding --------------------------------------------------------------


def test_compensate_two_coordinates_closed_form():
    # H's larger diagonal entry (coordinate 1) is rounded first; coordinate 0 then moves to the
    # minimiser of the quadratic model given q_1: z_0 + (z_1 - q_1) H_01 / H_00
    H = np.array([[2.0, 0.8], [0.8, 3.0]])
    c = np.array([-1.0, 0.0, 1.0])
    for z, expected in (([0.3, 0.45], [0.0, 0.0]),   # 0.3 + 0.45 * 0.4 = 0.48 -> 0
                        ([0.4, 0.45], [1.0, 0.0]),   # 0.4 + 0.18 = 0.58 -> 1 (nearest: 0)
                        ([0.6, 0.7], [0.0, 1.0]),    # 0.6 - 0.3 * 0.4 = 0.48 -> 0 (nearest: 1)
                        ([-0.55, -0.2], [-1.0, 0.0])):  # -0.55 - 0.08 -> -1
        z0 = z[0] + (z[1] - expected[1]) * 0.8 / 2.0
        assert expected[0] == c[np.argmin(np.abs(c - z0))]
        assert gc.compensate(np.array(z), c, H, damping=1e-12).tolist() == expected


def test_compensate_diagonal_is_nearest_and_not_worse_on_the_quadratic():
    rng = np.random.default_rng(0)
    c = np.array([-1.0, -0.3, 0.2, 1.1])
    z = rng.normal(size=40)
    nearest = c[np.argmin(np.abs(z[:, None] - c[None]), axis=1)]
    assert np.array_equal(gc.compensate(z, c, np.diag(rng.uniform(1, 2, 40))), nearest)
    A = rng.normal(size=(40, 40))
    H = A @ A.T / 40 + 0.05 * np.eye(40)
    out = gc.compensate(z, c, H, damping=1e-9)
    assert np.all(np.isin(out, c))
    quad = lambda w: (w - z) @ H @ (w - z)  # noqa: E731
    assert quad(out) <= quad(nearest)
    with pytest.raises(ValueError, match="H must be"):
        gc.compensate(z, c, H[:3, :3])


def test_fisher_z_against_per_example_gradients_by_hand():
    X, y = _task(20, 0)
    params = _params()
    unravel = internal.Unravel(params, jnp.float32)
    theta = internal.flatten_params(params, jnp.float32)
    P = gc.make_projector(int(theta.size), 5, seed=2, kind="dense")
    z = jnp.asarray(np.random.default_rng(1).normal(size=5), jnp.float32)
    H = internal.compression_fisher_z(_apply, unravel, P, theta, z, X, y, chunk=7)
    Pm = np.asarray(P.matrix, np.float64)
    G = []
    for i in range(20):
        def loss(t, i=i):
            logits = _apply(unravel(t), jnp.asarray(X[i:i + 1]))
            return -jax.nn.log_softmax(logits)[0, y[i]]
        G.append(Pm.T @ np.asarray(jax.grad(loss)(theta + P(z)), np.float64))
    G = np.array(G)
    np.testing.assert_allclose(H, G.T @ G / 20, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("compensate", [True, False])
def test_compensated_or_not_the_bound_is_on_the_returned_network(compensate):
    X, y = _task(400, 0)
    Xt, yt = _task(2000, 1)
    training = dataclasses.replace(FAST, finetune_epochs=0, compensate=compensate)
    b, q = genbounds.compression_bound(_params(), apply_fn=_apply, X=X, y=y,
                                       key=jax.random.key(5), dim=10, levels=3, X_test=Xt,
                                       y_test=yt, training=training, return_params=True)
    assert b.terms["compensated"] is compensate
    assert any(("error-compensating" if compensate else "nearest-centroid") in n for n in b.notes)
    assert b.terms["train_error"] == pytest.approx(_errors_numpy(q, X, y), abs=1.5 / 400)
    assert b.value >= b.terms["test_error"]
