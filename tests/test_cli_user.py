"""`genbounds report` on a user's own network, progress lines, option help, file modes."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

import genbounds
from genbounds.experiments import build_parser, main
from genbounds.internal import Progress, sweep_figure, sweep_table

_NETS = textwrap.dedent('''
    import flax.linen as nn
    import jax.numpy as jnp


    class Net(nn.Module):
        width: int = 16
        classes: int = 10

        @nn.compact
        def __call__(self, x):
            x = jnp.reshape(x, (x.shape[0], -1))
            x = nn.relu(nn.Dense(self.width)(x))
            return nn.Dense(self.classes)(x)


    model = Net(width=16, classes=3)


    def apply(params, x):
        return model.apply({"params": params}, x)
''')

_PHASE = re.compile(r"^\[\d\d:\d\d:\d\d\] genbounds report: (.*)$", re.M)


def _write_user_files(tmp: Path, *, n: int = 120, d: int = 5, seed: int = 0):
    """A model module, a checkpoint and an npz written here (not by the harness)."""
    (tmp / "user_nets.py").write_text(_NETS)
    sys.path.insert(0, str(tmp))
    try:
        import importlib

        import user_nets
        importlib.reload(user_nets)
    finally:
        sys.path.remove(str(tmp))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X_test = rng.normal(size=(n // 2, d)).astype(np.float32)
    params = user_nets.model.init(jax.random.key(seed), X[:1])["params"]
    init = user_nets.model.init(jax.random.key(seed + 1), X[:1])["params"]
    # Labels are the network's own predictions: training error 0 and positive margins.
    y = np.asarray(user_nets.apply(params, X).argmax(-1), np.int32)
    y_test = np.asarray(user_nets.apply(init, X_test).argmax(-1), np.int32)  # another net
    np.savez(tmp / "data.npz", X_train=X, y_train=y, X_test=X_test, y_test=y_test)
    state = serialization.to_state_dict({"params": params, "init_params": init})
    (tmp / "params.msgpack").write_bytes(serialization.msgpack_serialize(state))
    return user_nets, params, init, (X, y, X_test, y_test)


def test_report_on_a_users_module_and_checkpoint_piped(tmp_path):
    """The command as a user runs it, output piped: phase lines, and the library's numbers."""
    user_nets, params, init, (X, y, X_test, y_test) = _write_user_files(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "genbounds.experiments.cli", "report", "--model", "user_nets.py:model",
         "--checkpoint", "params.msgpack", "--data", "data.npz", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)  # a pipe, not a terminal
    assert proc.returncode == 0, proc.stdout + proc.stderr
    phases = _PHASE.findall(proc.stdout)
    for step in ("loading the model", "loading the checkpoint", "loading the data",
                 "computing the bounds"):
        assert any(p.startswith(step) and p.endswith("...") for p in phases), (step, phases)
        assert any(p.startswith(step) and re.search(r"done in \d+\.\d s$", p) for p in phases)
    got = json.loads((out / "report.json").read_text())
    want = genbounds.report(params, X=X, y=y, X_test=X_test, y_test=y_test,
                            apply_fn=user_nets.apply, init_params=init)
    assert got["train_error"] == 0.0 and got["n"] == len(X)
    assert got["test_error"] == pytest.approx(want.test_error, abs=0)
    by_name = {r["name"]: r for r in got["records"]}
    assert {r["name"] for r in want.to_records()} == set(by_name)
    for b in want.bounds:
        np.testing.assert_allclose(by_name[b.name]["value"], float(b.value), rtol=1e-5)
        assert by_name[b.name]["value"] >= got["test_error"]
    assert {"spectral_init", "pac_bayes_init"} <= set(by_name)  # init_params were read
    assert got["model"] == "user_nets.py:model"


def test_report_importable_module_class_orbax_and_named_data(tmp_path, monkeypatch, capsys):
    ocp = pytest.importorskip("orbax.checkpoint")
    user_nets, _, _, _ = _write_user_files(tmp_path)
    params = user_nets.Net().init(jax.random.key(3), np.zeros((1, 64), np.float32))["params"]
    ckpt = tmp_path / "orbax_ckpt"
    ocp.PyTreeCheckpointer().save(ckpt, {"params": params})
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    # A Module class built with its defaults (width 16, 10 outputs), on the digits data set.
    assert main(["report", "--model", "user_nets:Net", "--checkpoint", str(ckpt),
                 "--data", "digits", "--n", "100", "--out", "o"]) == 0
    got = json.loads((tmp_path / "o" / "report.json").read_text())
    from genbounds.data import load

    ds = load("digits", seed=0, n=100)
    logits = user_nets.Net().apply({"params": params}, ds.X_train)
    err = float(np.mean(np.asarray(genbounds.margins(logits, ds.y_train)) <= 0))
    assert got["train_error"] == pytest.approx(err) and got["n"] == 100
    assert got["data"] == "digits"
    assert _PHASE.findall(capsys.readouterr().out)  # captured output is not a terminal


def test_apply_function_form_and_bad_input(tmp_path, monkeypatch, capsys):
    _write_user_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["report", "--model", "user_nets:apply", "--checkpoint", "params.msgpack",
                 "--data", "data.npz", "--out", "o"]) == 0
    assert json.loads((tmp_path / "o" / "report.json").read_text())["train_error"] == 0.0
    capsys.readouterr()

    def fails(argv, match):
        with pytest.raises(SystemExit) as e:
            code = main(argv)
            raise SystemExit(code)
        err = capsys.readouterr().err + str(e.value)
        assert e.value.code not in (0, None), argv
        assert re.search(match, err), (argv, err)

    base = ["report", "--checkpoint", "params.msgpack", "--data", "data.npz", "--out", "o"]
    fails(["report", "--model", "nomodule", "--checkpoint", "x", "--data", "d.npz"],
          "MODULE:ATTRIBUTE")
    fails(["report", "--model", "user_nets:nothing", *base[1:]], "no attribute 'nothing'")
    fails(["report", "--model", "user_nets:np_missing", *base[1:]], "no attribute")
    fails(["report", "--model", "user_nets:model", "--data", "data.npz"], "--checkpoint")
    np.savez(tmp_path / "bad.npz", X_train=np.zeros((3, 5)))
    fails(["report", "--model", "user_nets:model", "--checkpoint", "params.msgpack",
           "--data", "bad.npz"], "y_train")
    (tmp_path / "bad.msgpack").write_bytes(b"\x00garbage")
    fails(["report", "--model", "user_nets:model", "--checkpoint", "bad.msgpack",
           "--data", "data.npz"], "corrupt")
    fails(["report", "--model", "user_nets:jnp", *base[1:]], "Module|apply function")
    fails(["report", "run_dir", "--model", "user_nets:model"], "not both")


def test_files_are_written_with_the_users_umask(tmp_path, monkeypatch):
    from genbounds.files import atomic_write

    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.json", b"{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
        os.umask(0o022)
        atomic_write(tmp_path / "a.json", b"{}")  # replaced: the new file's mode
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_every_option_shows_its_default():
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if (action.help in (None, argparse.SUPPRESS) or isinstance(action, argparse._HelpAction)
                    or (not action.option_strings and action.nargs is None)):  # required operand
                continue
            shown = sub._get_formatter()._get_help_string(action)
            assert "%(default)" in shown or "default" in shown, (name, action.dest)
        assert "(default: " in text, name


def _records():
    rec = []
    for noise, test in ((0.0, 0.05), (1.0, 0.9)):
        rec.append({"dataset": "digits", "label_noise": noise, "train_error": 0.0,
                    "test_error": test, "epochs": 10,
                    "bounds": [{"name": "vc", "value": 1.4}, {"name": "spectral", "value": 1e5},
                               {"name": "golowich_l1inf", "value": 2e3}],
                    "measures": []})
    return rec


def test_plot_series_carry_the_tables_names_and_the_vacuous_line_is_labelled():
    import matplotlib.pyplot as plt

    records = _records()
    fig = sweep_figure(records)
    try:
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    finally:
        plt.close(fig)
    columns = [str(c.header) for c in sweep_table(records, "t").columns]
    assert "vacuous (1)" in legend
    series = [s for s in legend if s != "vacuous (1)"]
    assert set(series) <= set(columns), (series, columns)
    assert {"VC", "BFT", "Gol. l1inf", "test error", "train error"} <= set(series)


def test_plain_progress_lines():
    buf = io.StringIO()
    with Progress("genbounds x", stream=buf, every=0.0) as p:
        assert p.plain  # a StringIO is not a terminal
        with p.phase("step one"):
            pass
        bar = p.bar("training", total=3)
        for i in (1, 2, 3):
            bar.update(i, f"acc {i}")
        bar.close("fitted")
    lines = buf.getvalue().splitlines()
    assert all(re.match(r"^\[\d\d:\d\d:\d\d\] genbounds x: ", line) for line in lines), lines
    body = [line.split(": ", 1)[1] for line in lines]
    assert body[0] == "step one ..." and re.fullmatch(r"step one: done in \d+\.\d s", body[1])
    assert body[2] == "training ..." and body[3:6] == [f"training: {i}/3 (acc {i})"
                                                      for i in (1, 2, 3)]
    assert re.fullmatch(r"training: done in \d+\.\d s \(fitted\)", body[6])
    # Throttled: with a long interval only the first update of a bar is printed.
    buf = io.StringIO()
    with Progress("g", stream=buf, every=1e9) as p:
        bar = p.bar("t", total=100)
        for i in range(100):
            bar.update(i)
    assert len(buf.getvalue().splitlines()) == 2
