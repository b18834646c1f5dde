"""The `genbounds` command line: the demo end to end (reduced), train/report, bad input."""

import json
import os
import stat
import subprocess
import sys

import pytest

from genbounds.experiments import main


def _validate(payload):
    assert set(payload) >= {"genbounds", "created", "config", "delta", "records"}
    assert [r["label_noise"] for r in payload["records"]] == [0.0, 0.5, 1.0]
    for r in payload["records"]:
        for key, typ in (("dataset", str), ("label_noise", float), ("train_error", float),
                         ("test_error", float), ("epochs", int), ("bounds", list)):
            assert isinstance(r[key], typ), key
        assert r["bounds"], "no bounds"
        for b in r["bounds"]:
            assert set(b) >= {"name", "value", "complexity", "vacuous"}
            assert isinstance(b["value"], float) and b["vacuous"] == (b["value"] >= 1.0)
            # soundness on the demo's nets: no bound below the measured test error
            assert b["value"] >= r["test_error"]


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0  # flatness measures included
    payload = json.loads((out / "results.json").read_text())
    _validate(payload)
    recs = payload["records"]
    assert recs[0]["train_error"] == 0.0 and recs[2]["train_error"] == 0.0  # both fit
    assert recs[2]["test_error"] > recs[0]["test_error"]
    rad = [m for m in recs[0]["measures"] if m["name"] == "rademacher"]
    assert rad and rad[0]["estimated"] and rad[0]["complexity"] > 0.5  # Zhang et al.: about 1
    assert not any(b["name"] == "rademacher" for b in recs[0]["bounds"])
    assert (out / "bounds.png").stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "results.json" in printed and str(out) in printed
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temporary leftovers


def test_train_then_report(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--n", "200", "--width", "32", "--depth", "1",
                 "--max-epochs", "300"]) == 0
    assert (run / "params.msgpack").exists() and (run / "run.json").exists()
    assert main(["report", str(run)]) == 0
    rep = json.loads((run / "report.json").read_text())
    assert rep["train_error"] == 0.0
    bounds = [r for r in rep["records"] if r["kind"] == "bound"]
    assert bounds and all(r["value"] >= rep["test_error"] for r in bounds)
    # a corrupt parameter file is a clear error, not a silent restart
    (run / "params.msgpack").write_bytes(b"\x00garbage")
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt" in err and "params.msgpack" in err


def test_unwritable_output(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(locked, os.W_OK):  # root ignores permissions
        pytest.skip("running as a user that can write anywhere")
    assert main(["demo", "--quick", "--out", str(locked / "x")]) == 2
    assert "--out: cannot write" in capsys.readouterr().err


def test_file_as_output_directory(tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    assert main(["demo", "--quick", "--out", str(f / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out: cannot write" in err
    assert f.read_text() == "x"


@pytest.mark.parametrize(
    "argv",
    [["sweep", "--label-noise", "0,1.5"], ["sweep", "--label-noise", "a,b"],
     ["demo", "--delta", "1.5"], ["train", "--out", "x", "--label-noise", "-0.1"],
     ["train", "--out", "x", "--dataset", "cifar"], ["nonsense"]],
)
def test_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and err.count("\n") == 1 and "--help" in err  # one line


def test_width_zero_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # refused while parsing, before any work
        main(["train", "--out", str(tmp_path / "r"), "--width", "0"])
    assert e.value.code == 2
    assert "--width must be an integer >= 1, got 0" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "genbounds.experiments.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for cmd in ("demo", "train", "report", "sweep"):
        assert cmd in out


def test_reproduce_dziugaite_roy_is_wired(monkeypatch, tmp_path, capsys):
    # The experiment itself is tested in test_dziugaite_roy.py; here: the command reaches it.
    import genbounds.experiments as dr

    seen = {}

    def fake(dataset, out, *, seed, download):
        seen.update(dataset=dataset, out=out, seed=seed, download=download)
        (out / "results.json").write_text("{}")
        (out / "summary.md").write_text("")
        return {}

    monkeypatch.setattr(dr, "reproduce_dziugaite_roy", fake)
    assert main(["reproduce", "dziugaite-roy", "--out", str(tmp_path / "dr")]) == 0
    assert seen["dataset"] == "digits" and seen["seed"] == 0 and not seen["download"]
    assert "results.json" in capsys.readouterr().out
