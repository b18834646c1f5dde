"""Host float64 LAPACK: exact singular values where they are cheaper than a jitted kernel.

Small matrices are measured on the host in float64 (scipy's ``svdvals``, one BLAS thread): no
kernel is compiled for their shape, and the value is exact. `host_exact_is_cheaper` is the rule,
on the shape alone, that decides which matrices go there (crossover: docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import jax
import numpy as np
import scipy.linalg

from ._arrays import _is_tracer

# Exact singular values by float64 LAPACK on the host (scipy gesdd) cost about 3e-10 s per unit
# of m * n * min(m, n) on 2 CPU cores: 8 ms at 256 x 256, 40 ms at 512 x 512, 0.26 s at
# 1024 x 1024. Below this size they are cheaper than compiling any jitted kernel (0.1-0.7 s per
# shape) and, at 512 x 512 (2^27), about as fast as a warm certified Lanczos run (~50 ms); above
# it the jitted Krylov kernels pay. Measured crossover: docs/benchmarks.md.
HOST_EXACT_MAX_WORK = 2**27
# Arrays up to this many entries are reduced (finiteness, Frobenius, (2,1)) on the host in
# float64 rather than by a jitted kernel compiled for their shape.
_HOST_REDUCE_MAX_SIZE = 2**22


def host_exact_is_cheaper(shape: tuple[int, ...]) -> bool:
    """Whether the float64 host SVD of a matrix of this shape is cheaper than a jitted kernel.

    A rule on the shape alone (m * n * min(m, n) <= `HOST_EXACT_MAX_WORK`), so the choice never
    depends on the weights' values.
    """
    m, n = int(shape[0]), int(shape[1])
    return m * n * min(m, n) <= HOST_EXACT_MAX_WORK


def on_cpu(x: Any) -> bool:
    """Whether work on `x` runs on CPU: the devices of a jax array, else (a numpy array, which
    jax places on the default device) the default backend."""
    try:
        return all(d.platform == "cpu" for d in x.devices())
    except Exception:  # noqa: BLE001 - no devices (numpy) or a deleted buffer
        return jax.default_backend() == "cpu"


def _host_ok(x: Any) -> bool:
    """True for a concrete array that is cheap to read on the host (numpy, or small, or on CPU)."""
    if _is_tracer(x):
        return False
    if not isinstance(x, jax.Array):
        return True
    if x.size <= _HOST_REDUCE_MAX_SIZE:
        return True
    try:
        return all(d.platform == "cpu" for d in x.devices())
    except Exception:  # noqa: BLE001 - e.g. a deleted buffer: let the jitted path report it
        return False


def _host_float64(W: Any, name: str) -> np.ndarray:
    """W as a float64 numpy array, checked finite (raises naming `name`)."""
    A = np.asarray(W, dtype=np.float64)
    if not np.all(np.isfinite(A)):
        bad = int(A.size - np.count_nonzero(np.isfinite(A)))
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite entries")
    return A


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    try:
        import threadpoolctl  # a dependency of scikit-learn
    except ImportError:  # pragma: no cover
        return None
    return threadpoolctl.ThreadpoolController()


def _host_sigma_max(A: np.ndarray) -> float:
    """Largest singular value of a float64 host matrix (LAPACK gesdd, gesvd if it fails).

    On one BLAS thread: at these sizes threads gain little, and on a loaded machine they lose
    badly (a 256 x 256 SVD measured 10 ms on one thread, 30-600 ms on two busy cores).
    """
    ctl = _blas_controller()
    with ctl.limit(limits=1, user_api="blas") if ctl is not None else contextlib.nullcontext():
        try:
            s = scipy.linalg.svdvals(A, check_finite=False)
        except np.linalg.LinAlgError:  # gesdd did not converge (rare): the robust driver
            s = scipy.linalg.svd(A, compute_uv=False, check_finite=False, lapack_driver="gesvd")
    return float(s[0])

