"""Union bounds over a geometric grid: how data-dependent norms and margins are paid for.

A bound proved for norms and a margin fixed before seeing the data is applied at grid points
$(1+r)^k$, $k \\in \\mathbb{Z}$, with prior weight $p(k) = 2 / (3(|k|+1)(|k|+2))$ on each index
($\\sum_{k\\in\\mathbb{Z}} p(k) = \\frac23(\\frac12 + 2 \\cdot \\frac12) = 1$). A configuration of
indices $(k_1, \\dots, k_J)$ is used with confidence $\\delta \\prod_j p(k_j)$; these sum to
$\\delta$ over all configurations, so with probability at least $1 - \\delta$ every fixed-grid bound
holds at once (docs/bounds/spectral.md).
"""

from __future__ import annotations

import math


def grid_log_prior(k: int) -> float:
    """$-\\ln p(k)$ for $p(k) = 2 / (3(|k|+1)(|k|+2))$."""
    a = abs(int(k))
    return math.log(1.5) + math.log(a + 1) + math.log(a + 2)


def grid_up(x: float, ratio: float) -> int:
    """The smallest k with $(1+r)^k \\ge x$ (x > 0)."""
    if not (x > 0.0 and math.isfinite(x)):
        raise ValueError(f"grid_up needs a finite x > 0, got {x!r}")
    k = math.ceil(math.log(x) / math.log1p(ratio))
    while (1.0 + ratio) ** (k - 1) >= x:
        k -= 1
    while (1.0 + ratio) ** k < x:
        k += 1
    return k


def grid_down(x: float, ratio: float) -> int:
    """The largest k with $(1+r)^k \\le x$ (x > 0)."""
    k = -grid_up(1.0 / x, ratio)
    while (1.0 + ratio) ** k > x:
        k -= 1
    while (1.0 + ratio) ** (k + 1) <= x:
        k += 1
    return k


def grid_value(k: int, ratio: float) -> float:
    return (1.0 + ratio) ** k
