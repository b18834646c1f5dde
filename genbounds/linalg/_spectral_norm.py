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

import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._arrays import _as_array, _check_finite, _check_key, _raise_nonfinite
from ._certificate import _certificate_plan
from ._host import _host_float64, _host_ok, _host_sigma_max, host_exact_is_cheaper
from ._krylov import _HI, _exact_kernel, _gram_kernel, _lanczos_run, _power_kernel, _round_up
from ._method import NormMethod, as_norm_method

__all__ = ["NormResult", "spectral_norm"]

_DEFAULT_MAX_ITER = {"power": 1000, "lanczos": 300}


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


def spectral_norm(
    W: jax.typing.ArrayLike,
    *,
    method: str | NormMethod = "certified",
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
      method: "certified" (default), "exact", "lanczos", "power" or "gram", or a `NormMethod`
        holding the name and its options (then the keyword options below stay at their
        defaults or agree with it).
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
        an unknown ``method``; an option beside a `NormMethod` that disagrees with it;
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
    how = as_norm_method(
        method,
        dict(tol=tol, max_iter=max_iter, rtol=rtol, failure_probability=failure_probability,
             gram_iters=gram_iters),
        caller="spectral_norm",
    )
    method = how.name
    W = _as_array(W, "W", (2,))
    tol, rtol, eta, gram_iters = how.tol, how.rtol, how.failure_probability, how.gram_iters
    max_iter = _DEFAULT_MAX_ITER.get(method, 1) if how.max_iter is None else how.max_iter
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

