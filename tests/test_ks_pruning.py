"""The pruned (branch-and-bound) KS scans over xmin candidates give exactly what the full scans
give: the same alpha, xmin, KS distance and tail size for the default rule (`fit_many`), the same
argmin and distance for WeightWatcher's rule (`ks_scan_pruned`), on Student-t, Gaussian and pure
Pareto spectra, with ties, in float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest

from genbounds.internal import ks_fit_many, ks_scan, ks_scan_pruned, tail_log_sums
from genbounds.spectra._ks_scan import BOOTSTRAP_TIER


def _spectrum(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "t":
        return np.linalg.svd(rng.standard_t(2.5, size=(int(n * 1.5), n)), compute_uv=False) ** 2
    if kind == "g":
        return np.linalg.svd(rng.standard_normal((int(n * 1.2), n)), compute_uv=False) ** 2
    return (1 - rng.random(n)) ** (-1 / 1.5)  # a pure Pareto tail: the certificate often fails


@pytest.mark.parametrize("kind", ["t", "g", "p"])
@pytest.mark.parametrize("single", [True, False])
def test_default_rule_pruned_scan_equals_the_full_scan(kind, single):
    rng = np.random.default_rng({"t": 0, "g": 1, "p": 2}[kind])
    for n in (40, 300):
        ev = _spectrum(kind, n, rng)
        s = np.sort(rng.choice(ev, size=(24, n), replace=True), axis=1)
        counts = np.full(24, n)
        full = ks_fit_many(s, counts, min_tail=10, single=single, prune=False)
        pruned = ks_fit_many(s, counts, min_tail=10, single=single, prune=True)
        np.testing.assert_array_equal(pruned, full)  # bit for bit (NaN where both fail)


def test_weightwatcher_rule_pruned_scan_has_the_same_argmin_and_distance():
    rng = np.random.default_rng(3)
    for trial in range(45):
        n = int(rng.choice([20, 60, 200, 700]))
        ev = _spectrum("tgp"[trial % 3], n, rng)
        if trial % 5 == 0:
            ev = np.round(ev, 1) + 0.1  # ties
        x = np.sort(ev)
        x = x[x > 1e-5]
        cand = np.arange(x.size - 1)
        ni = (x.size - cand).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            alphas = 1.0 + ni / tail_log_sums(np.log(x))[cand]
        full = ks_scan(x, cand, alphas, two_sided=False)
        pruned = ks_scan_pruned(x, cand, alphas)
        i, j = int(np.argmin(full)), int(np.argmin(pruned))
        assert i == j and full[i] == pruned[j], (trial, n)
        assert np.all(pruned <= full + 1e-12)  # the pruned values are lower bounds elsewhere


def test_default_rule_pruned_scan_with_ties_and_rows_of_different_lengths():
    # rows of one call hold samples of different sizes (the rest padding), some with ties:
    # the bound's blocks of candidates and their shared spread points must respect each n
    rng = np.random.default_rng(4)
    ev = _spectrum("t", 300, rng)
    rows, counts = [], []
    for r in range(24):  # the shapes of the test above: its compilations serve
        n = int(rng.integers(150, 300))
        s = rng.choice(ev, size=n, replace=True)
        if r % 4 == 0:
            s = np.round(s, 1) + 0.1
        rows.append(np.pad(np.sort(s), (0, 300 - n), constant_values=np.inf))
        counts.append(n)
    s, counts = np.stack(rows), np.array(counts)
    for single in (True, False):
        full = ks_fit_many(s, counts, min_tail=10, single=single, prune=False)
        pruned = ks_fit_many(s, counts, min_tail=10, single=single, prune=True)
        np.testing.assert_array_equal(pruned, full)


def test_bootstrap_tier_equals_the_full_scan():
    # the bootstrap's lighter first tier (fewer bound points and exact rows) and its fallbacks
    # where the certificate fails (pure Pareto tails: often) give the full scan bit for bit,
    # in float64 (float32, the bootstrap's dtype, runs the same kernel)
    rng = np.random.default_rng(5)
    for kind in ("t", "p"):
        ev = _spectrum(kind, 300, rng)
        s = np.sort(rng.choice(ev, size=(24, 300), replace=True), axis=1)
        counts = np.full(24, 300)
        full = ks_fit_many(s, counts, min_tail=10, prune=False)
        tiered = ks_fit_many(s, counts, min_tail=10, tier=BOOTSTRAP_TIER)
        np.testing.assert_array_equal(tiered, full)
