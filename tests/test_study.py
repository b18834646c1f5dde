"""genbounds study: grid and axis parsing, the scoring of synthetic populations against
kendall_tau / granulated_kendall, the CLI registration; the --quick run end to end (slow), with
resumption from the records it wrote."""

import json
import math

import numpy as np
import pytest

from genbounds import granulated_kendall, kendall_tau
from genbounds.experiments import build_parser, main, run_study
from genbounds.internal import (
    STUDY_DEFAULT_GRID,
    STUDY_FIXED,
    study_grid_configs,
    study_net_id,
    study_parse_axis,
    study_score,
    study_table_markdown,
)


def test_default_grid_has_at_least_32_nets_and_distinct_ids():
    cfgs = study_grid_configs(STUDY_DEFAULT_GRID, STUDY_FIXED)
    assert len(cfgs) >= 32
    assert len({study_net_id(c, 0) for c in cfgs}) == len(cfgs)
    assert all(2 <= len(v) <= 3 for v in STUDY_DEFAULT_GRID.values())


def test_parse_axis():
    assert study_parse_axis("lr=1e-3,3e-3") == ("lr", (1e-3, 3e-3))
    assert study_parse_axis("depth=1,2,3") == ("depth", (1, 2, 3))
    assert study_parse_axis("batch-size=32,64") == ("batch_size", (32, 64))
    for bad, msg in (("lr", "NAME=V1,V2"), ("momentum=1,2", "unknown"), ("lr=1e-3", "two"),
                     ("depth=1,x", "not a number"), ("lr=1,1", "distinct")):
        with pytest.raises(ValueError, match=msg):
            study_parse_axis(bad)


def synthetic_records(rng, grid):
    recs = []
    for i, cfg in enumerate(study_grid_configs(grid, STUDY_FIXED)):
        gap = rng.random()
        recs.append({"id": str(i), "config": cfg, "seed": 0, "reached": i != 3, "gap": gap,
                     "measures": {
                         "oracle": {"value": gap, "eq": "", "kind": "measure"},
                         "noise": {"value": float(rng.standard_normal()), "eq": "1",
                                   "kind": "measure"},
                         "partial": {"value": None if i % 2 else 1.0, "eq": "", "kind": "bound"},
                     }})
    return recs


def test_score_matches_the_public_functions():
    rng = np.random.default_rng(0)
    grid = {"depth": (1, 2, 3), "lr": (1e-3, 1e-2)}
    recs = synthetic_records(rng, grid)
    rows = {r["measure"]: r for r in study_score(recs, list(grid), num_resamples=40)}
    used = [r for r in recs if r["reached"]]  # the net that missed the criterion is left out
    gap = np.array([r["gap"] for r in used])
    hp = {a: [r["config"][a] for r in used] for a in grid}
    mu = np.array([r["measures"]["noise"]["value"] for r in used])
    assert rows["noise"]["num_nets"] == len(used) == 5
    assert rows["noise"]["tau"] == pytest.approx(kendall_tau(mu, gap), abs=1e-12)
    assert rows["noise"]["psi"] == pytest.approx(granulated_kendall(mu, gap, hp).psi, abs=1e-12)
    assert rows["oracle"]["tau"] == 1.0 and rows["oracle"]["psi"] == 1.0
    lo, hi = rows["noise"]["tau_ci95"]
    assert -1.0 <= lo <= hi <= 1.0
    # a measure missing on some nets is scored on the others (constant here: tau = 0)
    assert rows["partial"]["num_nets"] == 3 and rows["partial"]["tau"] == 0.0
    md = study_table_markdown(list(rows.values()), list(grid))
    assert md.count("\n") == len(rows) + 2 and "| oracle |" in md


def test_cli_registers_study():
    args = build_parser().parse_args(["study", "--quick", "--out", "x", "--axis", "lr=1e-3,1e-2"])
    assert args.quick and args.axis == ["lr=1e-3,1e-2"] and args.func.__name__ == "cmd_study"
    assert main(["study", "--out", "x", "--axis", "lr"]) == 2  # a ValueError, reported


@pytest.mark.slow
def test_quick_study_end_to_end_and_resume(tmp_path, monkeypatch):
    out = tmp_path / "study"
    assert main(["study", "--quick", "--out", str(out), "--resamples", "20"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (out / "study.png").stat().st_size > 0 and (out / "table.md").exists()
    nets = res["networks"]
    assert len(nets) == 4
    for r in nets:  # the stopping criterion is recorded, and the gap is test - train error
        assert r["reached"] == (r["train_loss"] <= 0.01)
        assert r["gap"] == pytest.approx(r["test_error"] - r["train_error"])
        for name in ("sharpness_flatness", "sharpness_mag_flatness", "vc_dim", "l2", "l2_dist",
                     "pac_bayes_flatness", "bound:pac_bayes", "bound:golowich"):
            assert name in r["measures"], name
        # every bound is a bound: never below the measured test error
        for name, m in r["measures"].items():
            if m["kind"] == "bound" and m["value"] is not None:
                assert m["value"] >= r["test_error"], name
    names = {row["measure"] for row in res["scores"]}
    assert {"sharpness_flatness", "path_norm", "bound:spectral"} <= names
    for row in res["scores"]:
        assert -1.0 <= row["tau"] <= 1.0 and (math.isnan(row["psi"]) or -1 <= row["psi"] <= 1)
    # resuming: every network is read back from its record, nothing is retrained
    import genbounds.train

    def no_training(*args, **kwargs):
        raise AssertionError("a finished network was trained again")

    monkeypatch.setattr(genbounds.train, "train", no_training)
    monkeypatch.setattr(genbounds.train, "train_population", no_training)
    again = run_study(out, quick=True, num_resamples=20)
    assert [r["measures"] for r in again["networks"]] == [r["measures"] for r in nets]
