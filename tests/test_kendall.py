"""kendall_tau and granulated_kendall against brute force on small random populations, and
scipy.stats.kendalltau (tau-b; equal to tau-a without ties)."""

import itertools

import numpy as np
import pytest
from scipy.stats import kendalltau

from genbounds import granulated_kendall, kendall_tau
from genbounds.internal import bootstrap_kendall
from genbounds.internal import kendall_tau_weighted as _tau


def brute_tau_a(x, y):
    n = len(x)
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            for i in range(n) for j in range(n) if i != j)
    return s / (n * (n - 1))


@pytest.mark.parametrize("seed", range(5))
def test_tau_against_brute_force_and_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 15))
    x, y = rng.standard_normal(n), rng.standard_normal(n)
    assert kendall_tau(x, y) == pytest.approx(brute_tau_a(x, y), abs=1e-12)
    assert kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)  # no ties
    # ties: tau-a keeps tied pairs in the denominator, tau-b is scipy's
    xt, yt = np.round(x), np.round(y)
    assert kendall_tau(xt, yt) == pytest.approx(brute_tau_a(xt, yt), abs=1e-12)
    ref = kendalltau(xt, yt).statistic
    got = kendall_tau(xt, yt, variant="b")
    if np.isnan(ref):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(ref, abs=1e-12)


def test_tau_properties():
    x = np.arange(6.0)
    assert kendall_tau(x, 2 * x + 1) == 1.0
    assert kendall_tau(x, -x) == -1.0
    assert kendall_tau(np.ones(6), x) == 0.0


def brute_psi(x, y, grid, axes):
    """Enumerate every setting of the other axes; tau over the nets sharing it."""
    psi = {}
    for a in axes:
        others = [b for b in grid[0] if b != a]
        taus = []
        for setting in sorted({tuple(h[b] for b in others) for h in grid}):
            ix = [i for i, h in enumerate(grid) if tuple(h[b] for b in others) == setting]
            if len(ix) >= 2 and len({grid[i][a] for i in ix}) >= 2:
                taus.append(brute_tau_a(x[ix], y[ix]))
        if taus:
            psi[a] = np.mean(taus)
    return psi


@pytest.mark.parametrize("seed", range(4))
def test_psi_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    levels = {"depth": [1, 2, 3], "width": [16, 64], "lr": [1e-3, 1e-2], "seed": [0, 1]}
    grid = [dict(zip(levels, v, strict=True)) for v in itertools.product(*levels.values())]
    if seed % 2:  # an incomplete population: drop some networks
        keep = rng.random(len(grid)) > 0.3
        grid = [h for h, k in zip(grid, keep, strict=True) if k]
    n = len(grid)
    x, y = rng.standard_normal(n), rng.standard_normal(n)
    axes = ["depth", "width", "lr"]
    got = granulated_kendall(x, y, grid, axes=axes)
    ref = brute_psi(x, y, grid, axes)
    assert set(got.per_axis) == set(ref)
    for a in ref:
        assert got.per_axis[a] == pytest.approx(ref[a], abs=1e-12)
    assert got.psi == pytest.approx(np.mean(list(ref.values())), abs=1e-12)
    if seed % 2 == 0:  # full grid: m_i = prod of the other axes' sizes (seed included)
        assert got.num_groups == {"depth": 8, "width": 12, "lr": 12}
    # the columns form, and a measure equal to the gap
    cols = {k: [h[k] for h in grid] for k in grid[0]}
    assert granulated_kendall(x, y, cols, axes=axes) == got
    assert granulated_kendall(y, y, grid, axes=axes).psi == pytest.approx(1.0)


def test_weighted_tau_is_tau_over_distinct_pairs():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal(6), rng.standard_normal(6)
    c = np.array([2, 0, 1, 3, 0, 1])
    assert _tau(x, y, "a", np.ones(6)) == pytest.approx(kendall_tau(x, y), abs=1e-12)
    # expand the copies, pair every two copies of different networks
    idx = np.repeat(np.arange(6), c)
    num = den = 0.0
    for i, j in itertools.permutations(range(len(idx)), 2):
        if idx[i] != idx[j]:
            num += np.sign(x[idx[i]] - x[idx[j]]) * np.sign(y[idx[i]] - y[idx[j]])
            den += 1
    assert _tau(x, y, "a", c) == pytest.approx(num / den, abs=1e-12)
    draws = bootstrap_kendall(x, y, {"a": [0, 0, 0, 1, 1, 1], "b": [0, 1, 2, 0, 1, 2]},
                              num_resamples=50, seed=1)
    assert draws["tau"].shape == (50,) and np.all(np.abs(draws["tau"][~np.isnan(draws["tau"])]) <= 1)


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        kendall_tau([1.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        kendall_tau([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="variant"):
        kendall_tau([1.0, 2.0], [1.0, 2.0], variant="c")
    with pytest.raises(ValueError, match="not columns"):
        granulated_kendall([1.0, 2.0], [1.0, 2.0], {"lr": [1, 2]}, axes=["depth"])
    with pytest.raises(ValueError, match="3 networks|2 values"):
        granulated_kendall([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], {"lr": [1, 2]})
    with pytest.raises(TypeError, match="hparams"):
        granulated_kendall([1.0, 2.0], [1.0, 2.0], 3)
