"""Files genbounds writes and reads back: atomic writes, checksums, stale temporaries, locks."""

import hashlib
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flax import serialization

import genbounds.files
from genbounds.data import load
from genbounds.experiments import main
from genbounds.files import (
    CorruptFile,
    DirectoryBusy,
    DirectoryLock,
    atomic_write,
    clean_stale_tmp,
    read_checked,
    read_json_checked,
    write_checked,
    write_json_checked,
)
from genbounds.internal import CHECKPOINT_MAGIC as MAGIC
from genbounds.internal import PARAMS_MAGIC
from genbounds.train import CheckpointError, train

MAGIC_T = b"TEST-MAGIC-1\n"
# The lock holders below load this one module from its file: no jax import, fast start.
FILES = inspect.getsourcefile(genbounds.files.DirectoryLock)


def test_checked_roundtrip_and_every_single_byte_flip_is_detected(tmp_path):
    path = tmp_path / "f.bin"
    payload = bytes(range(40))
    write_checked(path, payload, MAGIC_T)
    assert read_checked(path, MAGIC_T) == payload
    good = path.read_bytes()
    for i in range(len(good)):  # header, digest and payload: any flipped bit is caught
        bad = bytearray(good)
        bad[i] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(CorruptFile):
            read_checked(path, MAGIC_T)
    path.write_bytes(good[:-3])
    with pytest.raises(CorruptFile, match="checksum"):
        read_checked(path, MAGIC_T)
    path.write_bytes(payload)  # an unframed file (another format, an older genbounds)
    with pytest.raises(CorruptFile, match="not a checksummed"):
        read_checked(path, MAGIC_T)


def test_json_checksum(tmp_path):
    path = tmp_path / "run.json"
    obj = {"a": 1, "b": [1.5, "x"], "c": {"d": None}}
    write_json_checked(path, obj)
    assert read_json_checked(path) == obj
    doc = json.loads(path.read_text())
    doc["a"] = 2  # an edit that keeps the JSON valid
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptFile, match="checksum does not match"):
        read_json_checked(path)
    path.write_text(json.dumps(obj))
    with pytest.raises(CorruptFile, match="no 'sha256'"):
        read_json_checked(path)
    path.write_text("{not json")
    with pytest.raises(CorruptFile, match="not valid JSON"):
        read_json_checked(path)


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_tmp_of_a_dead_writer_is_removed_live_ones_kept(tmp_path):
    dead = tmp_path / f".results.json.{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".results.json.{os.getpid()}.def456.tmp"
    other = tmp_path / "notes.tmp"  # not one of ours: untouched
    for p in (dead, live, other):
        p.write_bytes(b"partial")
    atomic_write(tmp_path / "results.json", b"{}")  # any write cleans its directory
    assert not dead.exists() and live.exists() and other.exists()
    assert (tmp_path / "results.json").read_bytes() == b"{}"
    assert clean_stale_tmp(tmp_path) == []


def test_two_acquisitions_of_one_directory_lock(tmp_path):
    with DirectoryLock(tmp_path):
        with pytest.raises(DirectoryBusy, match=f"process {os.getpid()}"):
            DirectoryLock(tmp_path).acquire()
    with DirectoryLock(tmp_path):  # released: free again
        pass
    assert not (tmp_path / ".genbounds.lock").exists()  # no lock file left behind


def test_lock_held_by_another_process_refuses_a_cli_run(tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import importlib.util, sys
            spec = importlib.util.spec_from_file_location("f", {FILES!r})
            f = importlib.util.module_from_spec(spec); spec.loader.exec_module(f)
            DirectoryLock = f.DirectoryLock
            with DirectoryLock({str(out)!r}):
                print("locked", flush=True)
                sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        _refused(["train", "--out", str(out), "--n", "20", "--max-epochs", "1"], capsys,
                 f"in use by another genbounds run .process {holder.pid}")
        with pytest.raises(DirectoryBusy):  # train's own checkpoint_dir lock, too
            train({"kind": "mlp", "depth": 1, "width": 4}, load("digits", n=20), max_epochs=1,
                  checkpoint_dir=out)
    finally:
        holder.communicate("\n", timeout=60)
    assert not (out / "checkpoint.msgpack").exists()
    # the holder has exited: the lock is free
    with DirectoryLock(out):
        pass


def test_lock_of_a_killed_process_is_released(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import importlib.util, time
            spec = importlib.util.spec_from_file_location("f", {FILES!r})
            f = importlib.util.module_from_spec(spec); spec.loader.exec_module(f)
            DirectoryLock = f.DirectoryLock
            DirectoryLock({str(tmp_path)!r}).acquire()
            print("locked", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    holder.stdout.close()
    with DirectoryLock(tmp_path):
        pass


def test_checkpoint_with_valid_checksum_but_nan_params_is_not_resumed(tmp_path):
    ds = load("digits", n=40, seed=0)
    kw = dict(optimizer="adam", lr=1e-2, batch_size=16, max_epochs=1, stop=None)
    spec = {"kind": "mlp", "depth": 1, "width": 8}
    train(spec, ds, **kw, checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.msgpack"
    raw = serialization.msgpack_restore(path.read_bytes()[len(MAGIC) + 32:])
    layer = next(iter(raw["state"]["params"]))
    k = np.array(raw["state"]["params"][layer]["kernel"])
    k[0, 0] = np.nan
    raw["state"]["params"][layer]["kernel"] = k
    payload = serialization.msgpack_serialize(raw)
    bad = MAGIC + hashlib.sha256(payload).digest() + payload  # a correct checksum
    path.write_bytes(bad)
    with pytest.raises(CheckpointError, match=r"non-finite.*kernel"):
        train(spec, ds, **{**kw, "max_epochs": 2}, checkpoint_dir=tmp_path)
    assert path.read_bytes() == bad


def _refused(argv, capsys, pattern):
    """The command exits with code 2 and one line on stderr matching `pattern`."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(pattern, err), err


def test_report_verifies_params_file(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--n", "60", "--width", "8", "--depth", "1",
                 "--max-epochs", "2"]) == 0
    raw = read_checked(run / "params.msgpack", PARAMS_MAGIC)
    state = serialization.msgpack_restore(raw)
    assert set(state) == {"params", "init_params"}
    good = (run / "params.msgpack").read_bytes()
    bad = bytearray(good)
    bad[-5] ^= 0x01  # one flipped bit in the parameters
    (run / "params.msgpack").write_bytes(bytes(bad))
    _refused(["report", str(run)], capsys, "checksum does not match")
    # a valid checksum over NaN parameters: refused as well
    layer = next(iter(state["params"]))
    state["params"][layer]["kernel"] = np.full_like(state["params"][layer]["kernel"], np.nan)
    write_checked(run / "params.msgpack", serialization.msgpack_serialize(state), PARAMS_MAGIC)
    _refused(["report", str(run)], capsys, "must be finite")
    run_json = json.loads((run / "run.json").read_text())
    run_json["n"] = 61
    (run / "run.json").write_text(json.dumps(run_json))
    _refused(["report", str(run)], capsys, "run.json is corrupt")
    assert not [p for p in os.listdir(run) if p.endswith(".tmp") or p.endswith(".lock")]
