"""Tests of the Monte-Carlo Rademacher estimate (genbounds.measures.rademacher and its hypothesis classes).

References are float64 numpy written from the definitions (formulas.md §2.1, §2.3, §2.4): exact
enumeration over all 2^n sign vectors, the Jensen bound, the oracle values of §11. The sharded
(two forced CPU devices) and two-process runs happen in subprocesses (tests/_distributed_worker.py)
started together at the beginning of this module, so they overlap with the in-process tests.
"""

from __future__ import annotations

import doctest
import inspect
import itertools
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _distributed_worker as worker
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import promoting  # the float32 models below are fitted to float64 data

from genbounds.internal import project_to_ball as _project
from genbounds.internal import rademacher_batched as _batched
from genbounds.internal import rademacher_single as _single
from genbounds.measures import (
    KernelBall,
    LinearBall,
    NetworkClass,
    RademacherEstimate,
    rademacher,
    rademacher_signs,
)

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_distributed_worker.py")
ORACLE_X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
WORKER_TIMEOUT_S = 300


# --------------------------------------------------------------------------------------------
# float64 numpy references
# --------------------------------------------------------------------------------------------


def _all_signs(n):
    return np.array(list(itertools.product((-1.0, 1.0), repeat=n)))


def _dual(v, norm):
    """Dual norm of each row of v for the ball's norm."""
    if norm == "l2":
        return np.sqrt(np.sum(v * v, axis=-1))
    if norm == "l1":
        return np.max(np.abs(v), axis=-1)
    return np.sum(np.abs(v), axis=-1)  # linf ball -> l1 dual


def _linear_sup(X, S, B, norm):
    """sup over the ball of (1/n) Σ σ_i <w, x_i>, per row σ of S (Hölder, attained)."""
    return B * _dual(S @ X, norm) / X.shape[0]


def _exact_linear(X, B, norm):
    return float(np.mean(_linear_sup(X, _all_signs(X.shape[0]), B, norm)))


def _rbf_gram(X, s):
    d2 = np.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
    return np.exp(-d2 / (2 * s * s))


def _kernel_sup(K, S, B):
    q = np.einsum("ki,ij,kj->k", S, K, S)
    return B * np.sqrt(np.maximum(q, 0.0)) / K.shape[0]


# --------------------------------------------------------------------------------------------
# Subprocesses: started once, early, run alongside the in-process tests
# --------------------------------------------------------------------------------------------


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Workers:
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        env["JAX_PLATFORMS"] = "cpu"
        env.pop("XLA_FLAGS", None)
        self.procs = {}
        out = Path(self.dir.name)

        def start(name, *args):
            path = out / f"{name}.npz"
            log = open(out / f"{name}.log", "w")
            cmd = [sys.executable, str(WORKER), args[0], str(path), *map(str, args[1:])]
            p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            self.procs[name] = (p, path, log)

        start("sharded", "sharded")
        port = _free_port()
        for pid in range(2):
            start(f"process{pid}", "distributed", port, pid, 2)
        self.started = time.monotonic()

    def result(self, name):
        p, path, log = self.procs[name]
        left = max(1.0, WORKER_TIMEOUT_S - (time.monotonic() - self.started))
        try:
            rc = p.wait(timeout=left)
        except subprocess.TimeoutExpired:
            self.close()
            pytest.fail(f"worker {name} did not finish within {WORKER_TIMEOUT_S} s (hang?)")
        log.flush()
        text = Path(log.name).read_text()
        assert rc == 0, f"worker {name} exited with {rc}:\n{text[-4000:]}"
        with np.load(path) as d:
            return {k: d[k] for k in d.files}

    def close(self):
        for p, _, log in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
        self.dir.cleanup()


@pytest.fixture(scope="module")
def workers():
    w = _Workers()
    yield w
    w.close()


@pytest.fixture(scope="module", autouse=True)
def _start_workers_early(request):
    """Starts the subprocesses before the first test when a selected test needs them."""
    if any("workers" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("workers")


@pytest.fixture(scope="module")
def reference():
    """This process's own (one device, one process) draws of the worker problems."""
    plan = {"linear_l2": ("loop", "vmap"), "kernel_rbf": ("vmap",), "network": ("loop", "vmap")}
    return worker.compute(plan)


# --------------------------------------------------------------------------------------------
# Closed forms against enumeration
# --------------------------------------------------------------------------------------------


def test_enumeration_reference_reproduces_formulas_oracles():
    # formulas.md §2.3/§11: 0.5690355937 (l2), 0.5 (l1), Jensen 0.6666667.
    assert _exact_linear(ORACLE_X, 1.0, "l2") == pytest.approx(0.5690355937, abs=1e-10)
    assert _exact_linear(ORACLE_X, 1.0, "l1") == pytest.approx(0.5, abs=1e-15)
    jensen = math.sqrt(np.sum(ORACLE_X**2)) / 3
    assert jensen == pytest.approx(0.6666667, abs=1e-7)


@pytest.mark.parametrize("norm, exact", [("l2", 0.5690355937), ("l1", 0.5)])
def test_oracle_within_four_standard_errors(norm, exact):
    est = rademacher(LinearBall(1.0, norm=norm), ORACLE_X, num_draws=2000, key=jax.random.key(3))
    assert abs(float(est.value) - exact) <= 4 * float(est.stderr)
    assert float(est.stderr) < 0.01
    lo, hi = est.interval
    assert float(lo) <= exact <= float(hi)
    assert est.num_draws == 2000 and est.n == 3 and not est.lower_estimate and est.estimated


@pytest.mark.parametrize("norm", ["l2", "l1", "linf"])
def test_each_draw_equals_numpy_supremum_for_its_signs(norm):
    X = np.random.default_rng(1).normal(size=(7, 3))
    key = jax.random.key(11)
    est = rademacher(LinearBall(0.7, norm=norm), X, num_draws=64, key=key, strategy="vmap")
    S = np.asarray(rademacher_signs(key, 7, 64))
    assert set(np.unique(S)) == {-1.0, 1.0}
    np.testing.assert_allclose(np.asarray(est.draws), _linear_sup(X, S, 0.7, norm), rtol=1e-12)
    np.testing.assert_allclose(float(est.value), np.mean(_linear_sup(X, S, 0.7, norm)), rtol=1e-12)
    np.testing.assert_allclose(
        float(est.stderr), np.std(_linear_sup(X, S, 0.7, norm), ddof=1) / 8, rtol=1e-10
    )


@pytest.mark.parametrize("seed, n, d", [(0, 6, 3), (1, 9, 5), (2, 12, 2)])
@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_random_data_against_enumeration_and_jensen(seed, n, d, norm):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.2, 2.0, size=(n, 1))
    B = 1.3
    exact = _exact_linear(X, B, norm)
    est = rademacher(LinearBall(B, norm=norm), X, num_draws=2000, key=jax.random.key(seed))
    assert abs(float(est.value) - exact) <= 4 * float(est.stderr)
    if norm == "l2":
        # Jensen: E||X^T σ|| <= sqrt(E||X^T σ||^2) = sqrt(Σ||x_i||^2) (formulas.md §2.3).
        jensen = B * math.sqrt(np.sum(X**2)) / n
        assert exact <= jensen
        assert float(est.value) <= jensen + 4 * float(est.stderr)
    else:
        # Massart (formulas.md §2.3): B max_i ||x_i||_inf sqrt(2 ln(2d) / n).
        assert exact <= B * np.max(np.abs(X)) * math.sqrt(2 * math.log(2 * d) / n)


def test_kernel_ball_linear_kernel_is_the_l2_linear_ball():
    X = np.random.default_rng(4).normal(size=(7, 3))
    key = jax.random.key(5)
    a = rademacher(KernelBall(2.0, kernel="linear"), X, num_draws=64, key=key, strategy="vmap")
    b = rademacher(LinearBall(2.0, norm="l2"), X, num_draws=64, key=key, strategy="vmap")
    np.testing.assert_allclose(np.asarray(a.draws), np.asarray(b.draws), rtol=1e-12)
    assert a.deviation_scale == pytest.approx(b.deviation_scale, rel=1e-14)


def test_kernel_ball_rbf_against_enumeration_and_callable_kernel():
    X = np.random.default_rng(6).normal(size=(8, 2))
    K = _rbf_gram(X, 0.8)
    exact = float(np.mean(_kernel_sup(K, _all_signs(8), 1.5)))
    key = jax.random.key(9)
    est = rademacher(KernelBall(1.5, kernel="rbf", bandwidth=0.8), X, num_draws=2000, key=key)
    assert abs(float(est.value) - exact) <= 4 * float(est.stderr)
    S = np.asarray(rademacher_signs(key, 8, 2000))
    np.testing.assert_allclose(np.asarray(est.draws), _kernel_sup(K, S, 1.5), rtol=1e-12)
    # The same kernel as a callable on two points.
    rbf = KernelBall(1.5, kernel=lambda a, b: jnp.exp(-jnp.sum((a - b) ** 2) / (2 * 0.8**2)))
    est2 = rademacher(rbf, X, num_draws=2000, key=key)
    np.testing.assert_allclose(np.asarray(est2.draws), np.asarray(est.draws), rtol=1e-12)
    assert est.deviation_scale == pytest.approx(1.5 * math.sqrt(8) / 8, rel=1e-14)  # k(x,x) = 1


# --------------------------------------------------------------------------------------------
# The McDiarmid interval: constant and coverage
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hyp, reach",
    [
        (LinearBall(1.4, norm="l2"), lambda X: 1.4 * np.linalg.norm(X, axis=1)),
        (LinearBall(1.4, norm="l1"), lambda X: 1.4 * np.max(np.abs(X), axis=1)),
        (LinearBall(1.4, norm="linf"), lambda X: 1.4 * np.sum(np.abs(X), axis=1)),
        (KernelBall(0.9, kernel="rbf", bandwidth=0.5), lambda X: np.full(len(X), 0.9)),
    ],
    ids=["l2", "l1", "linf", "rbf"],
)
def test_bounded_differences_and_mcdiarmid_constant(hyp, reach):
    n = 7
    X = np.random.default_rng(12).normal(size=(n, 3))
    b = reach(X)
    np.testing.assert_allclose(hyp.value_bounds(X), b, rtol=1e-14)
    # Flipping σ_i moves the per-draw supremum by at most 2 b_i / n, checked over all 2^n σ.
    S = _all_signs(n)
    if isinstance(hyp, LinearBall):
        sup = lambda S: _linear_sup(X, S, hyp.radius, hyp.norm)  # noqa: E731
    else:
        sup = lambda S: _kernel_sup(_rbf_gram(X, 0.5), S, hyp.radius)  # noqa: E731
    base = sup(S)
    for i in range(n):
        flipped = S.copy()
        flipped[:, i] *= -1
        assert np.max(np.abs(sup(flipped) - base)) <= 2 * b[i] / n + 1e-12
    # The interval: sqrt(Σ b_i²)/n · sqrt(2 ln(2/δ')/K) <= Bmax sqrt(2 ln(2/δ')/(nK)).
    K, conf = 64, 0.9
    est = rademacher(hyp, X, num_draws=K, key=jax.random.key(0), confidence=conf)
    half = math.sqrt(np.sum(b**2)) / n * math.sqrt(2 * math.log(2 / 0.1) / K)
    assert est.concentration == "mcdiarmid"
    assert est.halfwidth() == pytest.approx(half, rel=1e-12)
    assert half <= np.max(b) * math.sqrt(2 * math.log(2 / 0.1) / (n * K)) * (1 + 1e-12)
    lo, hi = (float(v) for v in est.interval)
    assert hi - float(est.value) == pytest.approx(half, rel=1e-12)
    assert float(est.value) - lo == pytest.approx(half, rel=1e-12)
    one_sided = math.sqrt(np.sum(b**2)) / n * math.sqrt(2 * math.log(1 / 0.05) / K)
    assert est.upper(0.95) == pytest.approx(float(est.value) + one_sided, rel=1e-12)
    assert est.halfwidth(0.99) > est.halfwidth(0.95)


def test_mcdiarmid_interval_covers_the_exact_value():
    X = np.random.default_rng(21).normal(size=(6, 2))
    exact = _exact_linear(X, 1.0, "l2")
    H = LinearBall(1.0, norm="l2")
    runs, two_sided, one_sided = 200, 0, 0
    for seed in range(runs):
        est = rademacher(H, X, num_draws=8, key=jax.random.key(seed), strategy="vmap")
        lo, hi = (float(v) for v in est.interval)
        two_sided += lo <= exact <= hi
        one_sided += exact <= est.upper(0.95)
    # Each run fails with probability <= 0.05 (McDiarmid; in fact far less, it is conservative).
    assert two_sided >= 0.95 * runs and one_sided >= 0.95 * runs


# --------------------------------------------------------------------------------------------
# Strategies, determinism, compilation
# --------------------------------------------------------------------------------------------


def test_strategies_agree_and_same_chunk_is_bitwise(reference):
    _, H, X = worker.problems()[0]  # LinearBall(1.5) on 11 points, as in `reference`
    key = jax.random.key(7)
    run = lambda **kw: np.asarray(rademacher(H, X, num_draws=10, key=key, **kw).draws)  # noqa: E731
    loop = run(strategy="loop")
    v3 = run(strategy="vmap", chunk_size=3)
    np.testing.assert_array_equal(loop, reference["linear_l2/loop"])
    np.testing.assert_array_equal(v3, reference["linear_l2/vmap"])
    v10 = run(strategy="vmap")
    s3 = run(strategy="sharded", chunk_size=3)  # a mesh of this process's single device
    np.testing.assert_array_equal(s3, v3)
    np.testing.assert_allclose(v3, loop, rtol=1e-13)
    np.testing.assert_allclose(v10, loop, rtol=1e-13)
    S = np.asarray(rademacher_signs(key, 11, 10))
    np.testing.assert_allclose(loop, _linear_sup(X, S, 1.5, "l2"), rtol=1e-12)
    # A raw PRNGKey holding the same bits gives the same draws.
    raw = np.asarray(
        rademacher(H, X, num_draws=10, key=jax.random.PRNGKey(7), strategy="loop").draws
    )
    np.testing.assert_array_equal(raw, loop)


def test_auto_strategy_per_backend():
    X = ORACLE_X
    est = rademacher(LinearBall(1.0), X, num_draws=4, key=jax.random.key(0))
    if jax.default_backend() == "cpu" and jax.local_device_count() == 1:
        assert est.strategy == "vmap" and est.chunk_size == 4
    assert (
        rademacher(
            LinearBall(1.0), X, num_draws=4, key=jax.random.key(0), strategy="loop"
        ).chunk_size
        is None
    )


def test_second_call_does_not_recompile():
    X = np.random.default_rng(3).normal(size=(9, 2))
    H = LinearBall(2.0, norm="l1")
    for strategy, fn in (("loop", _single), ("vmap", _batched)):
        rademacher(H, X, num_draws=6, key=jax.random.key(0), strategy=strategy, chunk_size=2)
        size = fn._cache_size()
        rademacher(H, X + 1.0, num_draws=6, key=jax.random.key(1), strategy=strategy, chunk_size=2)
        rademacher(
            LinearBall(2.0, norm="l1"),
            X,
            num_draws=6,
            key=jax.random.key(2),
            strategy=strategy,
            chunk_size=2,
        )
        assert fn._cache_size() == size


def test_result_is_a_pytree_and_prints():
    est = rademacher(LinearBall(1.0), ORACLE_X, num_draws=4, key=jax.random.key(0))
    assert isinstance(est, RademacherEstimate)
    leaves = jax.tree.leaves(est)
    assert len(leaves) == 5  # value, stderr, draws, interval lo, interval hi
    doubled = jax.jit(lambda e: jax.tree.map(lambda x: 2 * x, e))(est)
    assert float(doubled.value) == pytest.approx(2 * float(est.value))
    assert doubled.strategy == est.strategy and doubled.num_draws == 4
    d = est.to_dict()
    assert isinstance(d["value"], float) and len(d["draws"]) == 4 and d["estimated"] is True
    assert "rademacher = " in str(est) and "mcdiarmid" in str(est)


def test_docstring_examples():
    # The modules that define the estimate and the hypothesis classes, whatever their file names.
    for module in (inspect.getmodule(rademacher), inspect.getmodule(LinearBall)):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0


# --------------------------------------------------------------------------------------------
# The network class
# --------------------------------------------------------------------------------------------


class _WideMLP(nn.Module):
    width: int = 256

    @nn.compact

    @promoting
    def __call__(self, x):
        return nn.Dense(1)(nn.relu(nn.Dense(self.width)(x)))


@pytest.fixture(scope="module")
def signs_data():
    return np.random.default_rng(30).normal(size=(24, 5))


@pytest.fixture(scope="module")
def unconstrained(signs_data):
    H = NetworkClass(_WideMLP(), steps=200)
    return rademacher(H, signs_data, num_draws=4, key=jax.random.key(1))


def test_unconstrained_wide_mlp_fits_random_signs(unconstrained):
    # Zhang et al. 2017: a wide network fits random labels, so the (lower) estimate is ≈ 1.
    est = unconstrained
    assert est.strategy == "loop" or jax.default_backend() != "cpu"
    assert np.all(np.asarray(est.draws) >= 0.9) and float(est.value) >= 0.95
    assert np.all(np.asarray(est.draws) <= 1.0)
    assert est.lower_estimate and est.concentration == "hoeffding" and est.deviation_scale == 1.0
    assert est.halfwidth(0.95) == pytest.approx(math.sqrt(2 * math.log(2 / 0.05) / 4))
    with pytest.raises(ValueError, match="LOWER estimates"):
        est.upper(0.95)
    assert est.upper(0.95, allow_lower_estimate=True) == pytest.approx(
        float(est.value) + math.sqrt(2 * math.log(1 / 0.05) / 4)
    )
    assert "lower estimate" in str(est)


def test_norm_constraint_gives_a_clearly_smaller_value(signs_data, unconstrained):
    H = NetworkClass(_WideMLP(), steps=200, norm_constraint=0.3)
    est = rademacher(H, signs_data, num_draws=4, key=jax.random.key(1))
    assert 0.0 < float(est.value) < 0.5 * float(unconstrained.value)


@pytest.mark.parametrize("norm", ["frobenius", "spectral"])
def test_projection_lands_in_the_ball_and_fixes_its_members(norm):
    rng = np.random.default_rng(2)
    tree = {
        "k": jnp.asarray(rng.normal(size=(6, 4))),
        "b": jnp.asarray(rng.normal(size=4)),
        "conv": jnp.asarray(rng.normal(size=(3, 3, 2, 5))),
    }
    r = 0.8
    out = _project(tree, r, norm)
    np.testing.assert_array_equal(np.asarray(out["b"]), np.asarray(tree["b"]))  # biases free
    for name in ("k", "conv"):
        m = np.asarray(out[name]).reshape(-1, out[name].shape[-1])
        size = np.linalg.norm(m) if norm == "frobenius" else np.linalg.norm(m, 2)
        assert size <= r * (1 + 1e-12)
        assert size == pytest.approx(r, rel=1e-10)  # the originals were outside the ball
    inside = jax.tree.map(lambda w: w * 1e-3, tree)
    again = _project(inside, r, norm)
    for name in ("k", "conv"):
        np.testing.assert_allclose(np.asarray(again[name]), np.asarray(inside[name]), rtol=1e-10)


def test_network_loop_and_vmap_agree(reference):
    a, b = reference["network/loop"], reference["network/vmap"]
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert np.all((a > 0) & (a <= 1))


# --------------------------------------------------------------------------------------------
# Two forced CPU devices and two processes (subprocesses)
# --------------------------------------------------------------------------------------------


def test_sharded_two_devices_equals_unsharded_exactly(workers, reference):
    got = workers.result("sharded")
    for name, _, _ in worker.problems():
        sharded = got[f"{name}/sharded"]
        assert got[f"{name}/sharded/meta"][0] == 2  # really spread over two devices
        # Same chunk shape per device => bitwise the same draws as one device, here and there.
        np.testing.assert_array_equal(sharded, got[f"{name}/vmap"])
        if jax.default_backend() == "cpu":
            np.testing.assert_array_equal(sharded, reference[f"{name}/vmap"])
        if f"{name}/loop" in reference:
            np.testing.assert_allclose(sharded, reference[f"{name}/loop"], rtol=1e-9, atol=1e-12)


def test_two_processes_equal_one_process(workers, reference):
    results = [workers.result(f"process{pid}") for pid in range(2)]
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key])  # everyone agrees
    assert int(results[0].pop("mismatch_detected")) == 1  # both raised, neither hung
    assert int(results[1].pop("mismatch_detected")) == 1
    for key, draws in results[0].items():
        if key.endswith("/meta"):
            assert draws[1] == 2  # spread over two processes
            continue
        name, strategy = key.split("/")
        ref = reference[f"{name}/{'loop' if strategy == 'loop' else 'vmap'}"]
        assert draws.shape == (worker.NUM_DRAWS,)
        if jax.default_backend() == "cpu":
            np.testing.assert_array_equal(draws, ref)
        else:
            np.testing.assert_allclose(draws, ref, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _call(**kw):
    args = dict(hypotheses=LinearBall(1.0), X=ORACLE_X, num_draws=4, key=jax.random.key(0))
    args.update(kw)
    h = args.pop("hypotheses")
    X = args.pop("X")
    return rademacher(h, X, **args)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(num_draws=1), ValueError, "num_draws must be an integer >= 2"),
        (dict(num_draws=0), ValueError, "num_draws must be an integer >= 2"),
        (dict(num_draws=2.5), TypeError, "num_draws"),
        (dict(X=np.ones(3)), ValueError, r"X must have rank 2, got shape \(3,\)"),
        (dict(X=np.ones((2, 2, 2))), ValueError, "X must have rank 2"),
        (dict(X=np.array([[1.0, np.nan]])), ValueError, "X must be finite"),
        (dict(X=np.zeros((0, 2))), ValueError, "X must not be empty"),
        (dict(strategy="pmap"), ValueError, "strategy must be one of"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(confidence=1.0), ValueError, "confidence must lie in"),
        (dict(key=0), TypeError, "key must be a PRNG key"),
        (dict(hypotheses="linear"), TypeError, "hypotheses must be a genbounds hypothesis class"),
        (dict(devices=[]), ValueError, "devices"),
    ],
)
def test_bad_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        _call(**kw)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: LinearBall(0.0), ValueError, "radius must be a finite number > 0"),
        (lambda: LinearBall(-1.0), ValueError, "radius"),
        (lambda: LinearBall(float("nan")), ValueError, "radius"),
        (lambda: LinearBall(1.0, norm="l3"), ValueError, "norm must be one of"),
        (lambda: KernelBall(0.0), ValueError, "radius"),
        (lambda: KernelBall(1.0, kernel="sigmoid"), ValueError, "kernel must be one of"),
        (lambda: KernelBall(1.0, bandwidth=0.0), ValueError, "bandwidth"),
        (lambda: NetworkClass(object()), TypeError, "model must be a Flax linen module"),
        (lambda: NetworkClass(_WideMLP(), steps=0), ValueError, "steps"),
        (lambda: NetworkClass(_WideMLP(), norm_constraint=-1.0), ValueError, "norm_constraint"),
        (
            lambda: NetworkClass(_WideMLP(), constraint_norm="nuclear"),
            ValueError,
            "constraint_norm",
        ),
        (lambda: NetworkClass(_WideMLP(), output="relu"), ValueError, "output must be one of"),
        (lambda: NetworkClass(_WideMLP(), weight_decay=-0.1), ValueError, "weight_decay"),
        (lambda: NetworkClass(_WideMLP(), optimizer="adam"), TypeError, "optimizer"),
    ],
)
def test_bad_class_parameters(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_network_with_vector_output_is_rejected():
    class TwoOut(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            return nn.Dense(2)(x)

    with pytest.raises(ValueError, match=r"model must return one scalar per example"):
        rademacher(NetworkClass(TwoOut(), steps=2), ORACLE_X, num_draws=2, key=jax.random.key(0))


def test_upper_rejects_bad_confidence():
    est = rademacher(LinearBall(1.0), ORACLE_X, num_draws=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="confidence must lie in"):
        est.upper(1.5)
