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
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import check_choice, check_n, check_positive

from ._conv_geometry import _check_kernel, _Geometry, _geometry
from ._conv_kernels import (
    _compute_dtype,
    _explicit_svd,
    _grid_max_sigma,
    _grid_singular_values,
    _lanczos,
    _reshaped_norm,
    _tap_norms,
)
from ._method import NormMethod
from ._spectral_norm import NormResult

_METHODS = ("certified", "exact", "power")
# What a `NormMethod` (named for dense matrices) computes for a convolution.
CONV_METHOD = {
    "certified": "certified",
    "exact": "exact",
    "lanczos": "power",
    "power": "power",
    "gram": "certified",
}
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
    method: str | NormMethod = "certified",
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
      method: ``"certified"``, ``"exact"`` or ``"power"``; or a `NormMethod`, whose name is read
        for the operator (``"lanczos"`` runs ``"power"``, ``"gram"`` runs ``"certified"``) and
        whose ``tol`` and ``max_iter`` (None: 1000) are used.
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
    if isinstance(method, NormMethod):
        # A dense method read for a convolution: the operator, not the reshaped kernel.
        if (tol, max_iter) != (1e-6, 1000) and (tol, max_iter) != (
                method.tol, method.max_iter):
            raise ValueError(
                f"conv_operator_norm: tol={tol!r}, max_iter={max_iter!r} given beside "
                f"method={method!r}; set options inside the NormMethod"
            )
        tol = method.tol
        max_iter = 1000 if method.max_iter is None else method.max_iter
        method = CONV_METHOD[method.name]
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
