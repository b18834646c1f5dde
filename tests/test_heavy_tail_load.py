"""The load experiment (`genbounds reproduce heavy-tail`) on a tiny configuration."""

from __future__ import annotations

import json

import jax
import pytest

from genbounds.experiments import run_load_sweep


def _sweep(tmp_path, sizes):
    # the training harness runs under standard promotion until it is strict-clean
    with jax.numpy_dtype_promotion("standard"):
        return run_load_sweep(tmp_path, sizes=sizes, width=16, max_epochs=2)


@pytest.mark.slow  # two trainings and their compilation: ~15-60 s on 2 shared cores
def test_load_sweep_one_size(tmp_path):
    rec = _sweep(tmp_path, (80,))
    assert [(r["labels"], r["n"]) for r in rec["runs"]] == [("true", 80), ("random", 80)]
    assert (tmp_path / "load.png").stat().st_size > 0


@pytest.mark.slow
def test_load_sweep_writes_records_and_plot(tmp_path):
    rec = _sweep(tmp_path, (100, 200))
    runs = rec["runs"]
    assert [(r["labels"], r["n"]) for r in runs] == [("true", 100), ("true", 200),
                                                     ("random", 100), ("random", 200)]
    for r in runs:
        assert r["load"] == r["n"] / r["num_weights"]
        assert set(r["layers"]) == {"Dense_0", "Dense_1", "Dense_2"}
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["protocol"]["sizes"] == [100, 200]
    assert (tmp_path / "load.png").stat().st_size > 0
    assert "load N/M" in (tmp_path / "summary.md").read_text()
