"""Jitted kernels for the operator norm of a convolution: frequency and space domain.

Frequency domain: the polyphase symbols $M(u)$ of a (strided) circular convolution on a grid and
the maximum of their largest singular values (Sedghi, Gupta & Long 2019), by a direct DFT in
chunks of frequencies. Space domain: the SVD of the explicit operator matrix and restarted
Lanczos on $T^\top T$. Static arguments are shapes, strides and padding only, so a second call
with the same shapes does not recompile.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from genbounds.core._dtypes import promote

from ._conv_geometry import _conv_map

# Frequencies are processed in chunks of about this many complex matrix entries.
_CHUNK_ENTRIES = 2**21


def _compute_dtype() -> Any:
    """float64 where jax allows it (certified and FFT values are computed in it), else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _alias_matrices(kernel: jax.Array, u: jax.Array, grid: tuple[int, ...], strides) -> jax.Array:
    """Polyphase symbols ``M(u)`` for a batch of output frequencies ``u`` (shape (B, D), ints).

    On a grid N_d = s_d Q_d, ``M(u) = S^{-1/2} [K_hat(2 pi (u + j Q) / N)]_{j}``, the S = prod(s)
    aliases of u stacked along the input channels: shape (B, S c_in, c_out), complex. With all
    strides 1 this is the Sedghi et al. symbol ``K_hat(2 pi u / N)``.
    K_hat(theta) = sum_p K_p exp(-i <p, theta>) is a direct DFT by matmul (no FFT), so taps p >= N
    fold correctly and chunks of frequencies need no full-grid array.
    """
    window = kernel.shape[:-2]
    c_in, c_out = kernel.shape[-2:]
    rank = len(window)
    q = np.asarray(grid, dtype=np.int64)
    s = np.asarray(strides, dtype=np.int64)
    n_grid = q * s
    taps = np.stack(np.meshgrid(*[np.arange(k) for k in window], indexing="ij"), -1)
    taps = taps.reshape(-1, rank)  # (T, D), same order as kernel.reshape(T, c_in, c_out)
    aliases = np.stack(np.meshgrid(*[np.arange(v) for v in strides], indexing="ij"), -1)
    aliases = aliases.reshape(-1, rank)  # (S, D)
    n_alias = aliases.shape[0]
    f = u[:, None, :] + jnp.asarray(aliases * q)[None]  # (B, S, D) frequency indices on N
    # angle = 2 pi sum_d (p_d f_d mod N_d) / N_d, reduced exactly in integers first.
    prod = (jnp.asarray(taps)[None, None] * f[:, :, None, :]) % jnp.asarray(n_grid)
    frac = jnp.sum(prod.astype(kernel.dtype) / jnp.asarray(n_grid, dtype=kernel.dtype), axis=-1)
    angle = (2.0 * np.pi) * frac  # (B, S, T)
    kt = kernel.reshape(-1, c_in * c_out)
    hi = lax.Precision.HIGHEST
    re = jnp.matmul(jnp.cos(angle), kt, precision=hi)
    im = -jnp.matmul(jnp.sin(angle), kt, precision=hi)
    m = lax.complex(re, im).reshape(u.shape[0], n_alias * c_in, c_out)
    m, scale = promote(m, np.sqrt(n_alias))  # explicitly as before: np.float64 is not weak
    return m / scale


def _top_singular(m: jax.Array) -> jax.Array:
    """Largest singular value of each matrix in the batch (LAPACK gesdd, values only: on CPU
    about 10x faster than eigvalsh of the Gram matrix, and accurate to eps relative)."""
    return jnp.linalg.svd(m, compute_uv=False)[..., 0]


def _frequency_ranges(grid: tuple[int, ...], half: bool) -> tuple[int, ...]:
    """Index ranges of the frequencies u in prod_d [0, Q_d); with ``half`` only
    u_last <= Q_last // 2 (real kernels: M(-u) is the conjugate of M(u) up to a permutation of
    its blocks, so it has the same singular values)."""
    return (*grid[:-1], grid[-1] // 2 + 1) if half else tuple(grid)


def _unravel(flat: jax.Array, ranges: tuple[int, ...]) -> jax.Array:
    """Row-major multi-indices (B, D) of flat indices (B,), computed in the graph (embedding a
    large constant index table makes compilation slow)."""
    out = []
    for d in range(len(ranges)):
        out.append((flat // math.prod(ranges[d + 1 :])) % ranges[d])
    return jnp.stack(out, -1)


def _chunk_size(n_freq: int, rows: int, cols: int, n_alias: int, n_taps: int) -> int:
    per = 3 * rows * cols + n_alias * n_taps * 4  # symbols, SVD workspace, phases
    return int(max(1, min(n_freq, _CHUNK_ENTRIES // per)))


@partial(jax.jit, static_argnames=("grid", "strides", "half"))
def _grid_max_sigma(kernel: jax.Array, *, grid, strides, half) -> jax.Array:
    """max over the grid frequencies u of sigma_1(M(u)) (see `_alias_matrices`)."""
    c_in, c_out = kernel.shape[-2:]
    n_alias = math.prod(strides)
    ranges = _frequency_ranges(grid, half)
    n_freq = math.prod(ranges)
    chunk = _chunk_size(n_freq, n_alias * c_in, c_out, n_alias, math.prod(kernel.shape[:-2]))
    n_chunks = -(-n_freq // chunk)

    def one_chunk(flat):
        # Indices past the end map to frequency 0: duplicates do not change a maximum.
        u = _unravel(jnp.where(flat < n_freq, flat, 0), ranges)
        return jnp.max(_top_singular(_alias_matrices(kernel, u, grid, strides)))

    flat = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)
    if n_chunks == 1:
        return one_chunk(flat[0])
    return jnp.max(lax.map(one_chunk, flat))


@partial(jax.jit, static_argnames=("grid",))
def _grid_singular_values(kernel: jax.Array, *, grid) -> jax.Array:
    """All singular values of the circular stride-1 operator on ``grid`` (Sedghi et al. 2019)."""
    u = _unravel(jnp.arange(math.prod(grid)), tuple(grid))
    m = _alias_matrices(kernel, u, grid, (1,) * len(grid))
    return jnp.sort(jnp.linalg.svd(m, compute_uv=False).reshape(-1))[::-1]


# --------------------------------------------------------------------------------------------
# Space-domain kernels: explicit matrix and power iteration.
# --------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("input_shape", "strides", "padding"))
def _explicit_svd(kernel: jax.Array, *, input_shape, strides, padding):
    c_in = kernel.shape[-2]
    x0 = jnp.zeros((*input_shape, c_in), kernel.dtype)
    jac = jax.jacfwd(lambda x: _conv_map(kernel, x, strides, padding))(x0)
    n_in = math.prod(input_shape) * c_in
    mat = jac.reshape(-1, n_in)
    _, s, vh = jnp.linalg.svd(mat, full_matrices=False)
    return s[0], vh[0].reshape(x0.shape)


@partial(jax.jit, static_argnames=("strides", "padding", "max_iter", "krylov"))
def _lanczos(kernel, v0, tol, *, strides, padding, max_iter, krylov):
    """Explicitly restarted Lanczos (Rayleigh-Ritz on Krylov spaces) for A = T^T T.

    Each cycle builds an orthonormal basis V of K_k(A, x) (full reorthogonalisation, twice),
    takes the top eigenpair (theta, y) of H = V A V^T and restarts from the Ritz vector
    x = V^T y. It stops when ||A x - theta x|| <= tol * theta: for symmetric A a residual r puts
    an eigenvalue within r of theta, so sqrt(theta) is then within about tol/2 (relative) of a
    singular value of T, in practice the largest. Plain power iteration needs O(1/gap)
    steps and stalls on the clustered top spectrum of convolutions; Lanczos needs
    O(1/sqrt(gap)). Returns (||T x||, x, number of applications of A).
    """
    shape = v0.shape
    n = v0.size

    def fwd(x):
        return _conv_map(kernel, x, strides, padding)

    adj = jax.linear_transpose(fwd, v0)

    def gram(v):
        return adj(fwd(v.reshape(shape)))[0].reshape(-1)

    def normalise(w):
        nw = jnp.linalg.norm(w)
        return w / jnp.where(nw > 0, nw, 1.0)

    hi = lax.Precision.HIGHEST
    breakdown = float(np.sqrt(np.finfo(v0.dtype).eps))

    def cycle(x):
        def step(j, carry):
            vs, ws, v = carry
            vs = vs.at[j].set(v)
            w = gram(v)
            ws = ws.at[j].set(w)
            # Next basis vector: orthogonalise A v against the basis, twice ("twice is enough").
            # If A v already lies in span(V) up to rounding, the Krylov space is invariant: the
            # basis stops growing (zero rows, which Rayleigh-Ritz ignores) instead of being
            # extended by normalised rounding noise, which would break orthonormality.
            u = w - jnp.matmul(vs.T, jnp.matmul(vs, w, precision=hi), precision=hi)
            grows = jnp.linalg.norm(u) > breakdown * jnp.linalg.norm(w)
            u = normalise(u)
            u = normalise(u - jnp.matmul(vs.T, jnp.matmul(vs, u, precision=hi), precision=hi))
            return vs, ws, jnp.where(grows, u, 0.0)

        zeros = jnp.zeros((krylov, n), v0.dtype)
        vs, ws, _ = lax.fori_loop(0, krylov, step, (zeros, zeros, x))
        h = jnp.matmul(vs, ws.T, precision=hi)
        # H is symmetric positive semidefinite: its top singular pair is its top eigenpair
        # (an SVD compiles several times faster than eigh on XLA CPU).
        y = jnp.linalg.svd(0.5 * (h + h.T), full_matrices=False)[0][:, 0]
        x_new = jnp.matmul(y, vs, precision=hi)
        ax = jnp.matmul(y, ws, precision=hi)  # A x_new, by linearity
        nx = jnp.linalg.norm(x_new)
        nx = jnp.where(nx > 0, nx, 1.0)
        x_new, ax = x_new / nx, ax / nx
        lam = jnp.vdot(x_new, ax)
        return x_new, lam, jnp.linalg.norm(ax - lam * x_new)

    def cond(state):
        i, _, lam, res = state
        return (i < max_iter) & (res > tol * lam)

    def body(state):
        i, x, _, _ = state
        x, lam, res = cycle(x)
        return i + krylov, x, lam, res

    x = normalise(v0.reshape(-1))
    inf = jnp.asarray(jnp.inf, x.dtype)
    state = (jnp.asarray(0), x, jnp.asarray(0.0, x.dtype), inf)
    i, x, _, _ = lax.while_loop(cond, body, state)
    x = x.reshape(shape)
    return jnp.linalg.norm(fwd(x)), x, i


@jax.jit
def _reshaped_norm(kernel: jax.Array) -> jax.Array:
    return jnp.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]


@jax.jit
def _tap_norms(kernel: jax.Array) -> jax.Array:
    """Spectral norms of the T taps K_p (c_in x c_out)."""
    k = kernel.reshape(-1, *kernel.shape[-2:])
    return jnp.linalg.svd(k, compute_uv=False)[:, 0]

