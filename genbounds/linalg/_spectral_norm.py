"""Norm kernels for dense weight matrices: spectral (exact, estimated, certified), Frobenius, (2,1).

The spectral norm ``||W||_2`` of a weight matrix is its largest singular value. Five methods:

- ``"certified"`` (the default) returns an upper bound that holds with probability at least
  ``1 - failure_probability`` over a random start vector, with a failure probability computed
  exactly (a regularised incomplete beta function), not taken from an unverified constant. It
  runs a fixed, a-priori number of Golub-Kahan-Lanczos steps. Derivation: docs/spectral_norms.md.
- ``"exact"``: the SVD, in the input dtype.
- ``"lanczos"``: Golub-Kahan-Lanczos bidiagonalisation with full reorthogonalisation, stopped on
  convergence. The fast estimate; it approaches the norm from below.
- ``"power"``: power iteration. An estimate from below.
- ``"gram"``: the Gram iteration of Delattre et al. (2023), a deterministic upper bound at
  O(min(m, n)^3) per step.

All matrix-vector products are written ``W @ v`` and ``u @ W`` (never ``W.T @ u``): on XLA CPU the
transposed form inside a loop is roughly 30x slower.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
from jax import lax

from genbounds.core._checks import check_choice, check_n, check_positive, check_unit_interval

__all__ = [
    "NormResult",
    "frobenius_norm",
    "log_norm_product",
    "norm_21",
    "spectral_norm",
]

_HI = lax.Precision.HIGHEST
_METHODS = ("certified", "exact", "lanczos", "power", "gram")
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
_DEFAULT_MAX_ITER = {"power": 1000, "lanczos": 300}

# Exact singular values by float64 LAPACK on the host (scipy gesdd) cost about 3e-10 s per unit
# of m * n * min(m, n) on 2 CPU cores: 8 ms at 256 x 256, 40 ms at 512 x 512, 0.26 s at
# 1024 x 1024. Below this size they are cheaper than compiling any jitted kernel (0.1-0.7 s per
# shape) and, at 512 x 512 (2^27), about as fast as a warm certified Lanczos run (~50 ms); above
# it the jitted Krylov kernels pay. Measured crossover: docs/benchmarks.md.
HOST_EXACT_MAX_WORK = 2**27
# Arrays up to this many entries are reduced (finiteness, Frobenius, (2,1)) on the host in
# float64 rather than by a jitted kernel compiled for their shape.
_HOST_REDUCE_MAX_SIZE = 2**22


class NormResult(NamedTuple):
    """The spectral norm of one matrix and how it was obtained.

    Attributes:
      value: the norm. For "certified" and "gram" an upper bound; for "exact" the SVD value; for
        "power" and "lanczos" an estimate that may lie below the true norm.
      method: the method that actually ran ("exact", "lanczos", "power", "certified-lanczos",
        "gram"). "certified" runs "exact" when the Krylov steps it needs are at least the
        smaller side of the matrix, and then says "exact".
      estimated: True when `value` may lie below the true norm (power, lanczos).
      failure_probability: probability over the random start that a certified `value` lies
        below the true norm; 0.0 for deterministic methods and for the estimates.
      iterations: matrix-vector iteration count (power iterations, Lanczos steps, Gram
        squarings); 0 for "exact".
      lower: a lower estimate when one is available (the Ritz value for Lanczos-based methods,
        the estimate itself for power, the value for exact), else None.
      vector: an estimate of the right singular vector (shape ``(W.shape[1],)``), usable as a
        warm start ``v0``; None when the method gives none.
    """

    value: float
    method: str
    estimated: bool
    failure_probability: float
    iterations: int
    lower: float | None
    vector: jax.Array | None


# --------------------------------------------------------------------------------------------
# Argument handling (Python, before any jitted work)
# --------------------------------------------------------------------------------------------


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _compute_dtype(dtype: Any) -> Any:
    """The dtype to compute in: at least float32 (float16, bfloat16 and integers are promoted).

    float64 is kept only when jax_enable_x64 is on (otherwise jax would truncate it anyway).
    """
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError("W must be a real matrix, got a complex dtype " + str(dtype))
    if jnp.issubdtype(dtype, jnp.floating):
        return jax.dtypes.canonicalize_dtype(jnp.promote_types(dtype, jnp.float32))
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _as_array(x: Any, name: str, ranks: tuple[int, ...]) -> jax.Array:
    """Converts to a jax array of a real float dtype and checks the rank and emptiness."""
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    if not isinstance(x, jax.Array):
        try:
            arr = np.asarray(x)
        except Exception as e:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from e
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        x = arr
    if x.ndim not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} must have rank {want}, got shape {tuple(x.shape)}")
    if x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    dtype = _compute_dtype(x.dtype)
    return jnp.asarray(x, dtype=dtype)


@jax.jit
def _scan_matrix(W: jax.Array) -> tuple[jax.Array, jax.Array]:
    # One fused pass over W: (all entries finite, some entry nonzero).
    return jnp.all(jnp.isfinite(W)), jnp.any(W != 0)


def _check_finite(x: jax.Array, name: str) -> bool:
    """Raises unless every entry is finite; returns whether some entry is nonzero."""
    finite, nonzero = _scan_matrix(x)
    if not bool(finite):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x))))
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite entries")
    return bool(nonzero)


def _raise_nonfinite(W: jax.Array) -> None:
    """Called when a kernel produced NaN/inf: name the cause (bad entries, or overflow)."""
    _check_finite(W, "W")  # raises when W holds NaN or inf
    raise ValueError(
        f"W is finite but its norm overflows {W.dtype} (largest entry "
        f"{float(jnp.max(jnp.abs(W))):.3g}); rescale W or pass float64 with jax_enable_x64"
    )


def _check_key(key: Any) -> jax.Array:
    if key is None:
        # A fixed key chosen before any W is seen; see the docstring of `spectral_norm`.
        return jax.random.key(0)
    if isinstance(key, jax.Array) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        return key
    raise TypeError(
        f"key must be a jax.random key (jax.random.key(seed)) or None, got {type(key).__name__}"
    )


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


# --------------------------------------------------------------------------------------------
# Jitted kernels
# --------------------------------------------------------------------------------------------


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


@jax.jit
def _frobenius_kernel(W: jax.Array) -> jax.Array:
    m = jnp.max(jnp.abs(W))
    s = jnp.where(m > 0, m, 1.0)  # scale by the largest entry: no overflow of the squares
    return s * jnp.sqrt(jnp.sum(jnp.square(W / s)))


@jax.jit
def _norm_21_kernel(W: jax.Array) -> jax.Array:
    m = jnp.max(jnp.abs(W))
    s = jnp.where(m > 0, m, 1.0)
    return s * jnp.sum(jnp.sqrt(jnp.sum(jnp.square(W / s), axis=0)))


# --------------------------------------------------------------------------------------------
# The certificate (host, float64): failure probability and number of steps
# --------------------------------------------------------------------------------------------


def _log_chebyshev(m: int, x: float) -> float:
    """log T_m(x) for x > 1, without overflow: T_m(x) = cosh(m acosh x)."""
    d = x - 1.0
    a = math.log1p(d + math.sqrt(d * (2.0 + d)))  # acosh(1 + d), accurate for small d
    return m * a + math.log1p(math.exp(-2.0 * m * a)) - math.log(2.0)


def _certificate_failure(k: int, eps: float, q: int) -> float:
    """P(theta_k < (1 - eps) lambda_1) is at most this, for a start uniform on S^{q-1}.

    With x = (1 + eps)/(1 - eps) and T_{k-1} the Chebyshev polynomial, the failure event lies in
    {c_1^2 < tau}, tau = (1 - eps) / (eps T_{k-1}(x)^2 + 1 - eps), and c_1^2 ~ Beta(1/2, (q-1)/2),
    so the probability is the regularised incomplete beta function I_tau(1/2, (q-1)/2).
    Derivation: docs/spectral_norms.md.
    """
    if q <= 1:
        return 0.0  # c_1^2 = 1 surely, and tau < 1
    log_t = _log_chebyshev(k - 1, (1.0 + eps) / (1.0 - eps))
    log_tau = math.log1p(-eps) - float(np.logaddexp(math.log(eps) + 2.0 * log_t, math.log1p(-eps)))
    return float(scipy.special.betainc(0.5, 0.5 * (q - 1), math.exp(log_tau)))


@functools.lru_cache(maxsize=256)
def _certificate_plan(q: int, eta: float, rtol: float) -> tuple[int, float]:
    """The number of Lanczos steps k and the slack eps of the certified bound.

    k is the smallest number of steps whose failure probability at eps_target is <= eta, where
    eps_target = 1 - (1 + rtol)^-2 makes sqrt(theta/(1 - eps_target)) = (1 + rtol) sqrt(theta).
    eps is then the smallest slack with failure probability <= eta after k steps (<= eps_target).
    Both depend on (q, eta, rtol) only, never on W.
    """
    eps_t = 1.0 - (1.0 + rtol) ** -2
    if q <= 1:
        return 1, eps_t
    # First guess from the closed form tau(k, eps_t) <= tau*, then exact integer search.
    tau_star = float(scipy.special.betaincinv(0.5, 0.5 * (q - 1), eta))
    x = (1.0 + eps_t) / (1.0 - eps_t)
    acosh_x = math.log1p((x - 1.0) + math.sqrt((x - 1.0) * (x + 1.0)))
    if tau_star > 0.0:
        ratio = max((1.0 / tau_star - 1.0) * (1.0 - eps_t) / eps_t, 1.0)
        k = 1 + max(0, math.ceil(math.acosh(math.sqrt(ratio)) / acosh_x))
    else:
        k = 1
    while k > 1 and _certificate_failure(k - 1, eps_t, q) <= eta:
        k -= 1
    while _certificate_failure(k, eps_t, q) > eta:
        k += 1
    # Smallest eps with failure(k, eps) <= eta: failure decreases in eps; solve in log eps.
    lo, hi = math.log(1e-300), math.log(eps_t)
    if _certificate_failure(k, math.exp(lo), q) <= eta:
        return k, math.exp(lo)
    root = scipy.optimize.brentq(
        lambda t: _certificate_failure(k, math.exp(t), q) - eta, lo, hi, xtol=1e-13, rtol=1e-13
    )
    eps = math.exp(root)
    while _certificate_failure(k, eps, q) > eta:  # guard the root against rounding
        eps = min(eps * (1.0 + 1e-12), eps_t)
        if eps == eps_t:
            break
    return k, eps


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


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


def spectral_norm(
    W: jax.typing.ArrayLike,
    *,
    method: str = "certified",
    key: jax.Array | None = None,
    v0: jax.typing.ArrayLike | None = None,
    tol: float = 1e-6,
    max_iter: int | None = None,
    rtol: float = 1e-3,
    failure_probability: float = 1e-6,
    gram_iters: int = 10,
) -> NormResult:
    r"""The spectral norm (largest singular value) $\|W\|_2 = \sigma_1(W)$ of a matrix.

    For a Flax ``Dense`` kernel of shape ``(in, out)`` this is the operator norm of the layer's
    linear map (orientation does not matter). The default method is **sound**: its value is
    never below $\sigma_1(W)$ beyond floating-point rounding, except with probability at most
    ``failure_probability`` over the random start drawn from ``key``.

    **Certified bound** (``method="certified"``). Let $A$ be $W$ oriented so that
    $S = A^\top A$ is $q \times q$ with $q = \min(W.\text{shape})$, $\lambda_1 = \sigma_1^2$ its
    largest eigenvalue, $b$ uniform on the unit sphere of $\mathbb{R}^q$ and $\theta_k$ the
    largest Ritz value of $S$ on the Krylov space $K_k(S, b)$ (k Golub-Kahan-Lanczos steps).
    For every $\varepsilon \in (0, 1)$,

    $$P\big(\theta_k < (1-\varepsilon)\lambda_1\big) \le
      I_\tau\big(\tfrac12, \tfrac{q-1}{2}\big), \qquad
      \tau = \frac{1-\varepsilon}{\varepsilon\, T_{k-1}\big(\tfrac{1+\varepsilon}{1-\varepsilon}
      \big)^2 + 1 - \varepsilon},$$

    with $T_{k-1}$ the Chebyshev polynomial and $I$ the regularised incomplete beta function
    (the law of $\langle b, v_1\rangle^2$ is exactly Beta(1/2, (q-1)/2)); the argument is that of
    Kuczyński & Woźniakowski (1992) with the probability computed exactly. The step count $k$ is
    the smallest with failure $\le \eta$ = ``failure_probability`` at the slack
    $\varepsilon_0 = 1 - (1+\text{rtol})^{-2}$; then $\varepsilon \le \varepsilon_0$ is the
    smallest slack with failure $\le \eta$ after $k$ steps, and the value is
    $\sqrt{\theta_k / (1-\varepsilon)}$, so that
    $\sigma_1 \le \text{value} \le (1+\text{rtol})\,\sigma_1$ (the first with probability
    $\ge 1-\eta$, the second always, up to rounding). $k$ and $\varepsilon$ depend on
    $(q, \eta, \text{rtol})$ only, never on $W$. When $k \ge q$ the exact SVD runs instead
    (deterministic, failure probability 0). A bound that uses certified norms of L layers holds
    with probability $\ge 1 - \delta - L\eta$ (union bound): charge $L\eta$ to its $\delta$.

    The guarantee is over the random start: ``key`` must be chosen independently of ``W`` (not
    after looking at it). ``key=None`` uses the fixed key ``jax.random.key(0)``, which is
    reproducible and independent of any trained weights, but for a formal guarantee pass a fresh
    key. The probability statement is for exact arithmetic; the computation in the input dtype
    adds rounding-level deviations. Derivation: docs/spectral_norms.md.

    **Other methods.** ``"exact"``: the largest singular value by float64 LAPACK (scipy's
    ``svdvals``) on the host when $m\,n\,\min(m, n) \le 2^{27}$ (up to about 512 x 512, where
    that is cheaper than compiling a kernel; docs/benchmarks.md), else ``jnp.linalg.svd`` in the
    input dtype. ``"lanczos"``:
    Golub-Kahan-Lanczos with full reorthogonalisation until the residual of the top Ritz pair
    shows that $\sqrt{\theta}$ is within relative ``tol`` of a singular value of W (checked every
    2 to 8 steps, by size); an estimate from below, warm-startable with ``v0``.
    ``"power"``: power iteration ``v <- (W @ v) @ W``, until the relative change is at most
    ``tol``; an estimate from below. ``"gram"``: ``gram_iters`` Gram squarings (Delattre et al.
    2023), $\sigma_1 \le \|G_t\|_F^{2^{-t}}$, deterministic; its slack is at most a factor
    $q^{2^{-t-1}}$ and its cost O(q^3) per squaring.

    Not for use under ``jax.jit``: the result holds Python floats. The kernels themselves are
    jitted and are not recompiled for a second matrix of the same shape and dtype.

    Args:
      W: a real matrix of shape (m, n), m, n >= 1, finite. float16/bfloat16 and integer inputs
        compute in float32 (float64 for integers when x64 is enabled).
      method: "certified" (default), "exact", "lanczos", "power" or "gram".
      key: jax.random key for the random start (certified, and lanczos/power without ``v0``).
      v0: warm start of shape (n,) for "lanczos" and "power" (e.g. a previous result's
        ``vector``); ignored by "exact" and "gram"; not allowed with "certified", whose start
        must be uniformly random.
      tol: convergence tolerance (> 0) of "lanczos" and "power".
      max_iter: iteration cap (>= 1) of "lanczos" (default 300, also capped at min(m, n)) and
        "power" (default 1000). A run that reaches it without converging warns.
      rtol: target relative slack (> 0) of the certified bound over the Ritz value.
      failure_probability: eta in (0, 1) for "certified".
      gram_iters: number of Gram squarings (>= 1) for "gram".

    Returns:
      A `NormResult` (value, method that ran, estimated, failure_probability, iterations,
      lower, vector).

    Raises:
      TypeError: ``W`` is not a real numeric array; ``key`` is not a jax random key.
      ValueError: ``W`` is not 2-D, is empty or holds NaN/inf, or its norm overflows its dtype;
        an unknown ``method``;
        ``failure_probability`` outside (0, 1); ``tol`` or ``rtol`` not > 0; ``max_iter`` or
        ``gram_iters`` not an integer >= 1; ``v0`` with "certified", or of the wrong shape, zero
        or not finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> from genbounds import spectral_norm
      >>> W = jnp.diag(jnp.array([3.0, 1.0, 0.5]))
      >>> round(spectral_norm(W, method="exact").value, 5)
      3.0
      >>> spectral_norm(W).method  # 3 columns: exact is cheaper than any certificate
      'exact'

    References:
      J. Kuczyński and H. Woźniakowski, "Estimating the largest eigenvalue by the power and
      Lanczos algorithms with a random start", SIAM J. Matrix Anal. Appl. 13(4), 1992.
      G. Golub and W. Kahan, "Calculating the singular values and pseudo-inverse of a matrix",
      SIAM J. Numer. Anal. 2(2), 1965.
      B. Delattre, Q. Barthélemy, A. Araujo and A. Allauzen, "Efficient bound of Lipschitz
      constant for convolutional layers by Gram iteration", ICML 2023 (PMLR 202).
    """
    method = check_choice(method, "method", _METHODS)
    W = _as_array(W, "W", (2,))
    tol = check_positive(tol, "tol")
    rtol = check_positive(rtol, "rtol")
    eta = check_unit_interval(failure_probability, "failure_probability", closed=False)
    gram_iters = check_n(gram_iters, "gram_iters")
    if max_iter is None:
        max_iter = _DEFAULT_MAX_ITER.get(method, 1)
    max_iter = check_n(max_iter, "max_iter")
    if key is not None:
        key = _check_key(key)  # validated now; the default key is made only where one is used
    m, n = W.shape
    if v0 is not None:
        if method == "certified":
            raise ValueError(
                "v0 cannot be used with method='certified': the certificate needs a start "
                "vector drawn uniformly at random (from key), independently of W"
            )
        v0 = _as_array(v0, "v0", (1,))
        if v0.shape != (n,):
            raise ValueError(f"v0 must have shape ({n},) (W.shape[1]), got {tuple(v0.shape)}")
        if not _check_finite(v0, "v0"):
            raise ValueError("v0 must be nonzero, got the zero vector")
        v0 = v0.astype(W.dtype)
    transpose = m < n  # A = W^T when W is wide, so that q = min(m, n) is A's column count
    q = min(m, n)

    if method in ("exact", "gram") or (
        method == "certified" and _certificate_plan(q, eta, rtol)[0] >= q
    ):
        if method != "gram" and host_exact_is_cheaper(W.shape) and _host_ok(W):
            # Small: float64 LAPACK on the host, exact and cheaper than compiling a kernel.
            value = _host_sigma_max(_host_float64(W, "W"))
            if not value <= float(jnp.finfo(W.dtype).max):
                _raise_nonfinite(jnp.asarray(W))  # the norm overflows W's dtype
            return NormResult(value, "exact", False, 0.0, 0, value, None)
        # An explicit pass over W (cheap next to an SVD or a Gram squaring). The iterative methods
        # skip it: their first matrix-vector product reveals any NaN/inf entry.
        if not _check_finite(W, "W"):
            return NormResult(0.0, "exact", False, 0.0, 0, 0.0, None)
        if method == "gram":
            value = float(_gram_kernel(W, iters=gram_iters))
            if not math.isfinite(value):
                _raise_nonfinite(W)
            return NormResult(value, "gram", False, 0.0, gram_iters, None, None)
        value = float(_exact_kernel(W))
        if not math.isfinite(value):
            _raise_nonfinite(W)
        return NormResult(value, "exact", False, 0.0, 0, value, None)

    key = _check_key(key)
    if method == "power":
        start = v0 if v0 is not None else jax.random.normal(key, (n,), W.dtype)
        sig, vec, it, converged = _power_kernel(
            W, start, jnp.asarray(tol, W.dtype), jnp.asarray(max_iter, jnp.int32)
        )
        if not math.isfinite(float(sig)):
            _raise_nonfinite(W)
        if not bool(converged):
            warnings.warn(
                f"power iteration did not reach tol={tol} in max_iter={max_iter} iterations; "
                "the estimate may be well below the norm",
                RuntimeWarning,
                stacklevel=2,
            )
        value = float(sig)
        return NormResult(value, "power", True, 0.0, int(it), value, vec)

    if method == "lanczos":
        if v0 is None:
            start = jax.random.normal(key, (q,), W.dtype)
        else:  # the start lives on A's column side: W @ v0 when A = W^T
            start = jnp.matmul(W, v0, precision=_HI) if transpose else v0
        steps = min(max_iter, q)
        theta, vec, j, converged, breakdown = _lanczos_run(
            W,
            start,
            tol=tol,
            steps=steps,
            kbuf=_round_up(steps),
            transpose=transpose,
            adaptive=True,
        )
        if not (converged or breakdown or j >= q):
            warnings.warn(
                f"lanczos did not reach tol={tol} in max_iter={max_iter} steps; the estimate "
                "may be below the norm",
                RuntimeWarning,
                stacklevel=2,
            )
        value = math.sqrt(theta)
        return NormResult(value, "lanczos", True, 0.0, j, value, vec)

    # method == "certified", with k < q steps.
    k, eps = _certificate_plan(q, eta, rtol)
    start = jax.random.normal(key, (q,), W.dtype)  # uniform direction on the sphere
    theta, vec, j, _, _ = _lanczos_run(
        W, start, tol=tol, steps=k, kbuf=_round_up(k), transpose=transpose, adaptive=False
    )
    # theta_k >= (1 - eps) lambda_1 except with probability <= eta; an early breakdown means the
    # Krylov space is invariant, and then theta_j = theta_k.
    value = math.sqrt(theta / (1.0 - eps))
    if not math.isfinite(value):
        _raise_nonfinite(W)
    return NormResult(value, "certified-lanczos", False, eta, j, math.sqrt(theta), vec)


def frobenius_norm(W: jax.typing.ArrayLike) -> jax.Array:
    r"""The Frobenius norm $\|W\|_F = (\sum_{ij} W_{ij}^2)^{1/2}$ of a weight array.

    Computed with the largest entry factored out, so that squares neither overflow nor underflow.
    Usable under ``jax.jit`` (the finiteness check is skipped for traced input).

    Args:
      W: a real array of rank >= 1 (a Dense kernel (in, out), or any kernel: all entries count).

    Returns:
      A scalar jax.Array in W's dtype (float32 at least).

    Raises:
      TypeError: W is not a real numeric array.
      ValueError: W is a scalar, empty, or holds NaN/inf, or its norm overflows W's dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from genbounds import frobenius_norm
      >>> float(frobenius_norm(jnp.ones((2, 8))))
      4.0
    """
    ranks = tuple(range(1, 33))
    host = _host_reduce(W, "W", ranks, None)
    if host is not None:
        return _finite_norm(host, W)
    return _finite_norm(_frobenius_kernel(_validated(W, "W", ranks)), W)


def _finite_norm(value: jax.Array, W: Any) -> jax.Array:
    """A norm computed on concrete input must be finite: overflow of W's dtype raises."""
    if not _is_tracer(value) and not bool(jnp.isfinite(value)):
        _raise_nonfinite(jnp.asarray(W))
    return value


def norm_21(W: jax.typing.ArrayLike) -> jax.Array:
    r"""The (2,1) norm $\|A^\top\|_{2,1} = \sum_j \|W_{:,j}\|_2$ of a Dense kernel $W$ (in, out).

    Bartlett, Foster & Telgarsky (2017) write a layer as $x \mapsto A x$ with $A = W^\top$ of shape
    (out, in), and define $\|M\|_{p,q}$ as the q-norm of the p-norms of the columns of M. So
    $\|A^\top\|_{2,1}$ sums, over the layer's **output units**, the 2-norm of each unit's incoming
    weights: for a Flax kernel (in, out) that is the sum over its columns.

    Args:
      W: a real matrix of shape (in, out).

    Returns:
      A scalar jax.Array.

    Raises:
      TypeError: W is not a real numeric array.
      ValueError: W is not 2-D, is empty, or holds NaN/inf, or the norm overflows W's dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from genbounds import norm_21
      >>> float(norm_21(jnp.eye(4)))
      4.0
      >>> float(norm_21(jnp.array([[3.0, 0.0], [4.0, 1.0]])))  # columns (3, 4) and (0, 1)
      6.0

    References:
      P. Bartlett, D. Foster and M. Telgarsky, "Spectrally-normalized margin bounds for neural
      networks", NeurIPS 2017, arXiv:1706.08498 (eq. 1.2 and the norm definition before it).
    """
    host = _host_reduce(W, "W", (2,), 0)
    if host is not None:
        return _finite_norm(host, W)
    return _finite_norm(_norm_21_kernel(_validated(W, "W", (2,))), W)


def _host_reduce(W: Any, name: str, ranks: tuple[int, ...], axis: int | None) -> jax.Array | None:
    """Frobenius (axis None) or (2,1) (axis 0) norm in float64 on the host, or None when W
    should go to the jitted kernel (traced, or large and off the CPU). Same validation."""
    if not _host_ok(W):
        return None
    W = _as_array(W, name, ranks)  # type, rank and emptiness checks; the compute dtype
    A = _host_float64(W, name)
    m = float(np.max(np.abs(A)))
    s = m if m > 0 else 1.0  # scale by the largest entry: no overflow of the squares
    sq = np.square(A / s)
    value = s * (math.sqrt(float(np.sum(sq))) if axis is None else float(np.sum(np.sqrt(
        np.sum(sq, axis=axis)))))
    if not value <= float(jnp.finfo(W.dtype).max):
        _raise_nonfinite(jnp.asarray(W))  # the norm overflows W's dtype
    return jnp.asarray(value, dtype=W.dtype)


def _validated(W: Any, name: str, ranks: tuple[int, ...]) -> jax.Array:
    if _is_tracer(W):
        if W.ndim not in ranks:
            want = " or ".join(str(r) for r in ranks[:3]) + (" ..." if len(ranks) > 3 else "")
            raise ValueError(f"{name} must have rank {want}, got shape {tuple(W.shape)}")
        return W.astype(_compute_dtype(W.dtype))
    W = _as_array(W, name, ranks)
    _check_finite(W, name)
    return W


def log_norm_product(norms: Any) -> jax.Array:
    r"""$\log \prod_i s_i = \sum_i \log s_i$ for positive norms $s_i$ (no overflow/underflow).

    The product of the spectral norms of 100+ layers easily leaves the float range; its logarithm
    does not. Exponentiate only at the end (or compare logs).

    Args:
      norms: positive finite numbers: a sequence, a 1-D array, or a mapping (its values are used,
        e.g. the output of ``spectral_norms``).

    Returns:
      A scalar jax.Array (float64 under x64, else float32).

    Raises:
      TypeError: norms is not numeric.
      ValueError: norms is empty, not 1-D, or holds a value <= 0, NaN or inf.

    Examples:
      >>> from genbounds import log_norm_product
      >>> import math
      >>> math.isclose(float(log_norm_product([10.0] * 200)), 200 * math.log(10.0), rel_tol=1e-6)
      True
    """
    if isinstance(norms, Mapping):
        norms = list(norms.values())
    if _is_tracer(norms):
        return jnp.sum(jnp.log(norms.astype(_compute_dtype(norms.dtype))))
    if isinstance(norms, (list, tuple)) and any(_is_tracer(s) for s in norms):
        return jnp.sum(jnp.log(jnp.stack([jnp.asarray(s) for s in norms])))
    if isinstance(norms, (list, tuple)):
        norms = [np.asarray(s) for s in norms]
        if any(s.ndim != 0 for s in norms):
            raise ValueError("norms must be a sequence of scalars, got a non-scalar element")
        norms = np.stack(norms) if norms else np.zeros((0,))
    arr = np.asarray(norms)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"norms must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"norms must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("norms must not be empty, got no values")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        bad = arr[~(np.isfinite(arr) & (arr > 0))]
        raise ValueError(f"norms must be finite and > 0, got {bad.tolist()[:5]}")
    return jnp.sum(jnp.log(jnp.asarray(arr, _compute_dtype(arr.dtype))))
