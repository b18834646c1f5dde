"""Eigenvalues of $W^\\top W$ for many matrices: one batched, jitted call per shape group.

The matrices of all layers are grouped by (rows, cols, dtype); each group is stacked and its
singular values computed by one ``jax.vmap``-ed ``svd(compute_uv=False)`` (or ``eigvalsh`` of the
smaller Gram matrix) under ``jax.jit``, on the default device (the accelerator when there is
one). The eigenvalues of $W^\\top W$ are the squared singular values. Float64 needs
``jax_enable_x64``; without it the float64 groups run in numpy (LAPACK ``gesdd``, batched).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("method",))
def _batched_svals(stack: jax.Array, method: str) -> jax.Array:
    if method == "eigh":
        gram = jnp.einsum("bij,bik->bjk", jnp.conj(stack), stack,
                          precision=jax.lax.Precision.HIGHEST) if stack.shape[1] >= \
            stack.shape[2] else jnp.einsum("bji,bki->bjk", stack, jnp.conj(stack),
                                           precision=jax.lax.Precision.HIGHEST)
        ev = jnp.linalg.eigvalsh(gram)
        return jnp.sqrt(jnp.clip(ev, 0, None))
    return jnp.linalg.svd(stack, compute_uv=False)


def _x64() -> bool:
    return bool(jax.config.jax_enable_x64)


def singular_values(mats: Sequence[np.ndarray], *, method: str = "svd") -> list[np.ndarray]:
    """Singular values of every stack in ``mats`` (each ``(count, rows, cols)``), as float64
    numpy arrays ``(count, min(rows, cols))``, ascending within each matrix.

    Stacks of the same (rows, cols, dtype) are concatenated and decomposed in one call.
    """
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(mats):
        groups.setdefault((m.shape[1], m.shape[2], np.dtype(m.dtype).str), []).append(i)
    out: list[np.ndarray | None] = [None] * len(mats)
    for key, idx in groups.items():
        stack = np.concatenate([mats[i] for i in idx], axis=0)
        double = np.dtype(key[2]) in (np.dtype(np.float64), np.dtype(np.complex128))
        if double and not _x64():
            sv = np.linalg.svd(stack, compute_uv=False)
        else:
            sv = np.asarray(_batched_svals(jnp.asarray(stack), method))
        sv = np.sort(sv.astype(np.float64), axis=-1)
        start = 0
        for i in idx:
            c = mats[i].shape[0]
            out[i] = sv[start:start + c]
            start += c
    return out  # type: ignore[return-value]
