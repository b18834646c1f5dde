r"""The Marchenko-Pastur fit of an ESD's bulk: its scale, bulk edge, spikes and soft rank.

For an $N \times M$ matrix ($N \ge M$, aspect ratio $Q = N/M \ge 1$; not the tail exponent nor
the load $N/M$ of a training set) with i.i.d. entries of variance $\sigma^2$, the eigenvalues of
$W^\top W$ normalised to mean 1 follow, as $N, M \to \infty$ at fixed $Q$, the
Marchenko-Pastur law with support $[\sigma^2(1-Q^{-1/2})^2, \sigma^2(1+Q^{-1/2})^2]$
(Marchenko & Pastur 1967; Martin & Mahoney 2021, JMLR 22(165), arXiv:1810.01075, section 2).
Martin & Mahoney fit $\sigma$ to the bulk of a trained layer's ESD and read the eigenvalues past
the bulk edge as "spikes" (correlations the training put in).

The fit is WeightWatcher 0.7.7's (``RMT_Util.fit_density_with_range`` / ``resid_mp``): the
eigenvalues are rescaled to mean 1, a linear-kernel density estimate (bandwidth 0.1) is taken
on 1000 points of $[0, \max + 0.5]$, points of density below 0.01 are ignored, and $\sigma$
minimises the squared residual between the MP density and the estimate by a grid search over
$[0.05 s_0, 2 s_0)$ in steps of $0.01 s_0$ ($s_0 = \sqrt{\max}/(1 + Q^{-1/2})$) polished by
Nelder-Mead (``scipy.optimize.brute`` with its default ``fmin``). WeightWatcher refits the
density at every one of the ~250 residual evaluations; it depends only on the eigenvalues, so
here it is computed once per layer, which gives the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

_GRID = 1000
_THRESH = 0.01
_BANDWIDTH = 0.1


@dataclasses.dataclass(frozen=True)
class MPFit:
    """The Marchenko-Pastur fit of one ESD.

    Attributes:
      sigma_mp: the fitted scale $\\sigma$ (of the ESD rescaled to mean 1).
      bulk_max, bulk_min: the MP bulk edges in the units of the eigenvalues.
      num_spikes: eigenvalues past the bulk edge plus a Tracy-Widom-sized margin.
      softrank: ``bulk_max / lambda_max`` (the MP soft rank).
      Q: the aspect ratio $N/M$ used.
      status: ``"success"`` or ``"failed: <reason>"``.
    """

    sigma_mp: float
    bulk_max: float
    bulk_min: float
    num_spikes: int
    softrank: float
    Q: float
    status: str = "success"


def linear_kde(samples: np.ndarray, points: np.ndarray, bandwidth: float) -> np.ndarray:
    r"""Density estimate with the linear kernel $K(u) = (1 - |u|)_+ / h$ (scikit-learn's
    ``KernelDensity(kernel='linear')``), summed exactly by prefix sums: for a point $t$ the
    samples in $[t - h, t)$ contribute $c_- - (c_- t - s_-)/h$ and those in $[t, t + h]$
    contribute $c_+ - (s_+ - c_+ t)/h$, with $c_\pm$ their counts and $s_\pm$ their sums
    (samples at distance exactly $h$ contribute 0 either way)."""
    samples = np.sort(np.asarray(samples, np.float64))
    points = np.asarray(points, np.float64)
    csum = np.concatenate([[0.0], np.cumsum(samples)])
    lo = np.searchsorted(samples, points - bandwidth, side="left")
    mid = np.searchsorted(samples, points, side="left")
    hi = np.searchsorted(samples, points + bandwidth, side="right")
    c_lo, s_lo = mid - lo, csum[mid] - csum[lo]
    c_hi, s_hi = hi - mid, csum[hi] - csum[mid]
    left = c_lo - (c_lo * points - s_lo) / bandwidth
    right = c_hi - (s_hi - c_hi * points) / bandwidth
    return np.maximum(left + right, 0.0) / (samples.size * bandwidth)


class _Density:
    """The KDE of one (rescaled) ESD on WeightWatcher's grid: computed once, used by every
    residual evaluation."""

    def __init__(self, to_fit: np.ndarray, Q: float):
        xde = np.linspace(0, np.max(to_fit) + 0.5, _GRID)
        # WW: yde = exp(kde.score_samples(...)); the exp/log round trip kept for equality.
        with np.errstate(divide="ignore"):
            yde = np.exp(np.log(linear_kde(to_fit, xde, _BANDWIDTH)))
        good = np.where(yde > _THRESH)[0]
        self.xde, self.yde = xde[good], yde[good]
        self.Q = Q
        self.peak = self.xde[np.where(self.yde == max(self.yde))][0] if good.size else math.nan

    def residual(self, p: Any) -> Any:
        """``resid_mp(p, evals, Q, bw, allresid=False)``: sum of squared residuals."""
        sigma = p
        xde, yde, Q = self.xde, self.yde, self.Q
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with np.errstate(all="ignore"):
                if Q == 1:
                    ymp = np.nan_to_num((1 / (np.pi * sigma * sigma)) * np.sqrt(4 - xde ** 2))
                    resid = ymp - yde
                else:
                    y = 1 / Q
                    b = np.power(sigma * (1 + np.sqrt(1 / Q)), 2)
                    a = np.power(sigma * (1 - np.sqrt(1 / Q)), 2)
                    ymp = np.nan_to_num((1 / (2 * np.pi * sigma * sigma * xde * y))
                                        * np.sqrt((b - xde) * (xde - a)))
                    if (b < self.peak) | (b > max(xde)) | (a > self.peak):
                        resid = np.zeros(len(yde)) + 1000
                    else:
                        resid = ymp - yde
        return np.sum(resid ** 2)


def _brute(density: _Density, s0: float) -> float:
    from scipy import optimize

    rng = (slice(0.05 * s0, 2.0 * s0, 0.01 * s0),)
    out = optimize.brute(lambda p: density.residual(p), rng, full_output=True)
    return float(out[0][0])


def mp_fit(evals: Any, *, Q: float, M: int) -> MPFit:
    """Fits the Marchenko-Pastur law to a spectrum (see the module docstring).

    Args:
      evals: the eigenvalues of $W^\\top W$ (all of them, the bulk included).
      Q: the aspect ratio $N/M$ (>= 1 for the law as written; WeightWatcher passes what its
        layer reader gives).
      M: the number of eigenvalues per matrix, for the Tracy-Widom-sized margin
        $\\sqrt{Q^{-1/2} b^{2/3} M^{-2/3}}$ past the bulk edge $b$ that counts a spike.

    Returns:
      An `MPFit`.
    """
    evals = np.asarray(evals, np.float64)
    total = np.sum(evals)
    if not total > 0:
        return MPFit(math.nan, math.nan, math.nan, -1, math.nan, Q, "failed: zero spectrum")
    wscale = np.sqrt(evals.shape[0]) / np.sqrt(total)
    to_plot = (wscale * wscale) * evals
    lambda_max = np.max(to_plot)
    to_fit = np.sqrt(to_plot) if Q == 1 else to_plot
    inv_sq = 1.0 / np.sqrt(Q)
    s0 = np.sqrt(np.max(to_plot) / np.square(1 + inv_sq))
    density = _Density(to_fit, Q)
    if not density.xde.size:
        return MPFit(math.nan, math.nan, math.nan, -1, math.nan, Q, "failed: empty density")
    s1 = _brute(density, float(s0))
    bulk_max = (s1 * (1 + 1 / np.sqrt(Q))) ** 2
    bulk_min = (s1 * (1 - 1 / np.sqrt(Q))) ** 2
    tw = 1 / np.sqrt(Q) * np.power(bulk_max, 2 / 3) * np.power(M, -2 / 3)
    num_spikes = int(np.sum(to_plot > bulk_max + np.sqrt(tw)))
    return MPFit(sigma_mp=s1, bulk_max=float(bulk_max / (wscale * wscale)),
                 bulk_min=float(bulk_min / (wscale * wscale)), num_spikes=num_spikes,
                 softrank=float(bulk_max / lambda_max), Q=float(Q))


def mp_density(x: np.ndarray, *, Q: float, sigma: float) -> np.ndarray:
    """The Marchenko-Pastur density of eigenvalues (mean-1 units) at ``x`` (for plots)."""
    b = (sigma * (1 + Q ** -0.5)) ** 2
    a = (sigma * (1 - Q ** -0.5)) ** 2
    with np.errstate(all="ignore"):
        y = Q * np.sqrt(np.clip((b - x) * (x - a), 0, None)) / (2 * np.pi * sigma ** 2 * x)
    return np.where((x > a) & (x < b), y, 0.0)
