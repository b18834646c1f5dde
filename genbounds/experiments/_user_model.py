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

Every mistake in these is a `UserError` naming the option, the file and what was expected,
found before any bound is computed: a module that raises on import, a checkpoint of another
model (its paths and shapes are compared with ``model.init`` on the data's first example), a
checkpoint without the ``batch_stats`` its BatchNorm layers need, inputs of another shape than
the model takes (flat vectors for a CNN), labels that are not integers in ``[0, K)``.
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

from genbounds.experiments._common import UserError, file_sha256


def load_object(spec: str) -> Any:
    """The object named by ``module:attribute`` (or ``path/to/file.py:attribute``)."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise UserError(f"--model must be MODULE:ATTRIBUTE (e.g. mypkg.nets:model or "
                         f"nets.py:MLP), got {spec!r}")
    mod_name, attr = spec.split(":")
    if mod_name.endswith(".py") or "/" in mod_name:
        path = Path(mod_name).expanduser()
        if not path.is_file():
            raise UserError(f"--model: no such file {str(path)!r}")
        name = f"genbounds_user_model_{abs(hash(str(path.resolve())))}"
        spec_ = importlib.util.spec_from_file_location(name, path)
        if spec_ is None or spec_.loader is None:
            raise UserError(f"--model: {str(path)!r} is not a Python file")
        module = importlib.util.module_from_spec(spec_)
        sys.modules[name] = module
        try:
            spec_.loader.exec_module(module)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code, any error
            sys.modules.pop(name, None)
            raise UserError(f"--model {spec}: running {str(path)!r} raised "
                            f"{type(e).__name__}: {e} (--debug shows its traceback)") from e
    else:
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")  # as `python -m` does: the current directory is importable
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            raise UserError(f"--model: cannot import module {mod_name!r} ({e})") from None
        except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code, any error
            raise UserError(f"--model {spec}: importing {mod_name!r} raised "
                            f"{type(e).__name__}: {e} (--debug shows its traceback)") from e
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserError(f"--model: module {mod_name!r} has no attribute {attr!r}") from None
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
        except Exception as e:  # noqa: BLE001 - the user's constructor, any error
            raise UserError(f"--model: the Module class {obj.__name__} cannot be built without "
                             f"arguments ({e}); point --model at an instance instead") from None
    if isinstance(obj, nn.Module):
        module = obj

        def apply_fn(params, X):
            return module.apply({"params": params, **extra}, X)

        return apply_fn, f"linen module {type(module).__name__}"
    if callable(obj):
        if extra:
            raise UserError(f"--model: the checkpoint holds the collections {sorted(extra)} "
                             "besides params; an apply function cannot receive them (give a "
                             "linen Module, or save the parameters alone)")
        return obj, f"apply function {getattr(obj, '__name__', repr(obj))}"
    raise UserError(f"--model must name a flax.linen Module (instance or class) or an apply "
                    f"function apply_fn(params, X), got {type(obj).__name__}")


def load_checkpoint(path: str | Path) -> Any:
    """The tree stored in a flax msgpack file or an orbax checkpoint directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        try:
            import orbax.checkpoint as ocp
        except ImportError:
            raise UserError(f"--checkpoint {str(path)!r} is a directory (an orbax checkpoint); "
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
            raise UserError(f"--checkpoint: cannot restore the orbax checkpoint "
                             f"{str(path)!r} ({type(e).__name__}: {e})") from None
    if not path.is_file():
        raise UserError(f"--checkpoint: no such file or directory {str(path)!r}")
    from flax import serialization

    try:
        return serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - any decoding failure is a corrupt file
        raise UserError(f"--checkpoint: {str(path)!r} is not a flax msgpack file or is corrupt "
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
        raise UserError(f"--data: cannot read {str(path)!r} as a .npz file ({e})") from None
    missing = [k for k in ("X_train", "y_train") if k not in arrays]
    if missing:
        raise UserError(f"--data: {str(path)!r} must hold X_train and y_train (and optionally "
                         f"X_test, y_test); it lacks {missing} (has {sorted(arrays)})")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise UserError(f"--data: {str(path)!r} holds only one of X_test and y_test")
    return {k: arrays[k] for k in ("X_train", "y_train", "X_test", "y_test") if k in arrays}


def check_data(data: Mapping[str, np.ndarray], where: str) -> None:
    """The arrays of ``--data`` (`where` names it): real, finite inputs with one leading example
    axis; integer labels >= 0, one per example; test inputs of the training inputs' shape."""
    for x_name, y_name in (("X_train", "y_train"), ("X_test", "y_test")):
        if x_name not in data:
            continue
        X, y = np.asarray(data[x_name]), np.asarray(data[y_name])
        if X.dtype.kind not in "biuf":
            what = "strings" if X.dtype.kind in "US" else f"dtype {X.dtype}"
            raise UserError(f"--data {where}: {x_name} must hold real numbers, got {what}")
        if X.ndim < 2 or X.shape[0] < 1:
            raise UserError(f"--data {where}: {x_name} must have shape (n, ...) with n >= 1 "
                            f"examples and at least one feature, got {X.shape}")
        if X.dtype.kind == "f" and not np.all(np.isfinite(X)):
            bad = int(X.size - np.count_nonzero(np.isfinite(X)))
            raise UserError(f"--data {where}: {x_name} must be finite, got {bad} NaN or "
                            "infinite entries")
        if y.dtype.kind not in "iu":
            if y.dtype.kind in "US":
                got = f"strings (e.g. {str(y.flat[0])!r})" if y.size else "strings"
            else:
                got = f"dtype {y.dtype}"
            hint = ("; save them with y.astype(np.int64)" if y.dtype.kind == "f" and y.size
                    and np.all(y == np.round(y)) else "")
            raise UserError(f"--data {where}: {y_name} must hold integer class labels 0, 1, "
                            f"..., K-1, got {got}{hint}")
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            hint = " (one-hot? save y.argmax(1))" if y.ndim == 2 else ""
            raise UserError(f"--data {where}: {y_name} must have shape ({X.shape[0]},), one "
                            f"label per example of {x_name}, got {y.shape}{hint}")
        if y.size and y.min() < 0:
            raise UserError(f"--data {where}: {y_name} must hold labels >= 0, got {y.min()}")
    if "X_test" in data and np.shape(data["X_test"])[1:] != np.shape(data["X_train"])[1:]:
        raise UserError(f"--data {where}: X_test must have the per-example shape of X_train, "
                        f"{np.shape(data['X_train'])[1:]}, got {np.shape(data['X_test'])[1:]}")


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text.split(" (https://flax.readthedocs.io", 1)[0]  # flax's link to its error page
    return f"{type(e).__name__}: {text[:300]}"


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    import jax

    return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(np.shape(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def check_fit(obj: Any, params: Any, collections: Mapping[str, Any], apply_fn: Callable,
              X: np.ndarray, labels: Mapping[str, Any], *, model: str, checkpoint: str, data: str) -> None:
    """That the model, the checkpoint and the data belong together, before any bound.

    A linen Module is initialised abstractly (`jax.eval_shape`) on the first example: its
    collections, parameter paths and shapes must be those of the checkpoint. Then
    ``apply_fn(params, X[:2])`` must run and give logits of shape ``(2, K)`` (or ``(2,)``),
    and the `labels` (name -> array) must lie in ``[0, K)``. Each failure is a `UserError` naming the three.
    """
    import flax.linen as nn
    import jax

    x1 = np.asarray(X[:1])
    shape_note = f"per-example input shape {tuple(np.shape(X)[1:])}"
    flat_hint = (" (flat vectors: a CNN takes images (n, H, W, C); with a named data set pass "
                 "--keep-shape, or store X_train with its image shape)" if np.ndim(X) == 2
                 else "")
    module = obj() if isinstance(obj, type) and issubclass(obj, nn.Module) else obj
    if isinstance(module, nn.Module):
        key = jax.random.key(0)
        try:
            want = jax.eval_shape(lambda x: module.init({"params": key, "dropout": key}, x), x1)
        except Exception as e:  # noqa: BLE001 - the user's model, any error
            raise UserError(f"--model {model} cannot be applied to the {shape_note} of --data "
                            f"{data}: {_first_line(e)}{flat_hint}") from e
        have = {"params": params, **collections}
        missing = sorted(set(want) - set(have))
        if missing:
            raise UserError(
                f"--checkpoint {checkpoint} holds no {', '.join(map(repr, missing))} "
                f"collection, which --model {model} needs (e.g. BatchNorm statistics); save "
                "the whole dict of model.init / the trained variables: {'params': ..., "
                + ", ".join(f"{m!r}: ..." for m in missing) + "}")
        for col in sorted(want):
            w, h = _shapes(want[col]), _shapes(have[col])
            problems = [f"{p} missing" for p in sorted(set(w) - set(h))]
            problems += [f"{p} not in the model" for p in sorted(set(h) - set(w))]
            problems += [f"{p} has shape {h[p]}, the model's is {w[p]}"
                         for p in sorted(set(w) & set(h)) if w[p] != h[p]]
            if problems:
                more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
                conv = any(len(w[p]) >= 3 and w[p] != h[p] for p in set(w) & set(h))
                hint = flat_hint if conv else ""
                raise UserError(
                    f"--checkpoint {checkpoint} does not fit --model {model} on the "
                    f"{shape_note} of --data {data}: in {col!r}, {'; '.join(problems[:3])}"
                    f"{more} (a checkpoint of another model?){hint}")
    try:
        out = jax.eval_shape(apply_fn, params, np.asarray(X[:2]))
    except Exception as e:  # noqa: BLE001 - the user's model, any error
        raise UserError(f"--model {model} with --checkpoint {checkpoint} fails on the "
                        f"{shape_note} of --data {data}: {_first_line(e)}{flat_hint}") from e
    n2 = min(2, len(X))
    shape = tuple(getattr(out, "shape", ()))
    if shape not in ((n2,), (n2, shape[-1] if shape else 0)) or (len(shape) == 2
                                                                   and shape[1] < 2):
        raise UserError(f"--model {model} must return logits of shape (n, K) with K >= 2, or "
                        f"(n,) for one logit; on {n2} examples of --data {data} it returned "
                        f"shape {shape}")
    k = 2 if len(shape) == 1 else shape[1]
    for name, y in labels.items():
        if y is not None and np.size(y) and int(np.max(y)) >= k:
            raise UserError(f"--data {data}: {name} holds the label {int(np.max(y))}, but "
                            f"--model {model} gives {k} logits (labels must lie in [0, {k}))")


def describe_model(obj: Any, spec: str) -> dict[str, Any]:
    """What report.json records of ``--model``: the argument, the kind of object, its class or
    function name with its fields, and the path and SHA-256 of the file defining it."""
    import dataclasses
    import inspect

    import flax.linen as nn

    out: dict[str, Any] = {"argument": spec}
    if isinstance(obj, nn.Module):
        cls = type(obj)
        out["kind"] = "linen module instance"
        out["fields"] = {f.name: repr(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                         if f.name not in ("parent", "name")}
    elif isinstance(obj, type):
        cls = obj
        out["kind"] = "linen module class (built with its defaults)"
    else:
        cls = obj
        out["kind"] = "apply function"
    mod, qual = getattr(cls, "__module__", None), getattr(cls, "__qualname__", repr(cls))
    # A module loaded from a .py path has a generated name; its file is recorded below.
    out["name"] = qual if not mod or mod.startswith("genbounds_user_model_") else f"{mod}.{qual}"
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:
        source = None
    if source and Path(source).is_file():
        out["source"] = str(Path(source).resolve())
        out["source_sha256"] = file_sha256(source)
    return out


def describe_file(path: str | Path) -> dict[str, Any]:
    """``{"path": absolute path, "sha256": ...}`` of a checkpoint or data file (or directory)."""
    p = Path(path).expanduser().resolve()
    return {"path": str(p), "sha256": file_sha256(p)}
