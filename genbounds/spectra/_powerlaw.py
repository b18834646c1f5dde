r"""The power-law fit of an ESD's tail: continuous MLE with $x_{\min}$ by the KS rule.

Clauset, Shalizi & Newman (2009), "Power-law distributions in empirical data", SIAM Review 51,
arXiv:0706.1062, eqs. (3.5) and (3.9): for a candidate $x_{\min} = x_i$ of the sorted sample
$x_0 \le \dots \le x_{n-1}$ with tail $x_i, \dots, x_{n-1}$ of size $n_i = n - i$,

$$\hat\alpha_i = 1 + n_i \Big/ \sum_{j \ge i} \ln(x_j / x_i),$$

$$D_i = \max_{j \ge i} \big|F_{n,i}(x_j) - (1 - (x_j/x_i)^{1-\hat\alpha_i})\big|,$$

and $x_{\min}$ is the candidate of smallest $D_i$. Here $\hat\alpha$ is the **tail exponent**
of the density $p(\lambda) \propto \lambda^{-\alpha}$, not the load $N/M$ of a training set
nor the aspect ratio $Q$ of a matrix.

Two rules, the same scan:

* ``"weightwatcher"`` reproduces WeightWatcher 0.7.7 (``WW_powerlaw.WWFit``) operation for
  operation: every value but the largest is a candidate, the empirical CDF is the lower step
  $(j-i)/n_i$ only, $D_i = 1$ where $\hat\alpha_i \le 1$, and with fewer than 20 values the
  "small-N" variant ($\hat\alpha_i = 1 + (n_i - 1)/\sum\ln$, only tails of at least 8) runs,
  still chosen by the smallest $D$.
* ``"genbounds"`` (jitted, `_ks_scan.py`): candidates with a tail of at least ``min_tail``
  values (the first of each value, so ties stay in the tail), the two-sided KS distance $\max_j \max(F(x_j) - j/n_i, (j+1)/n_i - F(x_j))$ of the continuous fit against the
  empirical step function, the same MLE at every size; a bootstrap over the eigenvalues gives
  the interval.

The scan is vectorised: candidates in blocks of rows, each row only over its own tail, so memory
stays below a few MB whatever $n$ is; both rules prune it by branch and bound (lower bounds of
D from 64 points per tail, exact D only where it can be the minimum; `ks_scan_pruned` and
`_ks_scan.py`), with the same minimum and the same $x_{\min}$ as the full scan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from genbounds.spectra._ks_scan import BOOTSTRAP_TIER, fit_many, fit_many_start

# WeightWatcher 0.7.7: evals at or below this are dropped before the fit (EVALS_THRESH).
EVALS_THRESH = 1e-5
SMALL_N_CUTOFF = 20  # WW_powerlaw.SMALL_N_CUTOFF
SMALL_N_KMIN = 8  # fit_powerlaw_smallN(k_min=8)
_BLOCK_ELEMENTS = 1 << 20
_EPS = float(np.finfo(np.float64).eps)


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """One power-law fit of a spectrum's tail.

    Attributes:
      alpha: the tail exponent $\\hat\\alpha$ (NaN when the fit failed).
      xmin: the chosen lower cut-off $x_{\\min}$ (an eigenvalue).
      xmax: the largest eigenvalue fitted.
      D: the KS distance at $x_{\\min}$.
      sigma: $(\\hat\\alpha - 1)/\\sqrt{n_{tail}}$, the asymptotic standard error of the MLE
        (Clauset et al. 2009, eq. 3.2), which ignores the choice of $x_{\\min}$.
      tail_size: number of eigenvalues at or above $x_{\\min}$ in the fitted data.
      num_candidates: how many $x_{\\min}$ candidates were scanned.
      status: ``"success"`` or ``"failed: <reason>"``.
      rule: ``"weightwatcher"`` or ``"genbounds"``.
      small_n: True where WeightWatcher's small-N variant ran.
    """

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    tail_size: int
    num_candidates: int
    status: str
    rule: str
    small_n: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "success"


def _failed(reason: str, rule: str, xmax: float = math.nan) -> PowerLawFit:
    return PowerLawFit(alpha=math.nan, xmin=math.nan, xmax=xmax, D=math.nan, sigma=math.nan,
                       tail_size=0, num_candidates=0, status=f"failed: {reason}", rule=rule)


def _tail_log_sums(log_x: np.ndarray) -> np.ndarray:
    """$S_i = \\sum_{j \\ge i} \\ln x_j - n_i \\ln x_i$ for every i (suffix sums)."""
    n = log_x.size
    suffix = np.cumsum(log_x[::-1])[::-1]
    return suffix - np.arange(n, 0, -1, dtype=np.float64) * log_x


def ks_scan(x: np.ndarray, candidates: np.ndarray, alphas: np.ndarray, *,
            two_sided: bool) -> np.ndarray:
    """KS distance of the power law fitted at each candidate, vectorised over candidates.

    ``x`` sorted ascending (float64), ``candidates`` increasing indices into it, ``alphas`` the
    exponent at each. Rows whose alpha is not > 1 get D = 1 (no normalisable power law).
    ``two_sided=False`` is WeightWatcher's expression bit for bit:
    ``abs(1 - (x[i:]/x[i]) ** (1 - alpha) - arange(n_i)/n_i)``.
    """
    n = x.size
    D = np.ones(candidates.size, dtype=np.float64)
    valid = alphas > 1.0
    start = 0
    while start < candidates.size:
        i0 = int(candidates[start])
        width = n - i0
        rows = max(1, _BLOCK_ELEMENTS // max(width, 1))
        sel = slice(start, min(start + rows, candidates.size))
        idx = candidates[sel]
        a = alphas[sel]
        tail = x[i0:]
        k = np.arange(i0, n, dtype=np.float64)[None, :] - idx[:, None].astype(np.float64)
        ni = (n - idx).astype(np.float64)[:, None]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            p = (tail[None, :] / x[idx][:, None]) ** (-a[:, None] + 1)
            fit = 1 - p
            lower = k / ni
            if two_sided:
                dev = np.maximum(fit - lower, (k + 1.0) / ni - fit)
            else:
                dev = np.abs(fit - lower)
        dev = np.where(k >= 0, dev, 0.0)
        D[sel] = np.where(valid[sel], np.max(dev, axis=1), 1.0)
        start = sel.stop
    return D


def ks_scan_pruned(x: np.ndarray, candidates: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """`ks_scan` (``two_sided=False``) for the argmin only, by branch and bound: the same
    ``argmin`` and the same value there, far fewer power evaluations.

    Every candidate first gets a lower bound of its D from 16 points at the start of its tail
    and 48 spread over it (the same element-wise expression, so a bound never exceeds D); the
    candidates are then evaluated whole in increasing order of their bounds, 32 at a time,
    until the next bound exceeds the smallest D found (by a margin of a few ulps). The
    returned array is exact where it is evaluated and holds the lower bound elsewhere (those
    entries exceed the minimum, so ``argmin`` and the value there are those of `ks_scan`).
    """
    n = x.size
    m = candidates.size
    valid = alphas > 1.0
    out = np.ones(m, dtype=np.float64)
    vi = np.flatnonzero(valid)
    if vi.size == 0:
        return out
    idx = candidates[vi]
    a = alphas[vi]
    ni = (n - idx).astype(np.float64)
    k = np.concatenate([np.broadcast_to(np.arange(16, dtype=np.float64), (vi.size, 16)),
                        np.floor(np.linspace(0.0, 1.0, 48)[None, :] * (ni[:, None] - 1.0))],
                       axis=1)
    k = np.minimum(k, ni[:, None] - 1.0)  # short tails: points repeat, none past the end
    j = idx[:, None] + k.astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        p = (x[j] / x[idx][:, None]) ** (-a[:, None] + 1)
        bound = np.max(np.abs((1 - p) - k / ni[:, None]), axis=1)
    out[vi] = bound
    order = vi[np.argsort(bound, kind="stable")]
    best = 1.0 if vi.size < m else np.inf  # the invalid rows' D = 1 is exact
    start = 0
    while start < order.size:
        if out[order[start]] > best + 16 * _EPS * (1.0 + best):
            break
        sel = np.sort(order[start:start + 32])
        out[sel] = ks_scan(x, candidates[sel], alphas[sel], two_sided=False)
        best = min(best, float(np.min(out[sel])))
        start += 32
    return out


def fit_power_law(evals: Any, *, rule: str = "genbounds", min_tail: int = 10) -> PowerLawFit:
    """Fits a power law to the tail of a spectrum (see the module docstring for both rules).

    Args:
      evals: the eigenvalues (any order); values <= 1e-5 are dropped first, as WeightWatcher
        does.
      rule: ``"genbounds"`` or ``"weightwatcher"``.
      min_tail: smallest tail a candidate $x_{\\min}$ may leave (``"genbounds"`` only).

    Returns:
      A `PowerLawFit`; a failed fit has ``status="failed: ..."`` and NaN alpha.
    """
    x = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    x = x[x > EVALS_THRESH]
    n = x.size
    if n < 2:
        return _failed(f"{n} eigenvalue(s) above {EVALS_THRESH:g}; need at least 2", rule,
                       float(x[-1]) if n else math.nan)
    log_x = np.log(x, dtype=np.float64)
    if rule == "weightwatcher":
        return _fit_weightwatcher(x, log_x)
    if rule != "genbounds":
        raise ValueError(f"rule must be 'genbounds' or 'weightwatcher', got {rule!r}")
    if n < min_tail:
        return _failed(f"{n} eigenvalues above {EVALS_THRESH:g}, fewer than min_tail = "
                       f"{min_tail}", rule, float(x[-1]))
    alpha, xmin, D, tail = fit_many(x[None], np.array([n]), min_tail=min_tail)[0]
    if not np.isfinite(alpha):
        return _failed("every candidate tail is constant (all its values equal)", rule,
                       float(x[-1]))
    return PowerLawFit(alpha=float(alpha), xmin=float(xmin), xmax=float(x[-1]), D=float(D),
                       sigma=(alpha - 1.0) / math.sqrt(tail), tail_size=int(tail),
                       num_candidates=int(n - min_tail + 1), status="success", rule=rule)


def _fit_weightwatcher(x: np.ndarray, log_x: np.ndarray) -> PowerLawFit:
    """WW_powerlaw.WWFit(data) with xmin=xmax=None, the path WeightWatcher 0.7.7 runs."""
    n = x.size
    cand = np.arange(n - 1)
    ni = (n - cand).astype(np.float64)
    # WW: alpha = 1 + n / (np.sum(log_data[i:]) - n * log_data[i]) with np.sum per slice; the
    # suffix sums here round differently, by about 1e-15 relative (the test bounds |d alpha|).
    s = _tail_log_sums(log_x)[cand]
    small = n < SMALL_N_CUTOFF
    if small:
        keep = (ni >= SMALL_N_KMIN) & (s > 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            alphas = np.where(keep, 1.0 + (ni - 1.0) / s, 0.0)
        fitted = keep & (alphas > 1.0)
        D = np.ones(n - 1)
        sigmas = (alphas - 1.0) / np.sqrt(ni)  # WW computes sigmas before the fallback below
        if fitted.any():
            D[fitted] = ks_scan(x, cand[fitted], alphas[fitted], two_sided=False)
        elif s[0] > 1e-12:
            # WW's fallback when no tail qualifies: the whole sample, its D unconditionally.
            alphas[0] = 1.0 + (n - 1.0) / s[0]
            p = (x / x[0]) ** (-alphas[0] + 1.0)
            D[0] = float(np.max(np.abs(np.arange(n, dtype=np.float64) / float(n) - (1.0 - p))))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            alphas = 1.0 + ni / s
        # only the argmin of D and D there are used: the pruned scan gives both exactly
        D = ks_scan_pruned(x, cand, alphas)
        sigmas = (alphas - 1.0) / np.sqrt(ni)
    best = int(np.argmin(D))  # WWFit.__init__: argmin of D (first on ties), small N included
    a = float(alphas[best])
    sigma = float(sigmas[best])
    if math.isnan(a):
        return _failed("the MLE is NaN", "weightwatcher", float(x[-1]))
    return PowerLawFit(alpha=a, xmin=float(x[best]), xmax=float(x[-1]), D=float(D[best]),
                       sigma=sigma, tail_size=int(ni[best]), num_candidates=int(n - 1),
                       status="success", rule="weightwatcher", small_n=small)


@dataclasses.dataclass(frozen=True)
class BootstrapInterval:
    """Percentile bootstrap interval of the tail exponent.

    Attributes:
      low, high: the interval's ends at ``confidence``.
      se: standard deviation of the bootstrap estimates.
      confidence: its nominal coverage.
      num_resamples: resamples drawn; ``num_failed`` of them gave no fit (left out).
    """

    low: float
    high: float
    se: float
    confidence: float
    num_resamples: int
    num_failed: int


def bootstrap_alpha(evals: Any, rng: np.random.Generator, *, num_resamples: int,
                    confidence: float, min_tail: int) -> BootstrapInterval:
    """Percentile interval of alpha from refits (x_min re-chosen each time) on resampled ESDs.

    The eigenvalues above the threshold are resampled with replacement (Efron's nonparametric
    bootstrap; Clauset et al. 2009 section 3.4 use the same to give the uncertainty of
    $\\hat\\alpha$ and $x_{\\min}$ together), and each resample is fitted by the
    ``"genbounds"`` rule. The eigenvalues of one matrix are not independent draws, so the
    interval is an estimate of the fit's sampling variability, not an exact confidence set.

    The resamples are the sorted eigenvalues at the indices ``rng.integers(0, n, (num_resamples,
    n))`` ($n$ eigenvalues above the threshold), each row's indices sorted: the draws
    ``rng.choice(x, ..., replace=True)`` makes from the same generator state, on the sorted
    eigenvalues. The refits run in float32 (the pruned scan with a lighter first tier,
    ``BOOTSTRAP_TIER`` in `_ks_scan.py`; the same fit as the full scan).
    """
    return bootstrap_alpha_start(evals, rng, num_resamples=num_resamples,
                                 confidence=confidence, min_tail=min_tail)()


def bootstrap_alpha_start(evals: Any, rng: np.random.Generator, *, num_resamples: int,
                          confidence: float,
                          min_tail: int) -> Callable[[], BootstrapInterval]:
    """`bootstrap_alpha` in two steps: draws the resamples and dispatches their fits (JAX
    runs them asynchronously), and returns a function that waits for them and returns the
    interval (`heavy_tail` does the other layers' work meanwhile)."""
    x = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    x = x[x > EVALS_THRESH]
    if x.size < min_tail:
        failed = BootstrapInterval(math.nan, math.nan, math.nan, confidence, num_resamples,
                                   num_resamples)
        return lambda: failed
    # rng.choice(x, size, replace=True) draws rng.integers(0, x.size, size) and indexes x; with
    # x sorted, the sorted resample is x at the sorted indices (an int32 sort, 3x cheaper)
    idx = rng.integers(0, x.size, size=(num_resamples, x.size)).astype(np.int32)
    samples = x[np.sort(idx, axis=1)]
    pending = fit_many_start(samples, np.full(num_resamples, x.size), min_tail=min_tail,
                             single=True, tier=BOOTSTRAP_TIER)

    def finish() -> BootstrapInterval:
        est = pending()[:, 0]
        ok = est[np.isfinite(est)]
        failed = num_resamples - ok.size
        if ok.size < 2:
            return BootstrapInterval(math.nan, math.nan, math.nan, confidence, num_resamples,
                                     failed)
        q = (1.0 - confidence) / 2.0
        lo, hi = np.quantile(ok, [q, 1.0 - q])
        return BootstrapInterval(float(lo), float(hi), float(np.std(ok, ddof=1)), confidence,
                                 num_resamples, failed)

    return finish
