"""`genbounds reproduce cmi`: the command reaches the runner with its options, refuses what does
not apply, and a tiny real run writes results.json, summary.md and the plot."""

from __future__ import annotations

import json

import pytest

from genbounds.experiments.cli import main


def test_reproduce_cmi_is_wired(monkeypatch, tmp_path, capsys):
    import genbounds.experiments as ex

    seen = {}

    def fake(dataset, out, **kw):
        seen.update(dataset=dataset, **kw)
        return {}

    monkeypatch.setattr(ex, "reproduce_cmi", fake)
    assert main(["reproduce", "cmi", "--n", "75,150", "--masks", "4", "--supersamples", "2",
                 "--out", str(tmp_path / "c")]) == 0
    assert seen == {"dataset": "digits-binary", "seed": 0, "num_masks": 4,
                    "num_supersamples": 2, "ns": (75, 150)}
    seen.clear()
    assert main(["reproduce", "cmi", "--dataset", "mnist1d", "--out", str(tmp_path / "d")]) == 0
    assert seen["dataset"] == "mnist1d" and "ns" not in seen  # the runner's default sizes
    capsys.readouterr()


@pytest.mark.parametrize("argv,message", [
    (["reproduce", "dziugaite-roy", "--n", "75"], "--n applies to `reproduce cmi` only"),
    (["reproduce", "cmi", "--dataset", "mnist"], "--dataset: cmi runs on"),
    (["reproduce", "cmi", "--masks", "1"], "--masks must be >= 2"),
])
def test_reproduce_cmi_refuses_what_does_not_apply(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err


def test_reproduce_cmi_bad_sizes_are_a_parse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "cmi", "--n", "75,1.5"])
    assert e.value.code == 2
    assert "--n must be comma-separated numbers" in capsys.readouterr().err


def test_tiny_reproduce_cmi_run_writes_its_record(tmp_path):
    from genbounds.experiments import reproduce_cmi

    rec = reproduce_cmi("digits-binary", tmp_path, ns=(8,), num_masks=4, num_supersamples=1,
                        steps=10, width=8, num_bootstrap=5, verbose=False)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["rows"][0]["n"] == 8 and on_disk["settings"]["num_masks"] == 4
    assert (tmp_path / "cmi.png").stat().st_size > 0 and (tmp_path / "summary.md").exists()
    row = rec["rows"][0]
    for b in row["bounds"].values():
        if row["mean_gap"] > 0:
            assert b["ratio_to_gap"] == pytest.approx(b["gap_bound"] / row["mean_gap"])
    assert rec["best_at_largest_n"]["gap_bound"] == min(
        b["gap_bound"] for b in row["bounds"].values())
    assert (tmp_path / "n8" / "supersample-0.npz").exists()  # resumable
