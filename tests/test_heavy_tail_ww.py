"""`heavy_tail(preset="weightwatcher")` against WeightWatcher 0.7.7's own outputs.

tests/data/weightwatcher_reference.json was written by benchmarks/make_ww_reference.py, which ran
WeightWatcher 0.7.7 (torch, CPU, scipy SVD) on small fixed-seed weights: Dense layers, a
heavy-tailed (Student-t) layer, a 9-eigenvalue layer (WeightWatcher's small-N fit), a 6-column
layer it skips, and conv layers in both of its channel branches with its N/M exchange (2x2,
32 -> 16). The default pass and the full pass (MP fit + randomisation after
``np.random.seed(0)``). WeightWatcher is not needed to run this test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import genbounds

REF = json.loads((Path(__file__).parent / "data" / "weightwatcher_reference.json").read_text())


def make_weight(shape, dist, seed):
    """The recipe of benchmarks/make_ww_reference.py."""
    rng = np.random.default_rng(seed)
    fan_in = int(np.prod(shape[:-1]))
    w = rng.standard_normal(shape) if dist == "normal" else rng.standard_t(float(dist[1:]),
                                                                           size=shape)
    return (w / np.sqrt(fan_in)).astype(np.float32)


def _params(model):
    out = {}
    for spec in model["layers"]:
        w = make_weight(tuple(spec["shape"]), spec["dist"], spec["seed"])
        assert float(np.sum(w.astype(np.float64))) == spec["checksum"], "weight stream changed"
        out[spec["name"]] = {"kernel": w}
    return out


def _close(ours, ref, rtol):
    if isinstance(ref, str):
        return ours == ref
    if ref is None or (isinstance(ref, float) and math.isnan(ref)):
        return ours is None or math.isnan(float(ours))
    return abs(float(ours) - ref) <= rtol * max(abs(ref), 1e-300) or float(ours) == ref


@pytest.mark.parametrize("model", sorted(REF["models"]))
@pytest.mark.parametrize("full", [False, True], ids=["default", "full"])
def test_matches_weightwatcher(model, full):
    m = REF["models"][model]
    res = genbounds.heavy_tail(_params(m), preset="weightwatcher", mp_fit=full,
                               randomize=full, seed=REF["full_seed"])
    rows = m["full" if full else "default"]
    # the same layers analysed (WeightWatcher drops the small ones silently; we list them)
    assert [x.name for x in res.layers] == [r["layer"] for r in rows]
    analysed = {r["layer"] for r in rows}
    assert {n for n, _ in res.skipped} == {s["name"] for s in m["layers"]} - analysed
    for ours, ref in zip(res.layers, rows, strict=True):
        assert ours["xmin"] == ref["xmin"], ours.name  # the same eigenvalue
        assert abs(ours["alpha"] - ref["alpha"]) <= 1e-9, ours.name
        for k, v in ref.items():
            if k == "layer":
                continue
            assert _close(ours[k], v, 1e-9), (ours.name, k, ours[k], v)
    s = res.summary()
    for k, v in m["full_summary" if full else "default_summary"].items():
        assert _close(s[k], v, 1e-9), (k, s[k], v)


def test_conv_exchange_of_N_and_M_is_reproduced_and_not_in_default():
    m = REF["models"]["cnn"]
    ww = genbounds.heavy_tail(_params(m), preset="weightwatcher")
    assert (ww["conv2"]["N"], ww["conv2"]["M"]) == (16, 32)  # 2x2, 32 -> 16: swapped
    ours = genbounds.heavy_tail(_params(m), bootstrap=0)
    assert (ours["conv2"]["N"], ours["conv2"]["M"], ours["conv2"]["Q"]) == (32, 16, 2.0)
    # WeightWatcher halves conv eigenvalues; the default preset does not
    np.testing.assert_allclose(ww["conv1"].evals * 2, ours["conv1"].evals, rtol=1e-5)
