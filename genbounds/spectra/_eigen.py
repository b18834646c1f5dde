"""Eigenvalues of $W^\\top W$ for many matrices: one batched, jitted call per shape group.

The matrices of all layers are grouped by (rows, cols, dtype); each group is stacked and its
singular values computed by one ``jax.vmap``-ed ``svd(compute_uv=False)`` (or ``eigvalsh`` of the
smaller Gram matrix) under ``jax.jit``, on the default device (the accelerator when there is
one). The eigenvalues of $W^\\top W$ are the squared singular values. Float64 needs
``jax_enable_x64``; without it the float64 groups run in numpy (LAPACK ``gesdd``, batched).

On a CPU backend the LAPACK routines are called directly, without XLA: ``method="svd"`` is
``scipy.linalg.svd(W, compute_uv=False)`` per matrix (LAPACK ``gesdd``, the routine XLA's CPU
SVD calls, and the call WeightWatcher makes, so the values are the same to the bit) and needs no
compilation per shape; its threads and XLA's do not compete for the cores.

``method="gram"`` takes the eigenvalues of the smaller Gram matrix ($W^\\top W$ or $W W^\\top$,
LAPACK ``syevd``, batched; about 2.5x faster than ``gesdd`` on a CPU) and their square roots.
Each eigenvalue then has an absolute error of order $n\\,\\varepsilon\\,\\lambda_{\\max}$ instead
of a relative one, so eigenvalues far below $\\varepsilon\\,\\lambda_{\\max}$ (a rank-deficient
matrix) are not resolved; the randomised ESDs use it (`_randomize.py`). Matrices with fewer
than 32 rows or columns take the SVD under either method (the Gram saves nothing there, and a
shuffled one-column matrix keeps its singular value to the bit, as in WeightWatcher), unless
``resolve=True``.

``resolve=True`` (the default preset's layer matrices) keeps that route only where it resolves
every eigenvalue: on a CPU the Gram matrix is formed and decomposed in float64 (a float32 input
too), and a matrix whose smallest Gram eigenvalue is not above ``2**10 * n * eps * lambda_max``
($n$ its larger side, $\\varepsilon$ of the precision used) is decomposed again by the SVD. So
a rank-deficient or very ill-conditioned matrix gets the SVD's values, and a matrix that keeps
the Gram values has every eigenvalue within a relative error of about $10^{-3}$ of the SVD's
(far less on all but its smallest ones) and no singular value near the rank threshold.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("method",))
def _batched_svals(stack: jax.Array, method: str) -> jax.Array:
    if method in ("eigh", "gram"):
        gram = jnp.einsum("bij,bik->bjk", jnp.conj(stack), stack,
                          precision=jax.lax.Precision.HIGHEST) if stack.shape[1] >= \
            stack.shape[2] else jnp.einsum("bji,bki->bjk", stack, jnp.conj(stack),
                                           precision=jax.lax.Precision.HIGHEST)
        ev = jnp.linalg.eigvalsh(gram)
        return jnp.sqrt(jnp.clip(ev, 0, None))
    return jnp.linalg.svd(stack, compute_uv=False)


_GRAM_MIN = 32  # below this many columns (and rows) "gram" runs the SVD: it saves nothing there
_RESOLVE = 2.0 ** 10  # resolve=True: smallest Gram eigenvalue > _RESOLVE * n * eps * lambda_max


def _x64() -> bool:
    return bool(jax.config.jax_enable_x64)


def _cpu() -> bool:
    return jax.default_backend() == "cpu"


def _gram(m: np.ndarray) -> tuple[np.ndarray, str]:
    """The Gram matrix of the smaller side of one 2-D matrix and the triangle that holds it.

    Real matrices go to BLAS ``syrk`` (half the products of a general matrix product; the
    upper triangle is written), complex ones to a 2-D product. One matrix at a time: numpy's
    stacked ``matmul`` on a transposed view does not reach BLAS and was 3-5x slower here.
    """
    tall = m.shape[0] >= m.shape[1]
    if m.dtype in (np.float32, np.float64):
        from scipy.linalg import blas

        syrk = blas.get_blas_funcs("syrk", (m,))
        # syrk(trans=1): A^T A; trans=0: A A^T (Fortran order avoids a copy)
        return syrk(1.0, np.asfortranarray(m), trans=1 if tall else 0), "U"
    mh = np.conj(m.T)
    return (mh @ m if tall else m @ mh), "L"


def _gram_evals_numpy(stack: np.ndarray) -> np.ndarray:
    # scipy's LAPACK, as for the SVDs and syrk: numpy and scipy each ship their own OpenBLAS,
    # and alternating between the two left each one's idle threads spinning against the
    # other's (numpy's eigvalsh after scipy's syrk took twice its time here)
    from scipy import linalg

    out = []
    for m in stack:
        g, uplo = _gram(m)
        out.append(linalg.eigh(g, lower=uplo == "L", eigvals_only=True, overwrite_a=True,
                               check_finite=False))
    return np.stack(out)


def _unresolved(ev: np.ndarray, n: int, dtype: np.dtype) -> np.ndarray:
    """Indices of the matrices whose smallest Gram eigenvalue (``ev`` ascending per row) is
    not above ``_RESOLVE * n * eps * lambda_max``."""
    eps = float(np.finfo(dtype).eps)
    return np.flatnonzero(~(ev[:, 0] > _RESOLVE * n * eps * ev[:, -1]))


def _svd_numpy(stack: np.ndarray) -> np.ndarray:
    from scipy import linalg

    return np.stack([linalg.svd(m, compute_uv=False) for m in stack])


def singular_values(mats: Sequence[np.ndarray], *, method: str = "svd",
                    resolve: bool = False) -> list[np.ndarray]:
    """Singular values of every stack in ``mats`` (each ``(count, rows, cols)``), as float64
    numpy arrays ``(count, min(rows, cols))``, ascending within each matrix.

    Stacks of the same (rows, cols, dtype) are concatenated and decomposed in one call.
    ``resolve=True`` (``method="gram"`` only): the Gram route in float64 on a CPU, and the SVD
    for every matrix whose eigenvalues it does not resolve (see the module docstring).
    """
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(mats):
        groups.setdefault((m.shape[1], m.shape[2], np.dtype(m.dtype).str), []).append(i)
    out: list[np.ndarray | None] = [None] * len(mats)
    for key, idx in groups.items():
        stack = np.concatenate([mats[i] for i in idx], axis=0)
        double = np.dtype(key[2]) in (np.dtype(np.float64), np.dtype(np.complex128))
        small = min(key[:2]) < _GRAM_MIN and not resolve
        how = "svd" if method == "gram" and small else method
        if how == "gram" and (_cpu() or (double and not _x64())):
            wide = resolve and stack.dtype in (np.float32, np.complex64)
            ev = _gram_evals_numpy(stack.astype(np.result_type(stack.dtype, np.float64))
                                   if wide else stack)
            sv = np.sqrt(np.clip(ev, 0.0, None))
            if resolve:
                bad = _unresolved(ev, max(key[:2]), np.float64 if wide or double
                                  else np.float32)
                if bad.size:
                    sv[bad] = _svd_numpy(stack[bad])
        elif how == "svd" and _cpu():
            sv = _svd_numpy(stack)
        elif double and not _x64():
            sv = np.linalg.svd(stack, compute_uv=False)
        else:
            sv = np.array(_batched_svals(jnp.asarray(stack), how))
            if resolve and how == "gram":
                bad = _unresolved(np.sort(sv.astype(np.float64), axis=-1) ** 2, max(key[:2]),
                                  np.float64 if double else np.float32)
                if bad.size:
                    sv[bad] = np.asarray(_batched_svals(jnp.asarray(stack[bad]), "svd"))
        sv = np.sort(sv.astype(np.float64), axis=-1)
        start = 0
        for i in idx:
            c = mats[i].shape[0]
            out[i] = sv[start:start + c]
            start += c
    return out  # type: ignore[return-value]
