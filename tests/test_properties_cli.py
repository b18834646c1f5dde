"""Properties of the study's cached-work identity and of the command line (hypothesis).

* A study network's key (`net_key`) changes with every setting and hyperparameter it depends on,
  and with nothing else (the order of a dict's entries does not count).
* `keep_settings` accepts exactly the settings a directory was claimed with, and otherwise names
  every differing setting by its option, with both values.
* Random bad arguments to any command: exit code 2, one line on stderr, never a traceback, and
  nothing written.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genbounds.experiments import UserError, main
from genbounds.internal import keep_settings, study_net_key

# ----------------------------------------------------------------------------------------------
# The identity of a study network.

_SETTINGS = {"command": "study", "protocol": 2, "dataset": "mnist1d", "n": 1000, "seed": 0,
             "data_sha256": "ab" * 32, "loss_target": 0.01, "delta": 0.05}
_CONFIG = {"depth": 1, "width": 128, "lr": 1e-3, "batch_size": 64, "dropout": 0.0,
           "weight_decay": 0.0}

_values = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, width=64),
                    st.text(max_size=8), st.booleans(), st.none())


@settings(max_examples=200, deadline=None)
@given(where=st.sampled_from(["settings", "config", "seed"]), data=st.data())
def test_a_net_key_changes_with_every_setting(where, data):
    base = study_net_key(_CONFIG, 0, _SETTINGS)
    if where == "seed":
        new = data.draw(st.integers(1, 10**6))
        assert study_net_key(_CONFIG, new, _SETTINGS) != base
        return
    table = _SETTINGS if where == "settings" else _CONFIG
    name = data.draw(st.sampled_from(sorted(table)))
    value = data.draw(_values.filter(lambda v: v != table[name]
                                     or type(v) is not type(table[name])))
    changed = {**table, name: value}
    key = (study_net_key(_CONFIG, 0, changed) if where == "settings"
           else study_net_key(changed, 0, _SETTINGS))
    assert key != base, (name, table[name], value)


@settings(max_examples=50, deadline=None)
@given(perm=st.permutations(sorted(_SETTINGS)), cperm=st.permutations(sorted(_CONFIG)))
def test_a_net_key_does_not_depend_on_the_order_of_entries(perm, cperm):
    shuffled = {k: _SETTINGS[k] for k in perm}
    config = {k: _CONFIG[k] for k in cperm}
    assert study_net_key(config, 0, shuffled) == study_net_key(_CONFIG, 0, _SETTINGS)
    assert len(study_net_key(config, 0, shuffled)) == 64


_FLAGS = {k: f"--{k.replace('_', '-')}" for k in _SETTINGS}
_json_values = st.one_of(st.integers(-10**6, 10**6), st.text(max_size=6), st.booleans(),
                         st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=60, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(sorted(_SETTINGS)), _json_values, max_size=4))
def test_keep_settings_names_exactly_the_differing_settings(tmp_path_factory, changes):
    out = tmp_path_factory.mktemp("claimed")
    keep_settings(out, dict(_SETTINGS), _FLAGS)
    now = {**_SETTINGS, **changes}
    differing = sorted(k for k in now if json.dumps(now[k]) != json.dumps(_SETTINGS[k]))
    if not differing:
        keep_settings(out, now, _FLAGS)  # the same settings: accepted (a resume)
        return
    with pytest.raises(UserError) as e:
        keep_settings(out, now, _FLAGS)
    message = str(e.value)
    assert "\n" not in message
    for k in _SETTINGS:
        assert (f"{_FLAGS[k]}: " in message) == (k in differing), (k, message)
    keep_settings(out, dict(_SETTINGS), _FLAGS)  # the directory still holds the first claim


# ----------------------------------------------------------------------------------------------
# The command line: random bad arguments.

_COMMANDS = ("demo", "sweep", "train", "report", "study", "robustness", "reproduce")
_HAS = {  # the options of each command that the bad arguments below use
    "--n": ("demo", "sweep", "train", "report", "study", "robustness"),
    "--width": ("demo", "sweep", "train", "robustness"),
    "--depth": ("demo", "sweep", "train", "robustness"),
    "--lr": ("demo", "sweep", "train", "robustness"),
    "--max-epochs": ("demo", "sweep", "train", "study", "robustness"),
    "--batch-size": ("demo", "sweep", "train", "robustness"),
    "--seed": _COMMANDS,
    "--delta": ("demo", "sweep", "train", "report", "study", "robustness", "reproduce"),
    "--loss-target": ("study",),
    "--resamples": ("study",),
    "--steps": ("robustness",),
    "--restarts": ("robustness",),
    "--lipschitz-margin": ("robustness",),
    "--dataset": ("demo", "sweep", "train", "study", "robustness", "reproduce"),
    "--label-noise": ("sweep", "train"),
}
_MINIMUM = {"--n": 1, "--width": 1, "--depth": 1, "--max-epochs": 1, "--batch-size": 1,
            "--seed": 0, "--resamples": 1, "--steps": 1, "--restarts": 1}


def _not_an_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return True
    return False


def _bad_float(lo: float, hi: float, lo_open: bool, hi_open: bool):
    """Floats outside [lo, hi] (open ends excluded), NaN and infinities, as text."""
    def outside(v: float) -> bool:
        if math.isnan(v):
            return True
        below = v <= lo if lo_open else v < lo
        above = v >= hi if hi_open else v > hi
        return below or above
    return st.floats(allow_nan=True).filter(outside).map(repr)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1,
                max_size=12)


@st.composite
def _bad_argv(draw, out: str):
    command = draw(st.sampled_from(_COMMANDS))
    kind = draw(st.sampled_from(["unknown", "not_int", "int_range", "float_range", "choice",
                                 "missing_value"]))
    options = [o for o, cmds in _HAS.items() if command in cmds]
    if kind == "unknown":
        bad = ["--zz" + draw(st.from_regex(r"[a-z\-]{0,10}", fullmatch=True))]
    elif kind == "not_int":
        opt = draw(st.sampled_from([o for o in options if o in _MINIMUM]))
        bad = [opt, draw(_text.filter(_not_an_int))]
    elif kind == "int_range":
        opt = draw(st.sampled_from([o for o in options if o in _MINIMUM]))
        bad = [opt, str(draw(st.integers(max_value=_MINIMUM[opt] - 1)))]
    elif kind == "float_range":
        ranges = {"--delta": (0.0, 1.0, True, True), "--lr": (0.0, math.inf, True, True),
                  "--loss-target": (0.0, math.inf, True, True),
                  "--label-noise": (0.0, 1.0, False, False),
                  "--lipschitz-margin": (0.0, math.inf, False, True)}
        opt = draw(st.sampled_from([o for o in options if o in ranges]))
        bad = [opt, draw(_bad_float(*ranges[opt]))]
    elif kind == "choice":
        bad = ["--dataset", draw(_text.filter(lambda t: t not in (
            "digits", "mnist1d", "synthetic", "mnist", "digits-binary") and not t.startswith("-")
        ))] if "--dataset" in options else ["--zzbad"]
    else:  # an option at the end without its value
        bad = [draw(st.sampled_from(options))]
    fixed = {"train": ["--out", out], "reproduce": ["dziugaite-roy"]}.get(command, [])
    filler = []
    if command not in ("train",) and draw(st.booleans()):
        filler += ["--out", out]
    if draw(st.booleans()):
        filler += ["--debug"]
    if bad[0] != "--seed" and draw(st.booleans()):
        filler += ["--seed", "3"]
    tail = filler + bad if kind == "missing_value" else (
        bad + filler if draw(st.booleans()) else filler + bad)
    return [command, *fixed, *tail]


@pytest.fixture(scope="module")
def never_written(tmp_path_factory) -> Path:
    """An --out directory that no refused command may create."""
    return tmp_path_factory.mktemp("cli") / "never"


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_bad_arguments_give_one_line_and_exit_code_2(never_written, data):
    argv = data.draw(_bad_argv(str(never_written)))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own exit
            code = e.code
        except UserError:  # --debug re-raises a refused value: the traceback it asks for
            assert "--debug" in argv, argv
            assert not never_written.exists(), argv
            return
    text = err.getvalue()
    assert code == 2, (argv, text)
    assert text.count("\n") == 1 and text.endswith("\n"), (argv, text)
    assert "Traceback" not in text
    assert text.startswith("genbounds"), text
    assert not never_written.exists(), argv
