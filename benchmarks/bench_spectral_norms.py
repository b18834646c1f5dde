"""Spectral norm of float32 weight matrices: genbounds' certified default and fast estimate vs scipy.

Times, in one run and on the same matrices (float32, n x n, n = 1024 and 4096, a Gaussian matrix
and one with a decaying spectrum sigma_i = 1/i like trained weights):

- ``certified``: ``spectral_norm(W)`` (the sound default, an upper bound),
- ``lanczos``: ``spectral_norm(W, method="lanczos")`` (the fast estimate),
- ``svds``: ``scipy.sparse.linalg.svds(W, k=1)``,
- ``np.linalg.norm``: ``np.linalg.norm(W, 2)`` (a full float32 SVD),

and prints a table with the time, the relative error against a float64 reference, and the ratios
svds/lanczos and np.linalg.norm/certified.

References (float64, computed once per matrix, never timed):
- decaying: built as W = U diag(s) V^T with U, V orthogonal (random signs, two orthonormal DCTs
  and a random permutation, applied in O(n^2 log n)), so sigma_1 = s_1 = 1 is known; the float32
  rounding E = W32 - W64 is accounted for to first order, sigma_1(W32) = 1 + u_1^T E v_1 + O(|E|^2).
- Gaussian: ARPACK in float64 on the float64 copy of W32 at tol=0 (machine precision), whose
  error is at most a few float64 ulps; ``--check-ref`` compares both references with a float64
  SVD at n = 1024.

Run (not part of the default test run):

    python benchmarks/bench_spectral_norms.py [--quick] [--check-ref]
    python -m pytest benchmarks/bench_spectral_norms.py --benchmark-only -s [--bench-quick]

``--quick`` runs n = 1024 only. np.linalg.norm is timed once per matrix (about 9 s at 4096 on 2
quiet cores); the other methods report the best of a few runs after one warm-up (compilation).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import scipy.fft
import scipy.sparse.linalg

if __name__ == "__main__":  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from genbounds.linalg import spectral_norm  # noqa: E402

SIZES = (1024, 4096)
SPECTRA = ("gaussian", "decaying")
METHODS = ("certified", "lanczos", "svds", "np.linalg.norm")


# ------------------------------------------------------------------------------------------
# Matrices and float64 references
# ------------------------------------------------------------------------------------------


class _Orthogonal:
    """A random orthogonal n x n map: permutation . DCT . signs . DCT . signs, in O(n log n)."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.s1 = rng.choice([-1.0, 1.0], n)
        self.s2 = rng.choice([-1.0, 1.0], n)
        self.perm = rng.permutation(n)

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Q @ X along axis 0."""
        Y = scipy.fft.dct(X * self.s1.reshape((-1,) + (1,) * (X.ndim - 1)), norm="ortho", axis=0)
        Y = scipy.fft.dct(Y * self.s2.reshape((-1,) + (1,) * (X.ndim - 1)), norm="ortho", axis=0)
        return Y[self.perm]


def make_decaying(n: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """float32 W = U diag(1/i) V^T and the float64 sigma_1 of the float32 matrix."""
    rng = np.random.default_rng(seed)
    U, V = _Orthogonal(n, rng), _Orthogonal(n, rng)
    s = 1.0 / np.arange(1, n + 1, dtype=np.float64)
    W64 = U.apply(V.apply(np.diag(s)).T)  # U diag(s) V^T
    W32 = W64.astype(np.float32)
    e1 = np.zeros(n)
    e1[0] = 1.0
    u1, v1 = U.apply(e1), V.apply(e1)
    # sigma_1(W64 + E) = s_1 + u_1^T E v_1 + O(||E||^2 / (s_1 - s_2)), ||E|| ~ 1e-7.
    ref = s[0] + u1 @ ((W32.astype(np.float64) - W64) @ v1)
    return W32, float(ref)


def make_gaussian(n: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """float32 standard Gaussian W and its sigma_1 from float64 ARPACK at machine precision."""
    W32 = np.random.default_rng(seed).standard_normal((n, n), dtype=np.float32)
    ref = scipy.sparse.linalg.svds(
        W32.astype(np.float64),
        k=1,
        tol=0,
        return_singular_vectors=False,
        random_state=np.random.default_rng(seed + 1),
    )[0]
    return W32, float(ref)


def make(n: int, spectrum: str) -> tuple[np.ndarray, float]:
    return make_gaussian(n) if spectrum == "gaussian" else make_decaying(n)


def method_fn(method: str, W32: np.ndarray) -> Callable[[], float]:
    """A zero-argument callable computing the norm of W32 with `method` (input already placed)."""
    if method in ("certified", "lanczos"):
        Wj = jnp.asarray(W32)
        Wj.block_until_ready()
        return lambda: spectral_norm(Wj, method=method).value
    if method == "svds":
        return lambda: float(scipy.sparse.linalg.svds(W32, k=1, return_singular_vectors=False)[0])
    if method == "np.linalg.norm":
        return lambda: float(np.linalg.norm(W32, 2))
    raise ValueError(method)


def rounds_for(method: str, n: int) -> int:
    return 1 if method == "np.linalg.norm" else (2 if n >= 4096 else 3)


# ------------------------------------------------------------------------------------------
# Table
# ------------------------------------------------------------------------------------------


def format_table(results: dict[tuple[int, str, str], tuple[float, float]]) -> str:
    """results[(n, spectrum, method)] = (seconds, value relative error)."""
    lines = [
        f"{'n':>5} {'spectrum':<9} {'method':<15} {'time [s]':>9} {'rel. error':>11}",
        "-" * 53,
    ]
    cases = {(n, s) for n, s, _ in results}
    order = [(n, s) for n in SIZES for s in SPECTRA if (n, s) in cases]
    for n, spec in order:
        for m in METHODS:
            if (n, spec, m) in results:
                t, err = results[(n, spec, m)]
                lines.append(f"{n:>5} {spec:<9} {m:<15} {t:>9.4f} {err:>+11.2e}")
        r = results
        parts = []
        if (n, spec, "svds") in r and (n, spec, "lanczos") in r:
            parts.append(
                f"svds/lanczos = {r[(n, spec, 'svds')][0] / r[(n, spec, 'lanczos')][0]:.2f}x"
            )
        if (n, spec, "np.linalg.norm") in r and (n, spec, "certified") in r:
            ratio = r[(n, spec, "np.linalg.norm")][0] / r[(n, spec, "certified")][0]
            parts.append(f"np.linalg.norm/certified = {ratio:.1f}x")
        if parts:
            lines.append(f"{'':>5} {'':<9} ratios: " + ", ".join(parts))
        lines.append("")
    return "\n".join(lines)


def time_best(fn: Callable[[], float], rounds: int, warmup: bool) -> tuple[float, float]:
    if warmup:
        fn()
    best, value = math.inf, math.nan
    for _ in range(rounds):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 1024 only")
    parser.add_argument(
        "--check-ref",
        action="store_true",
        help="compare the references with a float64 SVD (n=1024)",
    )
    args = parser.parse_args(argv)
    sizes = (1024,) if args.quick else SIZES
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs")
    results: dict[tuple[int, str, str], tuple[float, float]] = {}
    for n in sizes:
        for spec in SPECTRA:
            W32, ref = make(n, spec)
            if args.check_ref and n == 1024:
                exact = np.linalg.svd(W32.astype(np.float64), compute_uv=False)[0]
                print(
                    f"reference check n={n} {spec}: (ref - svd64)/svd64 = {(ref - exact) / exact:+.2e}"
                )
            for m in METHODS:
                t, v = time_best(method_fn(m, W32), rounds_for(m, n), warmup=m != "np.linalg.norm")
                results[(n, spec, m)] = (t, (v - ref) / ref)
                print(
                    f"  n={n} {spec:<9} {m:<15} {t:8.4f} s  rel.err {(v - ref) / ref:+.2e}",
                    flush=True,
                )
    print()
    print(format_table(results))
    return 0


# ------------------------------------------------------------------------------------------
# pytest-benchmark entry point (the table is printed by benchmarks/conftest.py)
# ------------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - the plain script does not need pytest
    pytest = None

if pytest is not None:
    _CACHE: dict[tuple[int, str], tuple[np.ndarray, float]] = {}

    @pytest.mark.parametrize("method", METHODS)
    @pytest.mark.parametrize("spectrum", SPECTRA)
    @pytest.mark.parametrize("n", SIZES)
    def test_spectral_norm_speed(benchmark, request, n, spectrum, method):
        if n > 1024 and request.config.getoption("--bench-quick"):
            pytest.skip("--bench-quick: n = 1024 only")
        if (n, spectrum) not in _CACHE:
            _CACHE.clear()  # keep one matrix (64 MB at 4096) alive at a time
            _CACHE[(n, spectrum)] = make(n, spectrum)
        W32, ref = _CACHE[(n, spectrum)]
        fn = method_fn(method, W32)
        warmup = 0 if method == "np.linalg.norm" else 1
        value = benchmark.pedantic(
            fn, rounds=rounds_for(method, n), iterations=1, warmup_rounds=warmup
        )
        rel = (value - ref) / ref
        request.config._spectral_bench[(n, spectrum, method)] = (benchmark.stats.stats.min, rel)
        if method == "certified":
            assert rel >= -1e-6  # never below the exact value beyond float32 rounding
        if method == "lanczos":
            assert abs(rel) <= 1e-5


if __name__ == "__main__":
    raise SystemExit(main())
