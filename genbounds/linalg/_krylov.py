"""Jitted Krylov kernels for the spectral norm of a dense matrix, and the shape bucketing.

Golub-Kahan-Lanczos bidiagonalisation with full reorthogonalisation (`_gkl_kernel`, driven by
`_lanczos_run`), power iteration, the SVD and the Gram iteration of Delattre et al. (2023).
Matrices are padded with zeros to `bucket` sizes so that layers of nearby shapes share one
compiled kernel; the padding changes no iterate.

All matrix-vector products are written ``W @ v`` and ``u @ W`` (never ``W.T @ u``): on XLA CPU the
transposed form inside a loop is roughly 30x slower.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax import lax

from ._arrays import _raise_nonfinite

_HI = lax.Precision.HIGHEST
# Rows of the Krylov bases are reorthogonalised in blocks of this many vectors, looping only over
# the blocks already filled, so that the cost grows with the number of steps taken rather than
# with the size of the preallocated buffer.
_BLOCK = 32


def _check_every(p: int, q: int) -> int:
    """How often "lanczos" tests convergence (the residual of the top Ritz pair).

    A test is a host call of some 0.1 ms; a step costs two passes over W. Test every 2 steps on
    large matrices (a step costs milliseconds), less often on small ones.
    """
    return 2 if p * q >= 2**22 else (4 if p * q >= 2**18 else 8)


# A new Krylov vector whose norm is below _BREAKDOWN * eps * (largest alpha/beta so far) is
# treated as zero: the Krylov space is then invariant to working precision.
_BREAKDOWN = 10.0


def _av(W: jax.Array, v: jax.Array, transpose: bool) -> jax.Array:
    """A v, where A = W, or A = W^T when `transpose` (written v @ W: no explicit transpose)."""
    return jnp.matmul(v, W, precision=_HI) if transpose else jnp.matmul(W, v, precision=_HI)


def _atu(W: jax.Array, u: jax.Array, transpose: bool) -> jax.Array:
    """A^T u, where A = W, or A = W^T when `transpose` (written u @ W or W @ u)."""
    return jnp.matmul(W, u, precision=_HI) if transpose else jnp.matmul(u, W, precision=_HI)


def _reorth(w: jax.Array, Q: jax.Array, nrows: jax.Array) -> jax.Array:
    """Removes from w its components along the rows [0, nrows) of Q (orthonormal, zero below).

    Block classical Gram-Schmidt over the filled blocks only (cost O(nrows * len(w))), repeated
    once when the first pass removed more than half of w's squared norm: "twice is enough"
    (Giraud, Langou & Rozloznik 2005), with the usual Kahan-Parlett test for when a second pass
    is needed at all.
    """
    nblocks = (nrows + _BLOCK - 1) // _BLOCK

    def one_pass(w):
        def body(b, w):
            blk = lax.dynamic_slice_in_dim(Q, b * _BLOCK, _BLOCK, axis=0)
            return w - jnp.matmul(jnp.matmul(blk, w, precision=_HI), blk, precision=_HI)

        return lax.fori_loop(0, nblocks, body, w)

    w1 = one_pass(w)
    again = jnp.sum(w1 * w1) < 0.5 * jnp.sum(w * w)
    return lax.cond(again, one_pass, lambda x: x, w1)


def _ritz_host(alphas: np.ndarray, betas: np.ndarray, j: int) -> tuple[float, np.ndarray]:
    """Top eigenpair of T_j = B_j^T B_j, in float64 on the host (LAPACK stebz/stein).

    B_j has diagonal alpha_0..alpha_{j-1} and superdiagonal beta_0..beta_{j-2}, so T_j has
    diagonal alpha_i^2 + beta_{i-1}^2 and off-diagonal alpha_i beta_i.
    """
    a = np.asarray(alphas[:j], np.float64)
    b = np.asarray(betas[: j - 1], np.float64)
    d = a * a
    d[1:] += b * b
    e = a[:-1] * b
    w, z = scipy.linalg.eigh_tridiagonal(d, e, select="i", select_range=(j - 1, j - 1))
    return max(float(w[0]), 0.0), z[:, 0]


def _ritz_check_host(alphas: np.ndarray, betas: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(theta, residual) of the top Ritz pair after j steps, for the convergence test.

    The residual ||S y - theta y|| of the Ritz vector y = V_j z is alpha_{j-1} beta_{j-1} |z_j|,
    from S V_j = V_j T_j + alpha_{j-1} beta_{j-1} v_{j+1} e_j^T.
    """
    j = int(j)
    if not (np.all(np.isfinite(alphas[:j])) and np.all(np.isfinite(betas[:j]))):
        return np.full(2, np.nan, dtype=np.asarray(alphas).dtype)  # overflow: never "converged"
    theta, z = _ritz_host(alphas, betas, j)
    residual = float(alphas[j - 1]) * float(betas[j - 1]) * abs(float(z[-1]))
    return np.array([theta, residual], dtype=np.asarray(alphas).dtype)


@functools.partial(jax.jit, static_argnames=("kbuf", "transpose", "adaptive"))
def _gkl_kernel(
    W: jax.Array,
    start: jax.Array,
    tol: jax.Array,
    steps: jax.Array,
    *,
    kbuf: int,
    transpose: bool,
    adaptive: bool,
) -> dict[str, jax.Array]:
    """Golub-Kahan-Lanczos bidiagonalisation of A (= W, or W^T) with full reorthogonalisation.

    With v_1 = start/||start||: u_j alpha_j = A v_j - beta_{j-1} u_{j-1},
    v_{j+1} beta_j = A^T u_j - alpha_j v_j (Golub & Kahan 1965), each new vector
    reorthogonalised against all previous ones. After j steps, span(v_1..v_j) is the Krylov space
    K_j(A^T A, v_1), and A^T A V_j = V_j B_j^T B_j + alpha_j beta_j v_{j+1} e_j^T.

    Runs `steps` steps (<= kbuf), or stops earlier on breakdown (an invariant Krylov space) or,
    when `adaptive`, once the residual of the top Ritz pair is at most 2 tol theta (checked every
    `_check_every(p, q)` steps).
    """
    dtype = W.dtype
    p, q = (W.shape[1], W.shape[0]) if transpose else W.shape  # A is p x q
    eps = jnp.finfo(dtype).eps
    check_every = _check_every(p, q)
    v1 = start / jnp.linalg.norm(start)
    zero = jnp.zeros((), dtype)
    state = dict(
        j=jnp.zeros((), jnp.int32),
        U=jnp.zeros((kbuf, p), dtype),
        V=jnp.zeros((kbuf, q), dtype),
        alphas=jnp.zeros((kbuf,), dtype),
        betas=jnp.zeros((kbuf,), dtype),
        u_prev=jnp.zeros((p,), dtype),
        v=v1.astype(dtype),
        beta_prev=zero,
        anorm=zero,
        theta=zero,
        done=jnp.zeros((), bool),
        breakdown=jnp.zeros((), bool),
        converged=jnp.zeros((), bool),
        nonfinite=jnp.zeros((), bool),
    )

    def cond(s):
        return (s["j"] < steps) & ~s["done"]

    def body(s):
        j = s["j"]
        V = s["V"].at[j].set(s["v"])
        u = _av(W, s["v"], transpose) - s["beta_prev"] * s["u_prev"]
        u = _reorth(u, s["U"], j)
        alpha = jnp.linalg.norm(u)
        # Any NaN/inf entry of W makes A v non-finite (NaN * x = NaN, inf * 0 = NaN), so the first
        # step doubles as the finiteness check of W; the wrapper raises on it.
        nonfinite = ~jnp.isfinite(alpha)
        anorm = jnp.maximum(s["anorm"], alpha)
        brk_a = alpha <= _BREAKDOWN * eps * anorm
        alpha = jnp.where(brk_a, zero, alpha)
        u = jnp.where(brk_a, 0.0, u / jnp.where(brk_a, 1.0, alpha))
        U = s["U"].at[j].set(u)
        w = _atu(W, u, transpose) - alpha * s["v"]
        w = _reorth(w, V, j + 1)
        beta = jnp.linalg.norm(w)
        anorm = jnp.maximum(anorm, beta)
        brk = brk_a | (beta <= _BREAKDOWN * eps * anorm)
        beta = jnp.where(brk, zero, beta)
        v = jnp.where(brk, 0.0, w / jnp.where(brk, 1.0, beta))
        alphas = s["alphas"].at[j].set(alpha)
        betas = s["betas"].at[j].set(beta)
        theta, converged = s["theta"], s["converged"]
        if adaptive:

            def check():
                # |sigma - sqrt(theta)| <= tol sigma for some singular value sigma once
                # residual <= 2 tol theta (Weyl: an eigenvalue of S lies within the residual).
                # The j x j tridiagonal eigenproblem is solved on the host (LAPACK, float64):
                # about 0.1 ms every check_every steps, and much cheaper to compile
                # than jax.scipy.linalg.eigh_tridiagonal, which also gives no eigenvector.
                out = jax.pure_callback(
                    _ritz_check_host,
                    jax.ShapeDtypeStruct((2,), dtype),
                    alphas,
                    betas,
                    j + 1,
                    vmap_method="sequential",
                )
                new, res = out[0], out[1]
                return new, res <= 2.0 * tol * new

            theta, converged = lax.cond(
                ((j + 1) % check_every == 0) & ~nonfinite, check, lambda: (theta, converged)
            )
        return dict(
            j=j + 1,
            U=U,
            V=V,
            alphas=alphas,
            betas=betas,
            u_prev=u,
            v=v,
            beta_prev=beta,
            anorm=anorm,
            theta=theta,
            done=brk | converged | nonfinite,
            breakdown=brk,
            converged=converged,
            nonfinite=nonfinite,
        )

    s = lax.while_loop(cond, body, state)
    return dict(
        steps=s["j"],
        alphas=s["alphas"],
        betas=s["betas"],
        V=s["V"],
        breakdown=s["breakdown"],
        converged=s["converged"],
        nonfinite=s["nonfinite"],
    )


@functools.partial(jax.jit, static_argnames=("transpose",))
def _ritz_vector(z: jax.Array, V: jax.Array, W: jax.Array, *, transpose: bool) -> jax.Array:
    """Right singular vector estimate of W from the Ritz vector z (padded to V's rows)."""
    x = jnp.matmul(z.astype(V.dtype), V, precision=_HI)
    if transpose:  # x estimates a right singular vector of W^T = a left one of W
        x = jnp.matmul(x, W, precision=_HI)
    nx = jnp.linalg.norm(x)
    return x / jnp.where(nx > 0, nx, 1.0)


@jax.jit
def _power_kernel(
    W: jax.Array, v0: jax.Array, tol: jax.Array, max_iter: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Power iteration on W^T W, as v <- (W @ v) @ W / norm; sigma = sqrt(||W^T W v||)."""
    v = v0 / jnp.linalg.norm(v0)
    zero = jnp.zeros((), W.dtype)
    state = (jnp.zeros((), jnp.int32), v, zero, jnp.zeros((), bool), jnp.zeros((), bool))

    def cond(s):
        return (s[0] < max_iter) & ~s[3]

    def body(s):
        i, v, sig_old, _, _ = s
        z = jnp.matmul(jnp.matmul(W, v, precision=_HI), W, precision=_HI)
        nz = jnp.linalg.norm(z)
        ok = nz > 0
        sig = jnp.sqrt(nz)  # sqrt(||W^T W v||) <= sigma_1 for a unit v
        v = jnp.where(ok, z / jnp.where(ok, nz, 1.0), v)
        converged = (jnp.abs(sig - sig_old) <= tol * sig) | ~ok
        return i + 1, v, sig, converged, converged

    i, v, sig, _, converged = lax.while_loop(cond, body, state)
    return sig, v, i, converged


@jax.jit
def _exact_kernel(W: jax.Array) -> jax.Array:
    return jnp.linalg.svd(W, compute_uv=False)[0]


@functools.partial(jax.jit, static_argnames=("iters",))
def _gram_kernel(W: jax.Array, *, iters: int) -> jax.Array:
    """Gram iteration (Delattre et al. 2023): sigma_1(W) <= ||G_t||_F^(1/2^t), G_{t+1} = G_t^T G_t.

    G is divided by its Frobenius norm r_t before each squaring and the scale kept in log space:
    log c_{t+1} = 2 (log c_t + log r_t), so G_t(true) = c_t G_t(stored) (arXiv:2305.16173).
    """
    G = W.T if W.shape[0] < W.shape[1] else W  # rows >= cols: the Gram matrices are the small ones
    log_c = jnp.zeros((), W.dtype)
    for _ in range(iters):
        r = jnp.linalg.norm(G)
        G = G / r
        log_c = 2.0 * (log_c + jnp.log(r))
        # G^T G without forming the transpose: contract the row axis of both operands.
        G = lax.dot_general(G, G, (((0,), (0,)), ((), ())), precision=_HI)
    return jnp.exp((log_c + jnp.log(jnp.linalg.norm(G))) / 2.0**iters)



def _round_up(k: int) -> int:
    return -(-k // _BLOCK) * _BLOCK


def bucket(d: int) -> int:
    """The padded size of a dimension d for the Krylov kernels: the smallest of 2^k and
    3 * 2^(k-1) that is >= d (less than 1.5 d; 784 -> 1024, 600 -> 768), so that layers of
    nearby shapes share one compiled kernel."""
    d = int(d)
    if d <= 4:
        return d
    p = 1 << (d - 1).bit_length()  # the power of two >= d
    return 3 * p // 4 if 3 * p // 4 >= d else p


def _lanczos_run(W, start, *, tol, steps, kbuf, transpose, adaptive):
    """Golub-Kahan-Lanczos on W, padded with zero rows and columns to `bucket` sizes.

    The padding changes nothing but the compiled shape: with the start vector zero on the
    padded coordinates, every Krylov vector stays zero there exactly (W's padded rows and
    columns are zero), so the iterates, the Ritz values and the certificate are those of W.
    The returned vector has W's own length.
    """
    m, n = W.shape
    pm, pn = bucket(m), bucket(n)
    if (pm, pn) != (m, n):
        W = jnp.pad(W, ((0, pm - m), (0, pn - n)))
        start = jnp.pad(start, (0, (pm - m) if transpose else (pn - n)))
    out = _gkl_kernel(
        W,
        start,
        jnp.asarray(tol, W.dtype),
        jnp.asarray(steps, jnp.int32),
        kbuf=kbuf,
        transpose=transpose,
        adaptive=adaptive,
    )
    j = int(out["steps"])
    alphas, betas = np.asarray(out["alphas"]), np.asarray(out["betas"])
    if bool(out["nonfinite"]) or not np.all(np.isfinite(alphas[:j]) & np.isfinite(betas[:j])):
        _raise_nonfinite(W)
    theta, z = _ritz_host(alphas, betas, j)
    z_pad = np.zeros(kbuf, np.float64)
    z_pad[:j] = z
    vec = _ritz_vector(jnp.asarray(z_pad, W.dtype), out["V"], W, transpose=transpose)
    return theta, vec[:n], j, bool(out["converged"]), bool(out["breakdown"])

