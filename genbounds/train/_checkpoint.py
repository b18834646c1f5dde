"""Atomic, checksummed training checkpoints (flax msgpack serialisation).

A checkpoint file is ``MAGIC + sha256(payload) + payload``, where the payload is the msgpack
(`flax.serialization.msgpack_serialize`) of a dict holding the run's configuration (and its
fingerprint) and the training state: parameters, initial parameters, optimiser state, epoch,
random key and history. It is written to a temporary file in the same directory, flushed to
disk, then moved into place with `os.replace`, so a reader sees either the previous complete
checkpoint or the new complete one, never a partial file.

Anything unexpected on reading (a short file, another format, a checksum mismatch, an
undecodable payload, a different configuration, arrays of other shapes) raises
`CheckpointError`; training never silently starts afresh over a checkpoint it cannot use.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from genbounds.files import CorruptFile, read_checked, write_checked
from genbounds.files import atomic_write as atomic_write
from genbounds.files import default_file_mode as default_file_mode

MAGIC = b"GENBOUNDS-CHECKPOINT-1\n"
FILENAME = "checkpoint.msgpack"


class CheckpointError(ValueError):
    """A checkpoint is corrupt, or was written by a run with a different configuration."""


def fingerprint(config: Mapping[str, Any]) -> str:
    """A SHA-256 of the canonical JSON of a configuration dict."""
    text = json.dumps(config, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def write(path: str | os.PathLike, config: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Writes a checkpoint atomically (temporary file in the same directory + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = serialization.msgpack_serialize(
        {
            "config": json.dumps(config, sort_keys=True, default=repr),
            "fingerprint": fingerprint(config),
            "state": serialization.to_state_dict(jax.device_get(dict(state))),
        }
    )
    write_checked(path, payload, MAGIC)


def _check_like(template: Any, restored: Any, what: str, path: Path) -> None:
    t_leaves = jax.tree_util.tree_leaves_with_path(template)
    r_leaves = jax.tree_util.tree_leaves(restored)
    if len(t_leaves) != len(r_leaves):
        raise CheckpointError(
            f"checkpoint {path} does not match this run: its {what} has {len(r_leaves)} arrays, "
            f"the model's has {len(t_leaves)}"
        )
    for (kp, t), r in zip(t_leaves, r_leaves, strict=True):
        t, r = np.asarray(t), np.asarray(r)
        if t.shape != r.shape or t.dtype != r.dtype:
            raise CheckpointError(
                f"checkpoint {path} does not match this run: {what}{jax.tree_util.keystr(kp)} "
                f"is {r.dtype}{list(r.shape)} there, {t.dtype}{list(t.shape)} here"
            )


def read(
    path: str | os.PathLike, config: Mapping[str, Any], templates: Mapping[str, Any]
) -> dict[str, Any]:
    """Reads and validates a checkpoint written by `write` for the same configuration.

    Args:
      path: the checkpoint file.
      config: the configuration of the current run; it must equal the stored one.
      templates: pytrees (``params``, ``init_params``, ``opt_state``) giving the structure,
        shapes and dtypes the stored state must have.

    Returns:
      The state: the templates' entries restored into their structures, plus the stored
      ``epoch``, ``key``, ``history`` and ``reached``.

    Raises:
      CheckpointError: corrupt file, other format, other configuration or other shapes.
    """
    path = Path(path)
    try:
        payload = read_checked(path, MAGIC, what="checkpoint")
    except CorruptFile as e:
        if e.reason == "checksum":
            raise CheckpointError(
                f"checkpoint {path} is corrupt: its checksum does not match its contents "
                "(truncated or damaged); delete it to start afresh"
            ) from None
        raise CheckpointError(
            f"{path} is not a genbounds checkpoint or is corrupt (bad header, "
            f"{path.stat().st_size} bytes); delete it to start afresh or point checkpoint_dir "
            "elsewhere"
        ) from None
    try:
        raw = serialization.msgpack_restore(payload)
        stored_config = json.loads(raw["config"])
        stored_fp, state = raw["fingerprint"], raw["state"]
    except Exception as e:  # noqa: BLE001 - any decoding failure is a corrupt checkpoint
        raise CheckpointError(f"checkpoint {path} is corrupt: cannot decode it ({e})") from e
    if stored_fp != fingerprint(config):
        now = json.loads(json.dumps(config, sort_keys=True, default=repr))
        keys = sorted(set(now) | set(stored_config))
        diffs = [
            f"{k}: checkpoint {stored_config.get(k, '<absent>')!r}, now {now.get(k, '<absent>')!r}"
            for k in keys
            if stored_config.get(k) != now.get(k)
        ]
        raise CheckpointError(
            f"checkpoint {path} was written by a run with a different configuration ("
            + ("; ".join(diffs) or "fingerprint differs")
            + "); delete it or use another checkpoint_dir"
        )
    out: dict[str, Any] = {}
    try:
        for name, template in templates.items():
            restored = serialization.from_state_dict(template, state[name])
            _check_like(template, restored, name, path)
            out[name] = restored
        out["epoch"] = int(state["epoch"])
        out["key"] = np.asarray(state["key"])
        out["reached"] = bool(state["reached"])
        out["history"] = {k: np.asarray(v).tolist() for k, v in state["history"].items()}
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - a structure mismatch is a mismatched checkpoint
        raise CheckpointError(f"checkpoint {path} does not match this run's state: {e}") from e
    return out
