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
from collections.abc import Sequence
from typing import NamedTuple


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
    """The grid point $(1+r)^k$."""
    return (1.0 + ratio) ** k


def grid_ratio(loss: float, degree: int) -> float:
    """The ratio $r = (1 + \\text{loss})^{1/\\text{degree}} - 1$: rounding `degree` factors to the
    grid $(1+r)^k$ inflates their product by at most $1 + \\text{loss}$."""
    return (1.0 + loss) ** (1.0 / degree) - 1.0


class GridRounding(NamedTuple):
    """Values rounded to geometric grids, with the union bound's price.

    Attributes:
      k: per group, the grid indices.
      values: per group, the grid values $(1+r)^k$.
      log_prior: $\\sum_j -\\ln p(k_j)$ over every index of every group, the term a bound adds to
        $\\ln(1/\\delta)$ to hold at all grid points at once.
    """

    k: tuple[tuple[int, ...], ...]
    values: tuple[tuple[float, ...], ...]
    log_prior: float


def union_grid(*groups: tuple[str, Sequence[float], float]) -> GridRounding:
    """Rounds each group of numbers to its grid and prices the union bound over all of them.

    Each group is ``(direction, xs, ratio)``: ``"up"`` rounds every x > 0 up to the grid
    $(1+r)^k$ (an x <= 0 goes to k = 0, value 1: still above it), ``"down"`` rounds every
    x > 0 down. The log prior is summed group by group, in the order given.

    Examples:
      >>> g = union_grid(("up", [3.0, 0.0], 1.0), ("down", [3.0], 1.0))
      >>> g.k, g.values
      (((2, 0), (1,)), ((4.0, 1.0), (2.0,)))
    """
    ks, values, priors = [], [], []
    for direction, xs, ratio in groups:
        if direction == "up":
            k = tuple(grid_up(x, ratio) if x > 0.0 else 0 for x in xs)
        elif direction == "down":
            k = tuple(grid_down(x, ratio) for x in xs)
        else:
            raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
        ks.append(k)
        values.append(tuple(grid_value(j, ratio) for j in k))
        priors.append(sum(grid_log_prior(j) for j in k))
    return GridRounding(tuple(ks), tuple(values), sum(priors))
