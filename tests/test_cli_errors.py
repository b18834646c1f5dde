"""The command line on a user's mistakes: one line naming the argument, the file and what was
expected, exit code 2, a traceback only with --debug; locks on every directory a command
writes; cached work never mixed across settings; report.json says what it was computed from."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from genbounds.experiments import UserError, main, run_study
from genbounds.internal import file_sha256, keep_settings, study_net_key, study_settings

_NETS = textwrap.dedent('''
    import flax.linen as nn


    class Net(nn.Module):
        width: int = 8

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.relu(nn.Dense(self.width)(x)))


    class BN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.BatchNorm(use_running_average=True)(nn.Dense(8)(x))
            return nn.Dense(3)(nn.relu(x))


    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(2, (3, 3))(x))
            return nn.Dense(3)(x.reshape((x.shape[0], -1)))


    model, wide, bn, cnn = Net(), Net(width=16), BN(), CNN()


    def apply(params, x):
        return model.apply({"params": params}, x)
''')


def _save(path: Path, tree) -> None:
    path.write_bytes(serialization.msgpack_serialize(serialization.to_state_dict(tree)))


@pytest.fixture
def user_files(tmp_path, monkeypatch):
    """A model module, checkpoints of several models and .npz files, in the working directory."""
    (tmp_path / "nets_err.py").write_text(_NETS)
    (tmp_path / "boom_err.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(_NETS, "nets_err.py", "exec"), ns)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40).astype(np.int32)
    images = rng.normal(size=(40, 5, 5, 1)).astype(np.float32)
    np.savez("data.npz", X_train=X, y_train=y)
    np.savez("float_labels.npz", X_train=X, y_train=y.astype(np.float64))
    np.savez("string_labels.npz", X_train=X, y_train=np.array(["cat"] * 40))
    np.savez("string_inputs.npz", X_train=np.array([["a"] * 6] * 40), y_train=y)
    np.savez("label_too_big.npz", X_train=X, y_train=np.full(40, 3))
    np.savez("flat.npz", X_train=images.reshape(40, -1), y_train=y)
    key = jax.random.key(0)
    _save(tmp_path / "net.msgpack", ns["model"].init(key, X[:1]))
    _save(tmp_path / "wide.msgpack", ns["wide"].init(key, X[:1]))
    _save(tmp_path / "bn_params_only.msgpack", {"params": ns["bn"].init(key, X[:1])["params"]})
    _save(tmp_path / "cnn.msgpack", ns["cnn"].init(key, images[:1]))
    nan = ns["model"].init(key, X[:1])
    nan["params"]["Dense_0"]["bias"] = np.full_like(nan["params"]["Dense_0"]["bias"], np.nan)
    _save(tmp_path / "nan.msgpack", nan)
    return tmp_path


def _fails(argv, capsys, *needles):
    """`main(argv)` exits with 2 and one line on stderr holding every needle, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _report(model, checkpoint, data):
    return ["report", "--model", model, "--checkpoint", checkpoint, "--data", data,
            "--out", "o"]


@pytest.mark.parametrize("model, checkpoint, data, needles", [
    # a checkpoint of another model: the differing paths and shapes, both files named
    ("nets_err.py:model", "wide.msgpack", "data.npz",
     ("--checkpoint wide.msgpack", "--model nets_err.py:model", "Dense_1/kernel has shape "
      "(6, 16), the model's is (6, 8)", "another model")),
    # the same through an apply function: the model's own error, on one line
    ("nets_err.py:apply", "wide.msgpack", "data.npz",
     ("--model nets_err.py:apply", "--checkpoint wide.msgpack", "--data data.npz",
      "ScopeParamShapeError")),
    # BatchNorm without its statistics
    ("nets_err.py:bn", "bn_params_only.msgpack", "data.npz",
     ("--checkpoint bn_params_only.msgpack", "'batch_stats'", "--model nets_err.py:bn")),
    # flat vectors for a CNN
    ("nets_err.py:cnn", "cnn.msgpack", "flat.npz",
     ("--model nets_err.py:cnn", "--data flat.npz", "per-example input shape (25,)",
      "--keep-shape")),
    # labels: floats, strings, out of range; inputs: strings
    ("nets_err.py:model", "net.msgpack", "float_labels.npz",
     ("--data float_labels.npz", "y_train must hold integer class labels", "float64",
      "astype(np.int64)")),
    ("nets_err.py:model", "net.msgpack", "string_labels.npz",
     ("--data string_labels.npz", "y_train must hold integer class labels", "strings")),
    ("nets_err.py:model", "net.msgpack", "string_inputs.npz",
     ("--data string_inputs.npz", "X_train must hold real numbers, got strings")),
    ("nets_err.py:model", "net.msgpack", "label_too_big.npz",
     ("--data label_too_big.npz", "label 3", "3 logits")),
    # a module that raises on import
    ("boom_err.py:model", "net.msgpack", "data.npz",
     ("--model boom_err.py:model", "RuntimeError: boom at import", "--debug")),
    # a checkpoint holding NaN
    ("nets_err.py:model", "nan.msgpack", "data.npz",
     ("--checkpoint nan.msgpack", "must be finite", "Dense_0")),
    # missing files
    ("nets_err.py:model", "nothing.msgpack", "data.npz", ("--checkpoint", "nothing.msgpack")),
    ("nets_err.py:model", "net.msgpack", "nothing.npz", ("--data", "nothing.npz")),
])
def test_a_users_mistake_is_one_line_with_exit_code_2(user_files, capsys, model, checkpoint,
                                                      data, needles):
    _fails(_report(model, checkpoint, data), capsys, *needles)
    assert not (user_files / "o" / "report.json").exists()


def test_debug_shows_the_traceback_with_the_users_error_as_its_cause(user_files):
    argv = _report("boom_err.py:model", "net.msgpack", "data.npz")
    with pytest.raises(UserError) as e:
        main([*argv, "--debug"])
    assert isinstance(e.value.__cause__, RuntimeError)
    with pytest.raises(UserError):
        main(["--debug", *argv])  # before the command too
    # as a user sees it: a traceback that reaches the line of the module that raised
    proc = subprocess.run([sys.executable, "-m", "genbounds.experiments.cli", *argv, "--debug"],
                          cwd=user_files, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert "boom_err.py\", line 1" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "genbounds.experiments.cli", *argv],
                          cwd=user_files, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr


def test_an_internal_error_is_one_line_with_exit_code_1(user_files, capsys, monkeypatch):
    import genbounds

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(genbounds, "report", broken)
    assert main(_report("nets_err.py:model", "net.msgpack", "data.npz")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (RuntimeError: something inside broke)" in err
    assert "--debug" in err


def test_report_json_records_the_checkpoint_model_and_data(user_files):
    assert main(_report("nets_err.py:model", "net.msgpack", "data.npz")) == 0
    rep = json.loads((user_files / "o" / "report.json").read_text())
    ckpt = user_files / "net.msgpack"
    assert rep["checkpoint"] == {"path": str(ckpt.resolve()), "sha256": file_sha256(ckpt)}
    import hashlib

    assert rep["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    spec = rep["model_spec"]
    assert spec["argument"] == "nets_err.py:model" and spec["name"] == "Net"
    assert spec["kind"] == "linen module instance" and spec["fields"] == {"width": "8"}
    assert spec["source_sha256"] == file_sha256(user_files / "nets_err.py")
    assert rep["data_source"]["sha256"] == file_sha256(user_files / "data.npz")
    assert rep["init_checkpoint"] is None and rep["collections"] == []


def test_orbax_directories_are_hashed_by_their_files(tmp_path):
    d = tmp_path / "ckpt"
    (d / "sub").mkdir(parents=True)
    (d / "a").write_bytes(b"1")
    (d / "sub" / "b").write_bytes(b"2")
    before = file_sha256(d)
    (d / "sub" / "b").write_bytes(b"3")
    assert file_sha256(d) != before
    (d / "sub" / "b").write_bytes(b"2")
    assert file_sha256(d) == before


# ----------------------------------------------------------------------------------------------
# Locks: every command that writes a directory refuses a second run on it.


@contextlib.contextmanager
def _held_by_another_process(directory: Path):
    code = ("import sys, time; from genbounds.files import DirectoryLock; "
            "DirectoryLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("argv", [
    ["report", "--model", "nets_err.py:model", "--checkpoint", "net.msgpack", "--data",
     "data.npz", "--out", "busy"],
    ["robustness", "--out", "busy", "--quick"],
    ["study", "--out", "busy", "--quick"],
    ["sweep", "--out", "busy"],
    ["train", "--out", "busy"],
])
def test_a_second_run_on_a_busy_directory_is_refused(user_files, capsys, argv):
    (user_files / "busy").mkdir()
    with _held_by_another_process(user_files / "busy") as pid:
        line = _fails(argv, capsys, "'busy'", "in use by another genbounds run",
                      f"process {pid}")
    assert line.startswith(f"genbounds {argv[0]}: ")
    assert not (user_files / "busy" / "report.json").exists()


# ----------------------------------------------------------------------------------------------
# Cached work is keyed on every setting that changes it.


def test_train_refuses_a_rerun_with_other_settings(tmp_path, capsys):
    out = tmp_path / "run"
    keep_settings(out.mkdir() or out, {"command": "train", "protocol": 1, "dataset": "digits",
                                      "n": 100, "seed": 0, "label_noise": 0.0, "depth": 2,
                                      "width": 256, "lr": 1e-3, "batch_size": 32}, {})
    _fails(["train", "--out", str(out), "--n", "120", "--lr", "0.01"], capsys,
           "--n: 100 there, 120 now", "--lr: 0.001 there, 0.01 now", "another --out")


@pytest.fixture
def study_dir(tmp_path):
    """A study directory claimed by digits, n = 60, seed 0 (as a first run leaves it)."""
    from genbounds.data import load

    out = tmp_path / "study"
    out.mkdir()
    ds = load("digits", seed=0, n=60)
    settings = study_settings("digits", ds, n=60, seed=0, loss_target=0.01, delta=0.05)
    keep_settings(out, settings, {})
    return out, settings


@pytest.mark.parametrize("change, named", [
    ({"n": 80}, "--n (500 with --quick): 60 there, 80 now"),
    ({"seed": 1}, "--seed: 0 there, 1 now"),
    ({"loss_target": 0.02}, "--loss-target: 0.01 there, 0.02 now"),
    ({"delta": 0.1}, "--delta: 0.05 there, 0.1 now"),
])
def test_a_study_rerun_with_other_settings_is_refused(study_dir, change, named, monkeypatch):
    import genbounds.train

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the settings differ")

    monkeypatch.setattr(genbounds.train, "train_population", no_training)
    out, _ = study_dir
    kwargs = {"dataset": "digits", "n": 60, "seed": 0, "loss_target": 0.01, "delta": 0.05,
              **change}
    with pytest.raises(UserError, match="other settings") as e:
        run_study(out, grid={"lr": (1e-3, 2e-3)}, **kwargs)
    assert named in str(e.value)
    if "n" in change or "seed" in change:  # other data: its digest differs too
        assert "the data set's contents" in str(e.value)


def test_the_same_settings_resume_and_a_foreign_record_is_refused(study_dir, monkeypatch):
    import genbounds.train

    class Trained(Exception):
        pass

    trained = []

    def fake_train(model, dataset, members, **kwargs):
        trained.append([m["lr"] for m in members])
        raise Trained

    monkeypatch.setattr(genbounds.train, "train_population", fake_train)
    out, settings = study_dir
    kwargs = {"dataset": "digits", "n": 60, "seed": 0, "grid": {"lr": (1e-3, 2e-3)}}
    with pytest.raises(Trained):  # same settings: past the check, on to training
        run_study(out, **kwargs)
    # A record whose key is not this study's (copied in, or of an older protocol) is refused.
    from genbounds.internal import STUDY_FIXED, study_net_id

    cfg = {**STUDY_FIXED, "lr": 1e-3}
    d = out / "nets" / study_net_id(cfg, 0)
    d.mkdir(parents=True, exist_ok=True)  # made by the first run
    (d / "record.json").write_text(json.dumps({"key": "0" * 64, "config": cfg,
                                               "max_epochs": 500}))
    with pytest.raises(UserError, match="other settings than this study's"):
        run_study(out, **kwargs)
    # With its key, the record is read back as it is, not retrained.
    rec = {"key": study_net_key(cfg, 0, settings), "config": cfg, "max_epochs": 500,
           "reached": False, "id": "x", "gap": 0.0, "measures": {}, "seed": 0}
    (d / "record.json").write_text(json.dumps(rec))
    with pytest.raises(Trained):  # the second net of the grid is trained, alone
        run_study(out, **kwargs)
    assert trained == [[1e-3, 2e-3], [2e-3]]
    # A directory of an older genbounds (records, no settings.json) is refused.
    (out / "settings.json").unlink()
    with pytest.raises(UserError, match="older genbounds"):
        run_study(out, **kwargs)
