"""The Bernoulli KL divergence, its inverse, and the PAC-Bayes-kl bound built on them.

`kl_inverse` is the workhorse of every PAC-Bayes bound stated through the small-kl (Langford–Seeger,
Maurer) form: it turns ``kl(q || p) <= c`` into the largest true error ``p`` compatible with it.
It is computed by bisection on the bit patterns of floating-point numbers, which reaches full
precision for every input (also when the answer is tiny), with a comparison that allows for the
rounding error of the computed kl, and it returns the *upper* end of the final bracket: never
below the supremum, above it by ~3e-14 relative at most in float64. See docs/bounds/kl.md.

Public functions validate their inputs in Python and raise clear errors; the ``_core`` functions
underneath do no checks and may be used inside ``jax.jit``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    check_broadcastable,
    check_delta,
    check_n,
    check_positive,
    check_scalar,
    check_unit_interval,
)
from genbounds.core._dtypes import promoted_dtype

_MAURER_REF = (
    "Maurer, A note on the PAC Bayesian theorem, 2004, arXiv:cs/0411099 (Theorem 5); "
    "Langford & Seeger 2001; Seeger, PAC-Bayesian generalisation error bounds for Gaussian "
    "process classification, JMLR 2002"
)


# ----------------------------------------------------------------------------------------------
# Jittable cores (no checks).


def _float_dtype(*xs: Any) -> Any:
    dtype = promoted_dtype(*(jnp.asarray(x) for x in xs), 1.0)
    if not jnp.issubdtype(dtype, jnp.floating):  # pragma: no cover - result_type with 1.0 floats
        dtype = jnp.result_type(float)
    return dtype


def _kl_terms(q: jax.Array, p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two terms q ln(q/p) and (1-q) ln((1-q)/(1-p)) of kl(q || p), same dtype as q, p.

    With d = p - q they are q ln(1 + r1) and (1-q) ln(1 + r2), r1 = -d/p, r2 = d/(1-p): log1p of
    r keeps the terms (each O(d)) accurate to relative rounding, so kl ~ d^2 keeps a relative
    error of about eps/d, and keeps ln(1 - p) exact for tiny p. For |r| > 1/4 the ratio's log is
    used instead (XLA's log1p loses up to ~128 ulps near r = -0.4 on CPU; its log does not).
    Limits: 0 ln 0 = 0 at q in {0, 1}; +inf where p is 0 or 1 and q is not.
    """
    d = p - q
    p_safe = jnp.where(p > 0, p, 1.0)
    pc_safe = jnp.where(p < 1, 1.0 - p, 1.0)
    r1, r2 = -d / p_safe, d / pc_safe
    l1 = jnp.where(jnp.abs(r1) <= 0.25, jnp.log1p(r1), jnp.log(q / p_safe))
    l2 = jnp.where(jnp.abs(r2) <= 0.25, jnp.log1p(r2), jnp.log((1.0 - q) / pc_safe))
    t1 = jnp.where(q == 0, 0.0, jnp.where(p > 0, q * l1, jnp.inf))
    t2 = jnp.where(q == 1, 0.0, jnp.where(p < 1, (1.0 - q) * l2, jnp.inf))
    return t1, t2


@jax.jit
def kl_bernoulli_core(q: jax.Array, p: jax.Array) -> jax.Array:
    """kl(q || p) without argument checks (jittable; broadcasts)."""
    dtype = _float_dtype(q, p)
    t1, t2 = _kl_terms(jnp.asarray(q, dtype), jnp.asarray(p, dtype))
    return (t1 + t2).astype(dtype)


# Bound on the rounding error of the computed kl, in units of eps * (|t1| + |t2|): a few ulps per
# operation, with room for a libm log/log1p that is off by several ulps (measured: <= 2).
_KL_ERROR_ULPS = 32


@jax.jit
def kl_inverse_core(q: jax.Array, c: jax.Array) -> jax.Array:
    """sup {p in [q, 1] : kl(q || p) <= c} without argument checks (jittable; broadcasts).

    Assumes q in [0, 1] and c >= 0 (not NaN); the public `kl_inverse` checks that.

    Bisection on the integer bit patterns of non-negative floats, which are ordered as the floats
    are: ``nbits`` halvings shrink any bracket to two neighbouring floats. A midpoint is rejected
    only when its computed kl exceeds c by more than the rounding bound, so the upper end ``hi``
    of the final bracket has exact kl(q || hi) > c (or hi = 1): it is returned, never below the
    supremum, and above it by at most ~_KL_ERROR_ULPS eps relative.
    """
    dtype = _float_dtype(q, c)
    q, c = jnp.broadcast_arrays(jnp.asarray(q, dtype), jnp.asarray(c, dtype))
    nbits = jnp.finfo(dtype).bits
    eps = jnp.finfo(dtype).eps
    itype = {16: jnp.int16, 32: jnp.int32, 64: jnp.int64}[nbits]
    # Work on bit patterns, in integers (XLA simplifies x + 0.0 away and, on CPU, flushes
    # subnormals to zero inconsistently). For q, c >= 0 (the caller's contract) a negative bit
    # pattern can only be -0.0: make it +0.0. A subnormal q or c is rounded *up* to the smallest
    # normal number: the supremum increases with both, so the result stays an upper bound.
    tiny = jax.lax.bitcast_convert_type(jnp.asarray(jnp.finfo(dtype).tiny, dtype), itype)

    def normal_bits(x):
        b = jnp.maximum(jax.lax.bitcast_convert_type(x, itype), 0)
        return jnp.where((b > 0) & (b < tiny), tiny, b)

    lo, c_bits = normal_bits(q), normal_bits(c)
    q, c = jax.lax.bitcast_convert_type(lo, dtype), jax.lax.bitcast_convert_type(c_bits, dtype)
    hi = jax.lax.bitcast_convert_type(jnp.ones_like(q), itype)

    def step(_, bracket):
        lo, hi = bracket
        mid = lo + (hi - lo) // 2
        t1, t2 = _kl_terms(q, jax.lax.bitcast_convert_type(mid, dtype))
        slack = _KL_ERROR_ULPS * eps * (jnp.abs(t1) + jnp.abs(t2))
        ok = t1 + t2 <= c + jnp.where(jnp.isfinite(slack), slack, 0.0)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    _, hi = jax.lax.fori_loop(0, nbits, step, (lo, hi))
    p = jax.lax.bitcast_convert_type(hi, dtype)
    # kl(q || p) = 0 only at p = q, so c = 0 gives q exactly.
    return jnp.where(c_bits == 0, q, p)


# ----------------------------------------------------------------------------------------------
# Validation.


def _check_real_array(x: Any, name: str, *, upper: float | None) -> Any:
    """Real numbers (a scalar or an array), no NaN, in [0, upper] ([0, inf) when upper is None)."""
    want = "in [0, 1]" if upper == 1.0 else ">= 0"
    if isinstance(x, bool) or isinstance(x, str) or x is None:
        raise TypeError(f"{name} must be a real number or array of numbers {want}, got {x!r}")
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be real numbers {want}, got dtype {arr.dtype}")
    if np.any(np.isnan(arr)):
        raise ValueError(
            f"{name} must not be NaN, got {np.count_nonzero(np.isnan(arr))} NaN entries"
        )
    bad = (arr < 0) if upper is None else ((arr < 0) | (arr > upper))
    if np.any(bad):
        verb = "lie" if upper is not None else "be"
        raise ValueError(f"{name} must {verb} {want}, got {arr[bad].ravel()[0]!r}")
    return x


def _check_prob_array(x: Any, name: str) -> Any:
    return _check_real_array(x, name, upper=1.0)


def _check_nonneg_array(x: Any, name: str) -> Any:
    return _check_real_array(x, name, upper=None)


def _is_traced(*xs: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


# ----------------------------------------------------------------------------------------------
# Public functions.


def kl_bernoulli(q: Any, p: Any) -> jax.Array:
    r"""Kullback–Leibler divergence between Bernoulli(q) and Bernoulli(p).

    $\mathrm{kl}(q \,\|\, p) = q \ln\frac{q}{p} + (1-q) \ln\frac{1-q}{1-p}$, with the limits
    $0 \ln 0 = 0$ at $q \in \{0, 1\}$ and $+\infty$ where $p \in \{0, 1\}$ and $p \neq q$.

    Args:
      q: first success probability(ies), in [0, 1]; array-like, broadcast against `p`.
      p: second success probability(ies), in [0, 1].

    Returns:
      A floating `jax.Array` of the broadcast shape, >= 0.

    Raises:
      TypeError: non-numeric input.
      ValueError: a value outside [0, 1] or NaN.

    Examples:
      >>> round(float(kl_bernoulli(0.5, 0.25)), 6)
      0.143841
      >>> float(kl_bernoulli(0.0, 0.0)), float(kl_bernoulli(1.0, 0.0))
      (0.0, inf)
    """
    if not _is_traced(q, p):
        _check_prob_array(q, "q")
        _check_prob_array(p, "p")
        check_broadcastable(q, p, "q", "p")
    return kl_bernoulli_core(q, p)


def kl_inverse(q: Any, c: Any) -> jax.Array:
    r"""Upper inverse of the Bernoulli KL divergence.

    $\mathrm{kl}^{-1}(q, c) = \sup\{p \in [q, 1] : \mathrm{kl}(q \,\|\, p) \le c\}$: the largest
    true error $p$ compatible with an empirical error $q$ and a PAC-Bayes-kl right-hand side $c$.

    Computed by bisection on the floats' bit patterns (64 halvings in float64, 32 in float32),
    rejecting a candidate only when its computed kl exceeds c by more than the rounding error
    of the kl evaluation, and returned from the upper end of the final bracket: the result is
    never below the exact supremum, and above it by at most about 3e-14 relative in float64
    (checked against 80-digit arithmetic in the tests). Vectorised: `q` and `c` broadcast.
    Jittable (checks are skipped on traced inputs). Called on concrete values it always
    computes in float64, whatever the inputs' dtype: with x64 enabled the result is float64;
    without, the float64 result is rounded up to the next float32 (still an upper bound, at most
    one float32 ulp above). Traced calls compute in the inputs' dtype.

    Edge cases: c = 0 gives q; q = 1 gives 1; c large (or inf) gives 1; q = 0 gives
    $1 - e^{-c}$. Pinsker's inequality gives $q \le \mathrm{kl}^{-1}(q, c) \le q + \sqrt{c/2}$.

    Args:
      q: empirical error(s), in [0, 1].
      c: bound(s) on the divergence, >= 0 (may be inf).

    Returns:
      A floating `jax.Array` of the broadcast shape, in [q, 1].

    Raises:
      TypeError: non-numeric input.
      ValueError: q outside [0, 1], c < 0, NaN, or shapes that do not broadcast.

    Examples:
      >>> round(float(kl_inverse(0.03, 0.1)), 5)
      0.17085
      >>> [round(float(v), 4) for v in kl_inverse(0.0, jnp.array([0.0, 1.0]))]
      [0.0, 0.6321]

    References:
      Langford & Seeger, Bounds for averaging classifiers, 2001; Seeger, JMLR 2002; Dziugaite &
      Roy, Computing nonvacuous generalization bounds for deep (stochastic) neural networks with
      many more parameters than training data, UAI 2017, arXiv:1703.11008.
    """
    if _is_traced(q, c):
        return kl_inverse_core(q, c)
    _check_prob_array(q, "q")
    _check_nonneg_array(c, "c")
    check_broadcastable(q, c, "q", "c")
    p64 = kl_inverse64(q, c)
    if jax.config.jax_enable_x64:
        return jnp.asarray(p64)
    # Without x64 the result is returned in float32, rounded *up* from the float64 value so it
    # stays an upper bound (at most one float32 ulp above the float64 supremum).
    p32 = p64.astype(np.float32)
    p32 = np.where(p32.astype(np.float64) < p64, np.nextafter(p32, np.float32(np.inf)), p32)
    return jnp.asarray(np.minimum(p32, np.float32(1.0)))


def kl_inverse64(q: Any, c: Any) -> np.ndarray:
    """`kl_inverse_core` evaluated in float64 whatever the inputs' dtype and the x64 setting
    (float32 bisection can land several float32 ulps above the supremum), without checks.

    The one float64 kl inversion of the package: every certificate (Maurer's bound here, the
    sample-convergence bound, Dziugaite & Roy's and Pérez-Ortiz et al.'s) inverts through it.
    Assumes q in [0, 1] and c >= 0, as `kl_inverse_core`; returns a float64 numpy array of the
    broadcast shape.
    """
    q64, c64 = np.asarray(q, np.float64), np.asarray(c, np.float64)
    with jax.enable_x64(True):
        return np.asarray(kl_inverse_core(q64, c64), np.float64)


def _maurer_checks(emp_error: Any, kl: Any, n: Any, delta: Any) -> tuple[float, float, int, float]:
    e = check_unit_interval(check_scalar(emp_error, "emp_error"), "emp_error")
    k = check_positive(check_scalar(kl, "kl"), "kl", allow_zero=True)
    n = check_n(n)
    if n < 8:
        raise ValueError(
            f"n must be >= 8: Maurer's (2004) bound, with ln(2 sqrt(n)/delta), is proved for "
            f"n >= 8; got n={n}"
        )
    d = check_delta(delta)
    return e, k, n, d


def pac_bayes_kl_bound(emp_error: Any, kl: Any, *, n: int, delta: float = 0.05) -> Bound:
    r"""PAC-Bayes-kl bound (Langford–Seeger form with Maurer's constant).

    For a prior $P$ fixed before seeing the $n$ training examples, with probability at least
    $1-\delta$, simultaneously for all posteriors $Q$ (Maurer 2004, Theorem 5, $n \ge 8$):

    $$\mathrm{kl}\big(\hat e_S(Q) \,\|\, e(Q)\big) \le \frac{\mathrm{KL}(Q\|P) + \ln(2\sqrt{n}/\delta)}{n},$$

    hence $e(Q) \le \mathrm{kl}^{-1}\big(\hat e_S(Q), (\mathrm{KL}(Q\|P) + \ln(2\sqrt n/\delta))/n\big)$.
    Note the single logarithm $\ln(2\sqrt{n}/\delta)$: the $\delta$ is inside it.

    $e(Q)$ is the expected 0-1 error of the *stochastic* (Gibbs) classifier that draws a network
    from $Q$ for each prediction; $\hat e_S(Q)$ its empirical counterpart. When $\hat e_S(Q)$ is
    itself estimated by sampling networks, bound it first (e.g. by
    ``kl_inverse(mc_error, ln(2/delta')/num_samples)``) and charge delta' separately.

    Args:
      emp_error: $\hat e_S(Q)$, the empirical error of the Gibbs classifier, in [0, 1].
      kl: $\mathrm{KL}(Q\|P)$ in nats, >= 0.
      n: number of training examples $n \ge 8$.
      delta: failure probability $\delta \in (0, 1)$.

    Returns:
      A `Bound` named ``"pac_bayes_kl"``: ``value`` the bound on $e(Q)$, ``complexity`` the KL,
      ``terms`` with ``emp_error``, ``kl``, ``log_term`` = ln(2 sqrt(n)/delta) and ``rhs`` (the
      right-hand side $c$ that was inverted).

    Raises:
      TypeError: non-numeric input.
      ValueError: emp_error outside [0, 1], kl < 0, n < 8, delta outside (0, 1), NaN.

    Examples:
      >>> b = pac_bayes_kl_bound(0.03, 100.0, n=10_000, delta=0.05)
      >>> round(b.value, 4), b.vacuous
      (0.0621, False)

    References:
      Maurer, A note on the PAC Bayesian theorem, 2004, arXiv:cs/0411099; Seeger, PAC-Bayesian
      generalisation error bounds for Gaussian process classification, JMLR 3, 2002; Langford,
      Tutorial on practical prediction theory for classification, JMLR 6, 2005.
    """
    e, k, n, d = _maurer_checks(emp_error, kl, n, delta)
    log_term = math.log(2.0 * math.sqrt(n) / d)  # ln(2 sqrt(n)/delta), one logarithm
    rhs = (k + log_term) / n
    value = float(kl_inverse64(e, rhs))
    return Bound(
        name="pac_bayes_kl",
        value=value,
        complexity=k,
        terms={"emp_error": e, "kl": k, "log_term": log_term, "rhs": rhs},
        n=n,
        delta=d,
        reference=_MAURER_REF,
        notes=("bounds the expected error of the stochastic (Gibbs) classifier Q",),
    )


def mcallester_bound(emp_error: Any, kl: Any, *, n: int, delta: float = 0.05) -> Bound:
    r"""McAllester-form PAC-Bayes bound: the Pinsker relaxation of `pac_bayes_kl_bound`.

    With probability at least $1-\delta$, for all posteriors $Q$ ($n \ge 8$):

    $$e(Q) \le \hat e_S(Q) + \sqrt{\frac{\mathrm{KL}(Q\|P) + \ln(2\sqrt{n}/\delta)}{2n}}.$$

    Derived from Maurer's kl form with Pinsker's inequality $\mathrm{kl}(q\|p) \ge 2(p-q)^2$
    (docs/bounds/kl.md), so it is never smaller than `pac_bayes_kl_bound` on the same inputs. It
    is the form usually called "McAllester's bound" in recent work; McAllester's own 1999/2003
    statements have different logarithmic terms and are not what this function computes.

    Args:
      emp_error: $\hat e_S(Q)$, in [0, 1].
      kl: $\mathrm{KL}(Q\|P)$ in nats, >= 0.
      n: number of training examples $n \ge 8$.
      delta: failure probability $\delta \in (0, 1)$.

    Returns:
      A `Bound` named ``"mcallester"`` (value not clipped: it can exceed 1).

    Raises:
      TypeError: non-numeric input.
      ValueError: emp_error outside [0, 1], kl < 0, n < 8, delta outside (0, 1), NaN.

    Examples:
      >>> b = mcallester_bound(0.03, 100.0, n=10_000, delta=0.05)
      >>> round(b.value, 4)
      0.1036

    References:
      Maurer, A note on the PAC Bayesian theorem, 2004, arXiv:cs/0411099; McAllester,
      PAC-Bayesian stochastic model selection, Machine Learning 51, 2003.
    """
    e, k, n, d = _maurer_checks(emp_error, kl, n, delta)
    log_term = math.log(2.0 * math.sqrt(n) / d)
    rhs = (k + log_term) / n
    gap = math.sqrt(rhs / 2.0)  # Pinsker: kl(q||p) >= 2 (p - q)^2
    return Bound(
        name="mcallester",
        value=e + gap,
        complexity=k,
        terms={"emp_error": e, "kl": k, "log_term": log_term, "rhs": rhs, "gap": gap},
        n=n,
        delta=d,
        reference=_MAURER_REF + "; Pinsker relaxation",
        notes=("bounds the expected error of the stochastic (Gibbs) classifier Q",),
    )
