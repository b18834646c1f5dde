"""The notebook-style tutorial in docs/ runs end to end (reduced size)."""

import os
import runpy
from pathlib import Path


def test_tutorial_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBOUNDS_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("GENBOUNDS_TUTORIAL_FIG", str(tmp_path / "fig.png"))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(Path(__file__).parent.parent / "docs" / "tutorial.py"), run_name="__main__")
    assert (tmp_path / "fig.png").stat().st_size > 5000
    assert os.listdir(tmp_path) == ["fig.png"]
