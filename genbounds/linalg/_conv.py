r"""Operator norms of convolution layers (Flax layout), exact, estimated and certified.

A Flax ``Conv`` layer with kernel ``K`` of shape ``(*window, c_in, c_out)`` is the linear map
$T: x \mapsto \mathrm{conv}(x, K)$ on inputs of shape ``(*input_shape, c_in)``
(``lax.conv_general_dilated``, cross-correlation, NHWC / HWIO). Its operator norm
$\|T\|_2$ is what a spectral bound needs; it is *not* the spectral norm of the reshaped
kernel. This module computes $\|T\|_2$ three ways:

* ``"exact"``: by FFT for circular padding (Sedghi, Gupta & Long 2019; with strides, the
  polyphase form of the same computation), else by the SVD of the explicit operator matrix
  (small operators only).
* ``"power"``: a power-type Krylov method (restarted Lanczos) on $T^\top T$, with the
  convolution and its transpose as matvecs (an estimate from below).
* ``"certified"`` (default): a deterministic upper bound, never below $\|T\|_2$ beyond
  floating-point rounding: exact for circular padding; for zero padding and strides the norm of
  the circular (polyphase) operator on a grid $N_d \ge n_d + k_d - 1$ into which the layer
  embeds; without an input shape, a bound on $\sup_\theta \|\hat K(\theta)\|_2$ valid for
  every input size. The derivations are in ``docs/conv_norms.md``.

Every entry point validates its arguments in Python, then calls jitted kernels whose static
arguments are shapes, strides and padding only, so a second call with the same shapes does not
recompile.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from genbounds.core._checks import check_choice, check_n, check_positive

from ._spectral_norm import NormResult

_METHODS = ("certified", "exact", "power")
_PAD_STRINGS = ("SAME", "SAME_LOWER", "VALID", "CIRCULAR", "CAUSAL")
# "exact" on a non-circular layer builds the explicit matrix: at most this many rows and columns.
_EXPLICIT_MAX = 4096
# Unknown input shape: the grid is chosen so that alpha = pi * sum_d m_d / Q_d <= this target
# (the second-order Bernstein factor is then 1/sqrt(1 - alpha^2/2) <= 1.0025) ...
_SUP_TARGET_ALPHA = 0.1
# ... unless the grid would cost more than _SUP_MAX_WORK units of (frequencies x rows x cols x
# min(rows, cols)), the per-frequency SVDs, or hold more than _SUP_MAX_FREQS frequencies; a grid
# of _SUP_MIN_FREQS frequencies is always allowed. (c = 64 channels, 3x3: alpha = 0.1, ~8000
# frequencies; c = 256: alpha ~ 0.4, factor ~1.04.)
_SUP_MAX_WORK = 2.0**31
_SUP_MAX_FREQS = 2**16
_SUP_MIN_FREQS = 2**10
# Krylov dimension of one Lanczos cycle (method "power").
_KRYLOV_DIM = 32
# Frequencies are processed in chunks of about this many complex matrix entries.
_CHUNK_ENTRIES = 2**21


# --------------------------------------------------------------------------------------------
# Argument checking (Python, concrete values, before any jitted work).
# --------------------------------------------------------------------------------------------


def _check_kernel(kernel: Any) -> jax.Array:
    if kernel is None:
        raise TypeError("kernel must be an array of shape (*window, in, out), got None")
    if not isinstance(kernel, (jax.Array, np.ndarray)):
        try:
            kernel = np.asarray(kernel)
        except Exception as e:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(f"kernel must be array-like, got {type(kernel).__name__}") from e
    dtype = np.dtype(kernel.dtype)
    if dtype.kind == "O" or not (
        np.issubdtype(dtype, np.floating)
        or np.issubdtype(dtype, np.integer)
        or np.issubdtype(dtype, np.bool_)
    ):
        raise TypeError(f"kernel must be a real numeric array, got dtype {dtype}")
    if kernel.ndim < 3:
        raise ValueError(
            "kernel must have rank >= 3, shape (*window, in_channels, out_channels) in Flax "
            f"layout, got shape {tuple(kernel.shape)}"
        )
    if kernel.size == 0:
        raise ValueError(f"kernel must not be empty, got shape {tuple(kernel.shape)}")
    if np.issubdtype(dtype, np.floating) and not bool(np.all(np.isfinite(np.asarray(kernel)))):
        bad = int(kernel.size - np.count_nonzero(np.isfinite(np.asarray(kernel))))
        raise ValueError(f"kernel must be finite, got {bad} NaN or infinite entries")
    if not np.issubdtype(dtype, np.floating):
        kernel = jnp.asarray(kernel, dtype=jnp.result_type(float))
    return jnp.asarray(kernel)


def _check_int_tuple(x: Any, name: str, rank: int, *, what: str) -> tuple[int, ...]:
    """An int (broadcast, if allowed) or a sequence of `rank` ints, each >= 1."""
    if isinstance(x, (numbers.Integral, np.integer)) and not isinstance(x, bool):
        x = (int(x),) * rank
    if not isinstance(x, Sequence) or isinstance(x, str):
        raise TypeError(f"{name} must be {what}, got {x!r}")
    if len(x) != rank:
        raise ValueError(
            f"{name} must have one entry per spatial axis of the kernel ({rank}), got {tuple(x)!r}"
        )
    out = []
    for v in x:
        if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
            raise TypeError(f"{name} must hold integers, got {tuple(x)!r}")
        if int(v) < 1:
            raise ValueError(f"{name} must hold integers >= 1, got {tuple(x)!r}")
        out.append(int(v))
    return tuple(out)


def _check_input_shape(input_shape: Any, rank: int) -> tuple[int, ...] | None:
    if input_shape is None:
        return None
    if isinstance(input_shape, (numbers.Integral, np.integer)) and not isinstance(
        input_shape, bool
    ):
        raise TypeError(
            f"input_shape must be a tuple of {rank} spatial sizes (channels excluded), "
            f"got the int {input_shape!r}"
        )
    return _check_int_tuple(
        input_shape, "input_shape", rank, what=f"a tuple of {rank} spatial sizes"
    )


def _check_padding(padding: Any, window: tuple[int, ...]) -> str | tuple[tuple[int, int], ...]:
    """Canonical padding: one of _PAD_STRINGS except CAUSAL, or explicit (lo, hi) pairs.

    Mirrors ``flax.linen.linear.canonicalize_padding``: an int p means (p, p) on every axis, a
    sequence holds per-axis ints or (lo, hi) pairs; 'CAUSAL' (1-D only) is ((k - 1, 0),).
    """
    rank = len(window)
    if isinstance(padding, str):
        if padding not in _PAD_STRINGS:
            raise ValueError(
                f"padding must be one of {', '.join(map(repr, _PAD_STRINGS))} or explicit "
                f"(lo, hi) pairs per spatial axis; got {padding!r}"
            )
        if padding == "CAUSAL":
            if rank != 1:
                raise ValueError(
                    f"padding 'CAUSAL' is only defined for 1-D convolutions (as in Flax), got a "
                    f"{rank}-D window {window}"
                )
            return ((window[0] - 1, 0),)
        return padding
    if isinstance(padding, (numbers.Integral, np.integer)) and not isinstance(padding, bool):
        return ((int(padding), int(padding)),) * rank
    if isinstance(padding, Sequence) and len(padding) == rank:
        pairs = []
        for p in padding:
            if isinstance(p, (numbers.Integral, np.integer)) and not isinstance(p, bool):
                pairs.append((int(p), int(p)))
            elif (
                isinstance(p, Sequence)
                and len(p) == 2
                and all(
                    isinstance(q, (numbers.Integral, np.integer)) and not isinstance(q, bool)
                    for q in p
                )
            ):
                pairs.append((int(p[0]), int(p[1])))
            else:
                break
        if len(pairs) == rank:
            return tuple(pairs)
    raise ValueError(
        f"padding must be 'SAME', 'VALID', 'CIRCULAR', 'SAME_LOWER', 'CAUSAL', an int, or a "
        f"sequence of {rank} ints or (lo, hi) integer pairs; got {padding!r}"
    )


class _Geometry(NamedTuple):
    window: tuple[int, ...]
    c_in: int
    c_out: int
    strides: tuple[int, ...]
    circular: bool
    # explicit zero-padding pairs (None if circular, or if the input shape is unknown)
    pads: tuple[tuple[int, int], ...] | None
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None

    @property
    def static_padding(self) -> str | tuple[tuple[int, int], ...]:
        return "CIRCULAR" if self.circular else self.pads


def _geometry(kernel: jax.Array, input_shape: Any, strides: Any, padding: Any) -> _Geometry:
    window = tuple(int(k) for k in kernel.shape[:-2])
    rank = len(window)
    c_in, c_out = int(kernel.shape[-2]), int(kernel.shape[-1])
    strides = _check_int_tuple(strides, "strides", rank, what="an int or a tuple of ints")
    padding = _check_padding(padding, window)
    input_shape = _check_input_shape(input_shape, rank)
    circular = padding == "CIRCULAR"
    pads = out = None
    if input_shape is not None:
        if circular:
            # Flax pads with wrap by ((k-1)//2, k//2), then convolves with 'VALID'.
            out = tuple((n - 1) // s + 1 for n, s in zip(input_shape, strides, strict=True))
        else:
            if isinstance(padding, str):
                pads = tuple(
                    (int(lo), int(hi))
                    for lo, hi in lax.padtype_to_pads(input_shape, window, strides, padding)
                )
            else:
                pads = padding
            out = tuple(
                (n + lo + hi - k) // s + 1 if n + lo + hi >= k else 0
                for n, k, s, (lo, hi) in zip(input_shape, window, strides, pads, strict=True)
            )
            if min(out) < 1:
                raise ValueError(
                    f"input_shape {input_shape} is too small for a window {window} with padding "
                    f"{padding!r}: the convolution has no output (output shape {out})"
                )
    return _Geometry(window, c_in, c_out, strides, circular, pads, input_shape, out)


# --------------------------------------------------------------------------------------------
# The convolution map (what Flax's Conv computes, without batch or bias).
# --------------------------------------------------------------------------------------------


def _dimension_numbers(rank: int) -> lax.ConvDimensionNumbers:
    # As flax.linen.linear._conv_dimension_numbers: NHWC input, HWIO kernel.
    ndim = rank + 2
    lhs = (0, ndim - 1) + tuple(range(1, ndim - 1))
    rhs = (ndim - 1, ndim - 2) + tuple(range(0, ndim - 2))
    return lax.ConvDimensionNumbers(lhs, rhs, lhs)


def _conv_map(kernel: jax.Array, x: jax.Array, strides, padding) -> jax.Array:
    """The layer's linear map on one unbatched input ``x`` of shape (*input_shape, c_in)."""
    window = kernel.shape[:-2]
    x = x[None]
    if padding == "CIRCULAR":
        pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in window] + [(0, 0)]
        x = jnp.pad(x, pads, mode="wrap")
        padding = "VALID"
    y = lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=padding,
        dimension_numbers=_dimension_numbers(len(window)),
        precision=lax.Precision.HIGHEST,
    )
    return y[0]


# --------------------------------------------------------------------------------------------
# Frequency-domain kernels.
# --------------------------------------------------------------------------------------------


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
    return m / np.sqrt(n_alias)


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


# --------------------------------------------------------------------------------------------
# Bounds assembled in Python from the kernels' outputs.
# --------------------------------------------------------------------------------------------


def _rounding_slack(kernel64: np.ndarray, dtype: Any, rows: int, cols: int) -> float:
    """A generous allowance for rounding in the frequency-domain computation.

    Each entry of K_hat is a T-term sum of K_p times computed cosines/sines; a backward-stable
    SVD follows. First-order worst-case rounding is of order
    eps (T + m + 2 pi D) sum_p ||K_p||_F; we add 4 times that (about 1e-13 relative in float64,
    1e-4 in float32). It is an allowance, not a proof about floating point.
    """
    eps = float(jnp.finfo(dtype).eps)
    window = kernel64.shape[:-2]
    n_taps = math.prod(window)
    tap_fro = float(np.sum(np.linalg.norm(kernel64.reshape(n_taps, -1), axis=1)))
    return 4.0 * eps * (n_taps + min(rows, cols) + 2 * np.pi * len(window) + 4) * tap_fro


def _full_window_exists(geo: _Geometry) -> bool:
    """True if some output reads a whole window of distinct input positions (no padding)."""
    if geo.input_shape is None:
        return False
    if geo.circular:
        return all(n >= k for n, k in zip(geo.input_shape, geo.window, strict=True))
    for n, k, s, (lo, _), o in zip(
        geo.input_shape, geo.window, geo.strides, geo.pads, geo.output_shape, strict=True
    ):
        # output i reads input rows i*s - lo ... i*s - lo + k - 1
        if not any(i * s - lo >= 0 and i * s - lo + k - 1 <= n - 1 for i in range(o)):
            return False
    return True


def _sup_grid(window, strides, rows: int, cols: int) -> tuple[tuple[int, ...], float]:
    """Grid Q for the unknown-shape bound, and alpha = pi sum_d m_d / Q_d, m_d = floor((k_d-1)/s_d)."""
    degrees = [(k - 1) // s for k, s in zip(window, strides, strict=True)]
    active = [m for m in degrees if m > 0]
    if not active:
        return (1,) * len(window), 0.0

    def grid_for(alpha):
        return tuple(
            1 if m == 0 else max(2, math.ceil(np.pi * len(active) * m / alpha)) for m in degrees
        )

    def too_costly(q):
        n_freq = math.prod(q[:-1]) * (q[-1] // 2 + 1)
        work = n_freq * float(rows) * cols * min(rows, cols)
        return n_freq > _SUP_MIN_FREQS and (n_freq > _SUP_MAX_FREQS or work > _SUP_MAX_WORK)

    alpha = _SUP_TARGET_ALPHA
    q = grid_for(alpha)
    while too_costly(q):
        alpha *= 1.05
        q = grid_for(alpha)
    return q, float(np.pi * sum(m / qd for m, qd in zip(degrees, q, strict=True)))


def _certified_unknown_shape(kernel, kernel64, geo, dtype) -> NormResult:
    strides = (1,) * len(geo.window) if geo.circular else geo.strides
    n_alias = math.prod(strides)
    rows, cols = n_alias * geo.c_in, geo.c_out
    q, alpha = _sup_grid(geo.window, strides, rows, cols)
    g = float(_grid_max_sigma(kernel.astype(dtype), grid=q, strides=strides, half=True))
    tap_norms = np.asarray(_tap_norms(kernel.astype(dtype)), dtype=np.float64)
    candidates = {}
    # Second-order Bernstein bound (docs/conv_norms.md, section 4).
    if alpha * alpha < 2.0:
        candidates["certified-sup-grid-bernstein"] = g / math.sqrt(1.0 - alpha * alpha / 2.0)
    # Lipschitz bound: ||M(phi) - M(phi')|| <= sum_p ||K_p|| sum_d |p_d - c_d| |phi_d - phi'_d| / s_d,
    # with c the window centre and |phi_d - phi'_d| <= pi / Q_d.
    taps = np.stack(np.meshgrid(*[np.arange(k) for k in geo.window], indexing="ij"), -1)
    taps = taps.reshape(-1, len(geo.window))
    centre = (np.asarray(geo.window) - 1) / 2.0
    dist = np.abs(taps - centre) @ (np.pi / (np.asarray(strides) * np.asarray(q)))
    candidates["certified-sup-grid-lipschitz"] = g + float(np.sum(tap_norms * dist))
    # Triangle inequality over taps, and sqrt(prod(window)) times the reshaped-kernel norm.
    candidates["certified-tap-norm-sum"] = float(np.sum(tap_norms))
    candidates["certified-sqrt-window-reshaped"] = math.sqrt(math.prod(geo.window)) * float(
        _reshaped_norm(kernel.astype(dtype))
    )
    method = min(candidates, key=candidates.get)
    slack = _rounding_slack(kernel64, dtype, rows, cols)
    return NormResult(candidates[method] + slack, method, False, 0.0, 0, None, None)


def _certified_known_shape(kernel, kernel64, geo, dtype) -> NormResult:
    if geo.circular:
        if all(n % s == 0 for n, s in zip(geo.input_shape, geo.strides, strict=True)):
            # Exact: circular (polyphase when strided) symbol on the n-grid.
            strides, q = (
                geo.strides,
                tuple(n // s for n, s in zip(geo.input_shape, geo.strides, strict=True)),
            )
            method = (
                "certified-circular-fft" if max(strides) == 1 else "certified-circular-polyphase"
            )
        else:
            # The strided layer keeps a subset of the stride-1 circular outputs.
            strides, q, method = (1,) * len(geo.window), geo.input_shape, "certified-circular-fft"
    else:
        # Zero padding: embed into the circular operator on N_d = s_d * ceil((n_d+k_d-1)/s_d).
        strides = geo.strides
        q = tuple(
            -(-(n + k - 1) // s)
            for n, k, s in zip(geo.input_shape, geo.window, geo.strides, strict=True)
        )
        method = "certified-embedding-fft" if max(strides) == 1 else "certified-embedding-polyphase"
    n_alias = math.prod(strides)
    g = float(_grid_max_sigma(kernel.astype(dtype), grid=q, strides=strides, half=True))
    slack = _rounding_slack(kernel64, dtype, n_alias * geo.c_in, geo.c_out)
    # Circular with strides dividing n is exact; the lower value is then the value itself.
    exact = geo.circular and all(
        n % s == 0 for n, s in zip(geo.input_shape, geo.strides, strict=True)
    )
    if exact:
        lower = g
    elif _full_window_exists(geo):
        lower = float(_reshaped_norm(kernel.astype(dtype)))
    else:
        lower = None
    return NormResult(g + slack, method, False, 0.0, 0, lower, None)


def _exact(kernel, geo, dtype) -> NormResult:
    if geo.input_shape is None:
        raise ValueError(
            "input_shape is required for method='exact'; without it use method='certified', "
            "which bounds the norm for every input size"
        )
    if geo.circular and all(n % s == 0 for n, s in zip(geo.input_shape, geo.strides, strict=True)):
        q = tuple(n // s for n, s in zip(geo.input_shape, geo.strides, strict=True))
        g = float(_grid_max_sigma(kernel.astype(dtype), grid=q, strides=geo.strides, half=True))
        method = "exact-fft" if max(geo.strides) == 1 else "exact-fft-polyphase"
        return NormResult(g, method, False, 0.0, 0, g, None)
    n_in = math.prod(geo.input_shape) * geo.c_in
    n_out = math.prod(geo.output_shape) * geo.c_out
    if max(n_in, n_out) > _EXPLICIT_MAX:
        raise ValueError(
            f"method='exact' for this layer needs the SVD of its explicit {n_out} x {n_in} "
            f"matrix, allowed only up to {_EXPLICIT_MAX} rows and columns; use "
            f"method='certified' (a sound upper bound) or method='power' (an estimate)"
        )
    s, v = _explicit_svd(
        kernel, input_shape=geo.input_shape, strides=geo.strides, padding=geo.static_padding
    )
    s = float(s)
    return NormResult(s, "exact-explicit-svd", False, 0.0, 0, s, v)


def _power(kernel, geo, key, tol, max_iter, v0) -> NormResult:
    if geo.input_shape is None:
        raise ValueError("input_shape is required for method='power'")
    shape = (*geo.input_shape, geo.c_in)
    if v0 is None:
        # A Gaussian start drawn by numpy, seeded from the key's bits: same law as
        # jax.random.normal, without compiling a sampler for every input shape.
        if key is None:
            key = jax.random.key(0)
        if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        seed = np.asarray(key).astype(np.uint32).ravel().tolist()
        v0 = jnp.asarray(np.random.default_rng(seed).standard_normal(shape), kernel.dtype)
    else:
        v0 = jnp.asarray(v0)
        if v0.size != math.prod(shape):
            raise ValueError(
                f"v0 must have shape {shape} (input_shape + (in_channels,)) or that many "
                f"entries, got shape {tuple(v0.shape)}"
            )
        if not bool(jnp.all(jnp.isfinite(v0))) or not bool(jnp.any(v0 != 0)):
            raise ValueError("v0 must be finite and not all zero")
        v0 = v0.reshape(shape).astype(kernel.dtype)
    krylov = int(min(math.prod(shape), _KRYLOV_DIM, max_iter))
    sigma, v, it = _lanczos(
        kernel,
        v0,
        jnp.asarray(tol, kernel.dtype),
        strides=geo.strides,
        padding=geo.static_padding,
        max_iter=max_iter,
        krylov=krylov,
    )
    sigma = float(sigma)
    return NormResult(sigma, "power-lanczos", True, 0.0, int(it), sigma, v)


# --------------------------------------------------------------------------------------------
# Public functions.
# --------------------------------------------------------------------------------------------


def conv_operator_norm(
    kernel: jax.typing.ArrayLike,
    *,
    input_shape: Sequence[int] | None = None,
    strides: int | Sequence[int] = 1,
    padding: Any = "SAME",
    method: str = "certified",
    key: jax.Array | None = None,
    tol: float = 1e-6,
    max_iter: int = 1000,
    v0: jax.typing.ArrayLike | None = None,
) -> NormResult:
    r"""Operator norm (largest singular value) of a convolution layer.

    The layer is Flax's ``Conv`` without bias: $T x = \mathrm{conv}(x, K)$ computed by
    ``lax.conv_general_dilated`` (cross-correlation, NHWC / HWIO) on inputs $x$ of shape
    ``(*input_shape, c_in)``; the result is $\|T\|_2 = \max_{\|x\|_2=1} \|T x\|_2$, not the
    spectral norm of the reshaped kernel (which can be smaller by up to
    $\sqrt{\prod_d k_d}$). With circular padding and stride 1 (Sedghi et al. 2019)

    $$\|T\|_2 = \max_{u \in \prod_d [n_d]} \sigma_1\big(\hat K(2\pi u / n)\big), \qquad
    \hat K(\theta) = \sum_p K_p e^{-i \langle p, \theta \rangle},$$

    with $K_p$ the $c_{in} \times c_{out}$ tap at window offset $p$.

    Methods:

    * ``"certified"`` (default): an upper bound, never below $\|T\|_2$ beyond rounding
      (a rounding allowance is added: ~1e-13 relative in float64). Circular padding: the exact
      value above (polyphase form with strides dividing the input; else the stride-1 value).
      Zero padding (SAME, VALID, explicit) and/or strides: the norm of the circular polyphase
      operator on the grid $N_d = s_d \lceil (n_d + k_d - 1)/s_d \rceil$, into which the layer
      embeds isometrically ($\max_u \sigma_1$ of $S^{-1/2}[\hat K(2\pi(u + jQ)/N)]_j$,
      $S = \prod_d s_d$). No ``input_shape``: the minimum of four bounds on
      $\sup_\theta$ of that symbol, valid for every input size (``method`` says which):
      a fine-grid maximum times a second-order Bernstein factor, the grid maximum plus a
      Lipschitz correction, $\sum_p \|K_p\|_2$ and $\sqrt{\prod_d k_d}\,\|K_{resh}\|_2$.
      Derivations: ``docs/conv_norms.md``.
    * ``"exact"``: circular padding with strides dividing the input shape: the FFT formula.
      Otherwise the SVD of the explicit operator matrix (built with ``jax.jacfwd``), allowed
      up to 4096 rows and columns. Needs ``input_shape``.
    * ``"power"``: a power-type Krylov method on $A = T^\top T$, matvecs by the convolution and
      its ``jax.linear_transpose``: explicitly restarted Lanczos (32-dimensional Krylov spaces,
      full reorthogonalisation), which, unlike plain power iteration, does not stall on the
      clustered top spectrum of convolutions. An estimate from below (``estimated=True``;
      ``value`` is $\|T x\|$ for a unit $x$, so it is also a lower bound up to rounding),
      warm-startable with ``v0``. Needs ``input_shape``.

    Args:
      kernel: Flax conv kernel, shape ``(*window, c_in, c_out)`` with a 1-, 2- or 3-D window
        (any rank >= 3 works); real and finite.
      input_shape: the spatial shape of the layer's input (``len == len(window)``, channels
        excluded), or None (only with ``method="certified"``).
      strides: an int or one int >= 1 per spatial axis.
      padding: ``"SAME"``, ``"VALID"``, ``"CIRCULAR"`` (wrap-around, as Flax), ``"SAME_LOWER"``,
        ``"CAUSAL"`` (1-D), an int, or a sequence of ints or ``(lo, hi)`` pairs, as for
        ``flax.linen.Conv``.
      method: ``"certified"``, ``"exact"`` or ``"power"``.
      key: PRNG key for the random start of ``"power"`` (default ``jax.random.key(0)``).
      tol: ``"power"`` stops when the Ritz pair $(\lambda, x)$ has
        $\|A x - \lambda x\| \le$ ``tol`` $\cdot \lambda$ (then $\sqrt\lambda$ is within about
        ``tol / 2``, relative, of a singular value of $T$, in practice the largest).
      max_iter: maximum number of applications of $A$ for ``"power"`` (``iterations >=
        max_iter`` means it stopped before reaching ``tol``).
      v0: warm start for the power iteration, shape ``(*input_shape, c_in)``, e.g. the
        ``vector`` of a previous result.

    Returns:
      A `NormResult`: ``value`` (the norm, or its upper bound for ``"certified"``), ``method``
      (the quantity actually computed, e.g. ``"certified-embedding-fft"``), ``estimated``
      (True only for ``"power"``), ``failure_probability`` (0.0: every method here is
      deterministic; power iteration offers no probabilistic certificate, see ``estimated``),
      ``iterations``, ``lower`` (a lower value: the exact value where one was computed, the
      reshaped-kernel norm where it provably lies below, the power estimate) and ``vector``
      (top right singular vector for ``"power"`` and the explicit SVD).

    Raises:
      TypeError: kernel not a real numeric array; input_shape, strides or padding of the wrong
        type.
      ValueError: kernel of rank < 3, empty or not finite; input_shape or strides of the wrong
        length or < 1; unknown padding or method; an input too small to give an output;
        ``input_shape=None`` with ``"exact"``/``"power"``; ``"exact"`` on an operator too large
        for an explicit SVD; bad tol, max_iter or v0.

    Examples:
      >>> import numpy as np
      >>> k = np.ones((3, 3, 1, 1))               # 3x3 all-ones, 1 channel
      >>> r = conv_operator_norm(k, input_shape=(8, 8), padding="CIRCULAR", method="exact")
      >>> round(r.value, 6), r.method
      (9.0, 'exact-fft')
      >>> r = conv_operator_norm(k, input_shape=(8, 8), padding="SAME")   # certified
      >>> r.method, r.value >= conv_operator_norm(
      ...     k, input_shape=(8, 8), padding="SAME", method="exact").value
      ('certified-embedding-fft', True)
      >>> round(reshaped_kernel_norm(k), 6)      # the common approximation: 3 = 9 / sqrt(9)
      3.0

    References:
      Sedghi, Gupta & Long, "The Singular Values of Convolutional Layers", ICLR 2019,
      arXiv:1805.10408. Delattre, Barthélemy, Araujo & Allauzen, "Efficient Bound of Lipschitz
      Constant for Convolutional Layers by Gram Iteration", ICML 2023, arXiv:2305.16173
      (certified bounds by embedding; we use exact per-frequency eigenvalues instead).
      Yoshida & Miyato, "Spectral Norm Regularization for Improving the Generalizability of
      Deep Learning", 2017, arXiv:1705.10941 (the reshaped-kernel approximation).
    """
    kernel = _check_kernel(kernel)
    method = check_choice(method, "method", _METHODS)
    geo = _geometry(kernel, input_shape, strides, padding)
    if method == "power":
        check_positive(tol, "tol")
        max_iter = check_n(max_iter, "max_iter")
        if not jnp.issubdtype(kernel.dtype, jnp.floating):
            kernel = kernel.astype(jnp.result_type(float))
        return _power(kernel, geo, key, float(tol), max_iter, v0)
    dtype = _compute_dtype()
    if method == "exact":
        return _exact(kernel.astype(dtype), geo, dtype)
    kernel64 = np.asarray(kernel, dtype=np.float64)
    if geo.input_shape is None:
        return _certified_unknown_shape(kernel, kernel64, geo, dtype)
    return _certified_known_shape(kernel, kernel64, geo, dtype)


def circular_conv_singular_values(
    kernel: jax.typing.ArrayLike, *, input_shape: Sequence[int]
) -> jax.Array:
    r"""All singular values of a circular (wrap-around) stride-1 convolution, descending.

    Sedghi, Gupta & Long (2019): the singular values of the
    $(\prod_d n_d\, c_{out}) \times (\prod_d n_d\, c_{in})$ operator are the union over
    $u \in \prod_d [n_d]$ of the singular values of $\hat K(2\pi u/n)$; there are
    $\prod_d n_d \cdot \min(c_{in}, c_{out})$ of them.

    Args:
      kernel: Flax conv kernel ``(*window, c_in, c_out)``.
      input_shape: spatial input shape (one int per window axis).

    Returns:
      A 1-D array of the singular values, largest first.

    Examples:
      >>> import numpy as np
      >>> s = circular_conv_singular_values(np.ones((3, 3, 1, 1)), input_shape=(8, 8))
      >>> round(float(s[0]), 5), round(float(s[-1]), 5)  # 9 and 3 - 2 sqrt(2)
      (9.0, 0.17157)

    References:
      Sedghi, Gupta & Long, "The Singular Values of Convolutional Layers", ICLR 2019,
      arXiv:1805.10408.
    """
    kernel = _check_kernel(kernel)
    geo = _geometry(kernel, input_shape, 1, "CIRCULAR")
    if geo.input_shape is None:
        raise TypeError("input_shape must be a tuple of spatial sizes, got None")
    return _grid_singular_values(kernel.astype(_compute_dtype()), grid=geo.input_shape)


def reshaped_kernel_norm(kernel: jax.typing.ArrayLike) -> float:
    r"""Spectral norm of the kernel reshaped to ``(prod(window) * c_in, c_out)``.

    The common approximation of a conv layer's norm (Yoshida & Miyato 2017; Jiang et al. 2020's
    measures). It is not the operator norm $\|T\|_2$: for stride 1 and inputs at least as large
    as the window, $\|K_{resh}\|_2 \le \|T\|_2 \le \sqrt{\prod_d k_d}\,\|K_{resh}\|_2$
    (docs/conv_norms.md, section 5).

    Args:
      kernel: Flax conv kernel ``(*window, c_in, c_out)``, real and finite.

    Returns:
      The largest singular value, as a Python float.

    Examples:
      >>> import numpy as np
      >>> round(reshaped_kernel_norm(np.ones((3, 3, 2, 1))), 6)   # sqrt(18)
      4.242641

    References:
      Yoshida & Miyato, "Spectral Norm Regularization for Improving the Generalizability of
      Deep Learning", 2017, arXiv:1705.10941.
    """
    kernel = _check_kernel(kernel)
    return float(_reshaped_norm(kernel.astype(_compute_dtype())))
