"""Reading a user's network for `genbounds report`: model, checkpoint and data from the shell.

* **Model**, ``module:attribute`` (``module`` importable, or a path to a ``.py`` file;
  ``attribute`` may be dotted): a Flax linen Module instance, a linen Module class (built with
  no arguments), or an apply function ``apply_fn(params, X) -> logits``.
* **Checkpoint**: a flax msgpack file (``flax.serialization.msgpack_serialize`` of a state
  dict), or an orbax checkpoint directory (needs ``orbax-checkpoint``). The tree is either the
  parameters themselves, or a dict with ``params`` (and optionally ``init_params`` and other
  variable collections such as ``batch_stats``), as linen's ``model.init`` returns.
* **Data**: a ``.npz`` file with ``X_train`` and ``y_train`` (and optionally ``X_test``,
  ``y_test``), or the name of an embedded data set of `genbounds.data.load`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def load_object(spec: str) -> Any:
    """The object named by ``module:attribute`` (or ``path/to/file.py:attribute``)."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"--model must be MODULE:ATTRIBUTE (e.g. mypkg.nets:model or "
                         f"nets.py:MLP), got {spec!r}")
    mod_name, attr = spec.split(":")
    if mod_name.endswith(".py") or "/" in mod_name:
        path = Path(mod_name).expanduser()
        if not path.is_file():
            raise ValueError(f"--model: no such file {str(path)!r}")
        name = f"genbounds_user_model_{abs(hash(str(path.resolve())))}"
        spec_ = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec_)
        sys.modules[name] = module
        spec_.loader.exec_module(module)
    else:
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")  # as `python -m` does: the current directory is importable
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise ValueError(f"--model: cannot import module {mod_name!r} ({e})") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"--model: module {mod_name!r} has no attribute {attr!r}") from None
    return obj


def make_apply_fn(obj: Any, collections: Mapping[str, Any] | None = None
                  ) -> tuple[Callable[[Any, Any], Any], str]:
    """``apply_fn(params, X)`` for a linen Module (instance or class) or an apply function.

    ``collections`` are the non-parameter variable collections (e.g. ``batch_stats``) to pass to
    a linen Module's ``apply``. Returns the function and a short description of the model.
    """
    import flax.linen as nn

    extra = dict(collections or {})
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        try:
            obj = obj()
        except TypeError as e:
            raise ValueError(f"--model: the Module class {obj.__name__} cannot be built without "
                             f"arguments ({e}); point --model at an instance instead") from None
    if isinstance(obj, nn.Module):
        module = obj

        def apply_fn(params, X):
            return module.apply({"params": params, **extra}, X)

        return apply_fn, f"linen module {type(module).__name__}"
    if callable(obj):
        if extra:
            raise ValueError(f"--model: the checkpoint holds the collections {sorted(extra)} "
                             "besides params; an apply function cannot receive them (give a "
                             "linen Module, or save the parameters alone)")
        return obj, f"apply function {getattr(obj, '__name__', repr(obj))}"
    raise TypeError(f"--model must name a flax.linen Module (instance or class) or an apply "
                    f"function apply_fn(params, X), got {type(obj).__name__}")


def load_checkpoint(path: str | Path) -> Any:
    """The tree stored in a flax msgpack file or an orbax checkpoint directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        try:
            import orbax.checkpoint as ocp
        except ImportError:
            raise ValueError(f"--checkpoint {str(path)!r} is a directory (an orbax checkpoint); "
                             "reading it needs orbax-checkpoint: pip install "
                             "'genbounds[orbax]'") from None
        try:
            with warnings.catch_warnings():
                # Restoring without a target (we have none: the tree is the user's) makes orbax
                # read the sharding from the checkpoint and say so; on one host that is what we
                # want.
                warnings.filterwarnings("ignore", message="Sharding info not provided",
                                        category=UserWarning)
                return ocp.PyTreeCheckpointer().restore(path.resolve())
        except Exception as e:  # noqa: BLE001 - any failure is an unreadable checkpoint
            raise ValueError(f"--checkpoint: cannot restore the orbax checkpoint "
                             f"{str(path)!r} ({type(e).__name__}: {e})") from None
    if not path.is_file():
        raise ValueError(f"--checkpoint: no such file or directory {str(path)!r}")
    from flax import serialization

    try:
        return serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - any decoding failure is a corrupt file
        raise ValueError(f"--checkpoint: {str(path)!r} is not a flax msgpack file or is corrupt "
                         f"({type(e).__name__}: {e})") from None


def split_state(state: Any) -> tuple[Any, Any, dict[str, Any]]:
    """``(params, init_params or None, other collections)`` of a restored checkpoint tree."""
    if isinstance(state, Mapping) and "params" in state:
        rest = {k: v for k, v in state.items() if k not in ("params", "init_params")}
        init = state.get("init_params")
        if isinstance(init, Mapping) and "params" in init:
            init = init["params"]
        return state["params"], init, rest
    return state, None, {}


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """``X_train``, ``y_train`` and, when present, ``X_test``, ``y_test`` from a ``.npz`` file."""
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"--data: cannot read {str(path)!r} as a .npz file ({e})") from None
    missing = [k for k in ("X_train", "y_train") if k not in arrays]
    if missing:
        raise ValueError(f"--data: {str(path)!r} must hold X_train and y_train (and optionally "
                         f"X_test, y_test); it lacks {missing} (has {sorted(arrays)})")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"--data: {str(path)!r} holds only one of X_test and y_test")
    return {k: arrays[k] for k in ("X_train", "y_train", "X_test", "y_test") if k in arrays}
