"""Training a population: networks of one shape, each with its own learning rate, dropout and
weight decay, trained together and stopped one by one.

`train_population` trains K networks of one architecture and batch size on one dataset as one
JAX population (`population_function` of genbounds/cmi/_sharding.py: one `jax.vmap` over the
members, sharded over the devices with `jax.shard_map`). Each member runs the program `train`
runs for a single network (`epoch_body`: the same initialisation from `seed`, the same minibatch
order and dropout masks from ``fold_in(key, epoch)``, the same optimiser), with its
hyperparameters as inputs of the program instead of constants; so a member's parameters are
those `train` gives to float rounding (tests/test_study_population.py checks it). Only the
dropout layers run another code path: a linen method interceptor gives `flax.linen.Dropout` the
member's keep probability as an array, drawing the mask as Flax does (a ``bernoulli`` of that
probability, in a Python float's dtype, from the layer's ``dropout`` stream, the kept units
scaled by its inverse).

Per-member stopping: after every epoch each member is evaluated on the full training and test
sets (dropout off); a member whose criterion holds (``stop="loss"``: mean training cross-entropy
<= `loss_target`; ``stop="fit"``: every training example classified correctly) stops: its
parameters and optimiser state are frozen (the population still computes its update, which is
discarded), its epoch count is that epoch. The population stops when every member has stopped,
or at `max_epochs`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genbounds.cmi._sharding import (
    gather_rows,
    padded_size,
    population_function,
    population_mesh,
    put_rows,
)
from genbounds.core._checks import check_positive, check_range
from genbounds.files import DirectoryLock, held_here

from . import _checkpoint
from ._jitted import cached, epoch_body, in_order, make_optimizer, model_functions, set_sums
from ._train import (
    HISTORY_KEYS,
    TrainResult,
    _data_fingerprint,
    _module_description,
    _resolve_model,
    _takes_train,
    check_dataset,
    check_loop_options,
)

MEMBER_KEYS = ("lr", "dropout", "weight_decay")


def _dropout_keep(keep: jax.Array, rate: float):
    """Runs every `flax.linen.Dropout` (all built with the model's rate `rate`) with keep
    probability `keep` (an array) instead, drawing the mask exactly as
    `flax.linen.Dropout.__call__` does."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if not isinstance(module, nn.Dropout) or context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if module.rate != rate:
            raise ValueError(
                f"train_population: the model has a Dropout layer of rate {module.rate}, not "
                f"its 'dropout' attribute ({rate}); a per-member dropout rate needs every "
                "Dropout layer to take the model's rate")
        if len(args) > 2 or "rng" in kwargs:
            raise ValueError("train_population: a Dropout layer called with its own rng is not "
                             "supported; let it draw from the 'dropout' stream")
        inputs = args[0]
        deterministic = nn.merge_param("deterministic", module.deterministic,
                                       args[1] if len(args) > 1 else
                                       kwargs.get("deterministic"))
        if deterministic:
            return inputs
        rng = module.make_rng(module.rng_collection)
        shape = list(inputs.shape)
        for dim in module.broadcast_dims:
            shape[dim] = 1
        mask = jnp.broadcast_to(jax.random.bernoulli(rng, p=keep, shape=shape), inputs.shape)
        return jax.lax.select(mask, inputs / keep.astype(inputs.dtype), jnp.zeros_like(inputs))

    return nn.intercept_methods(interceptor)


def _population_step(model: nn.Module, takes_train: bool, optimizer: str, momentum: float,
                     decayed: bool, any_dropout: bool, n: int, batch_size: int, chunk: int,
                     mesh: Any) -> Callable:
    """The jitted epoch of a population: ``step((state, ctrl), data) -> (state, sums)``, every
    member one `epoch_body` with its own optimiser hyperparameters, dropout and key, its update
    kept only while it is active, then its full-set sums (`set_sums`). Cached per configuration
    (the data are an argument), so populations of one shape compile once per process."""
    apply_fn = cached(model_functions, model, takes_train, chunk)["apply"]

    def member_epoch(row, data):
        (p, s), c = row
        X_train, y_train, X_test, y_test = data
        tx = make_optimizer(optimizer, c["lr"], momentum, c["weight_decay"], decayed=decayed)
        body = epoch_body(model, takes_train, tx, n, batch_size)
        key = jax.random.fold_in(c["key"], c["epoch"])
        with (_dropout_keep(c["keep"], model.dropout) if any_dropout
              else contextlib.nullcontext()):
            p1, s1, _ = body(p, s, key, X_train, y_train)
        keep_old = lambda new, old: jnp.where(c["active"], new, old)  # noqa: E731
        p, s = jax.tree.map(keep_old, p1, p), jax.tree.map(keep_old, s1, s)
        sums = (set_sums(apply_fn, p, X_train, y_train, chunk),
                set_sums(apply_fn, p, X_test, y_test, chunk))
        return (p, s), sums

    return population_function(member_epoch, mesh=mesh, shared=True)


def _members(members: Any, model: nn.Module) -> list[dict[str, float]]:
    if isinstance(members, Mapping) or not isinstance(members, Sequence) or not members:
        raise TypeError("members must be a non-empty list of dicts with 'lr', 'dropout' and "
                        f"'weight_decay' (each optional), got {type(members).__name__}")
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, Mapping):
            raise TypeError(f"members[{i}] must be a dict, got {type(m).__name__}")
        extra = sorted(set(m) - set(MEMBER_KEYS))
        if extra:
            raise ValueError(f"members[{i}] has unknown keys {extra}; a member may set "
                             f"{list(MEMBER_KEYS)} (the population shares everything else)")
        rate = m.get("dropout")
        rate = float(getattr(model, "dropout", 0.0)) if rate is None else rate
        out.append({
            "lr": check_positive(m.get("lr", 1e-3), f"members[{i}]['lr']"),
            "dropout": check_range(rate, f"members[{i}]['dropout']", low=0.0, high=1.0,
                                   high_open=True),
            "weight_decay": check_positive(m.get("weight_decay", 0.0),
                                           f"members[{i}]['weight_decay']", allow_zero=True),
        })
    return out


def train_population(
    model_or_spec: nn.Module | Mapping[str, Any],
    dataset: Any,
    members: Sequence[Mapping[str, float]],
    *,
    optimizer: str = "adam",
    momentum: float = 0.9,
    batch_size: int = 128,
    max_epochs: int = 100,
    stop: str = "loss",
    loss_target: float = 0.01,
    seed: int = 0,
    devices: Sequence[Any] | None = None,
    checkpoint_dir: str | Any | None = None,
    checkpoint_every: int = 25,
    progress: Callable[[dict[str, Any]], None] | None = None,
    eval_batch_size: int = 4096,
) -> list[TrainResult]:
    """Trains one network per member, all as one population, each stopped on its own.

    Member k is the network ``train(model_or_spec, dataset, lr=..., dropout=...,
    weight_decay=..., optimizer=optimizer, batch_size=batch_size, max_epochs=max_epochs,
    stop=stop, loss_target=loss_target, seed=seed)`` gives, to float rounding: the same
    program, run for all members at once (see the module docstring).

    Args:
      model_or_spec: as in `train` (a linen module or a `make_model` dict); with a member's
        dropout > 0 it must have a ``dropout`` attribute.
      dataset: as in `train`.
      members: one dict per network with any of ``lr`` (default 1e-3), ``dropout`` (default:
        the model's rate) and ``weight_decay`` (default 0; coupled for sgd/momentum/adam,
        decoupled for adamw, as in `train`).
      optimizer, momentum, batch_size, max_epochs, loss_target, seed, eval_batch_size: as in
        `train`, shared by every member.
      stop: ``"loss"`` or ``"fit"``, as in `train`, per member.
      devices: the devices the members are spread over (default: every device).
      checkpoint_dir: where to keep the population's ``checkpoint.msgpack`` (every member's
        state, its epochs and history), written every `checkpoint_every` epochs and at the
        end; a rerun with the same settings and members resumes from it, one with others
        raises `CheckpointError`.
      checkpoint_every: epochs between checkpoints.
      progress: called after every epoch with ``epoch, max_epochs, active`` (members still
        training), ``train_loss`` (a list, one per member) and ``seconds``.

    Returns:
      One `TrainResult` per member, in order; ``config["population"]`` is the number of
      members.

    Raises:
      ValueError: a bad argument, or a member whose training loss became NaN or inf (named).
      CheckpointError: a corrupt checkpoint, or one of another population.
    """
    (momentum, loss_target, batch_size, max_epochs, checkpoint_every, eval_batch_size,
     seed) = check_loop_options(optimizer, stop, momentum, loss_target, batch_size, max_epochs,
                                checkpoint_every, eval_batch_size, seed, progress,
                                stop_optional=False)
    n, num_classes = check_dataset(dataset)
    batch_size = min(batch_size, n)
    base = _resolve_model(model_or_spec, num_classes, None)
    mem = _members(members, base)
    K = len(mem)
    models = [_resolve_model(base, num_classes, m["dropout"]) for m in mem]
    rates = [m["dropout"] for m in mem]
    # The population's program: Dropout layers present whenever a member has dropout.
    model = models[int(np.argmax(rates))]
    any_dropout = max(rates) > 0.0
    decayed = any(m["weight_decay"] > 0.0 for m in mem)
    takes_train = _takes_train(model)

    X_train = jnp.asarray(dataset.X_train, jnp.float32)
    y_train = jnp.asarray(dataset.y_train, jnp.int32)
    X_test = jnp.asarray(dataset.X_test, jnp.float32)
    y_test = jnp.asarray(dataset.y_test, jnp.int32)
    mf = cached(model_functions, model, takes_train, eval_batch_size)
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = mf["init"]({"params": init_key, "dropout": init_key}, X_train[:1])
    if sorted(variables) != ["params"]:
        raise ValueError("the model has mutable collections besides 'params'; train_population "
                         "supports parameter-only models")
    order = mf["order"]["params"]
    init_params = in_order(variables["params"], order)
    tx0 = make_optimizer(optimizer, jnp.float32(1.0), momentum, jnp.float32(0.0),
                         decayed=decayed)
    stack = lambda tree: jax.tree.map(lambda a: np.repeat(np.asarray(a)[None], K, 0), tree)  # noqa: E731
    params, opt_state = stack(init_params), stack(tx0.init(init_params))
    # a Python float's dtype: the one `flax.linen.Dropout` draws its mask in
    keep_dtype = jnp.result_type(float)
    ctrl_static = {
        "key": np.repeat(np.asarray(train_key)[None], K, 0),
        "lr": np.asarray([m["lr"] for m in mem], np.float32),
        "weight_decay": np.asarray([m["weight_decay"] for m in mem], np.float32),
        "keep": np.asarray([1.0 - m["dropout"] for m in mem], keep_dtype),
    }

    mesh = population_mesh(devices)
    total = padded_size(K, mesh)
    step = cached(_population_step, model, takes_train, optimizer, momentum, decayed,
                  any_dropout, n, batch_size, eval_batch_size, mesh)
    data = (X_train, y_train, X_test, y_test)

    base_config: dict[str, Any] = {
        "model": _module_description(base),
        "dataset": getattr(dataset, "name", type(dataset).__name__),
        "data_sha256": _data_fingerprint(dataset), "n_train": n, "num_classes": num_classes,
        "optimizer": optimizer, "momentum": momentum if optimizer == "momentum" else None,
        "batch_size": batch_size,
        "last_batch": "padded with zero-weight examples (mean over its real examples)",
        "stop": stop, "loss_target": loss_target if stop == "loss" else None, "seed": seed,
    }
    pop_config = {**base_config, "members": mem, "training": "population"}

    epoch = 0
    epochs = np.zeros(K, np.int64)
    reached = np.zeros(K, bool)
    hist = {k: np.zeros((K, 0)) for k in HISTORY_KEYS}
    start_epoch = 0
    lock = None
    if checkpoint_dir is not None and not held_here(checkpoint_dir):
        lock = DirectoryLock(checkpoint_dir).acquire()
    try:
        ckpt_path = None if checkpoint_dir is None else (Path(checkpoint_dir)
                                                         / _checkpoint.FILENAME)
        if ckpt_path is not None and ckpt_path.exists():
            members_t = {"epochs": epochs, "reached": reached}
            restored = _checkpoint.read(ckpt_path, pop_config, {
                "params": params, "init_params": init_params, "opt_state": opt_state,
                "members": members_t})
            if not np.array_equal(restored["key"], np.asarray(train_key)):
                raise _checkpoint.CheckpointError(
                    f"checkpoint {ckpt_path} holds another random key than seed={seed} gives")
            epoch = start_epoch = restored["epoch"]
            if epoch > max_epochs:
                raise ValueError(f"checkpoint {ckpt_path} is at epoch {epoch}, beyond "
                                 f"max_epochs={max_epochs}; raise max_epochs or use another "
                                 "checkpoint_dir")
            params, opt_state = restored["params"], restored["opt_state"]
            epochs = np.array(restored["members"]["epochs"], np.int64)
            reached = np.array(restored["members"]["reached"], bool)
            hist = {k: np.asarray(v, np.float64).reshape(K, -1)
                    for k, v in restored["history"].items()}
        state = put_rows((params, opt_state), mesh, total)
        n_test = int(X_test.shape[0])
        while not reached.all() and epoch < max_epochs:
            t0 = time.perf_counter()
            active = ~reached
            ctrl = put_rows({**ctrl_static, "active": active,
                             "epoch": np.full(K, epoch, np.int32)}, mesh, total)
            state, sums = step((state, ctrl), data)
            (tr_sum, tr_ok), (te_sum, te_ok) = gather_rows(sums, K)
            epoch += 1
            train_loss = tr_sum.astype(np.float64) / n
            train_acc = tr_ok / n
            test_loss = te_sum.astype(np.float64) / n_test if n_test else np.full(K, math.nan)
            test_acc = te_ok / n_test if n_test else np.full(K, math.nan)
            bad = [k for k in range(K) if active[k] and not math.isfinite(train_loss[k])]
            if bad:
                raise ValueError(
                    f"train_population: the training loss of member {bad[0]} ({mem[bad[0]]}) "
                    f"became {train_loss[bad[0]]} at epoch {epoch} (the run diverged); lower "
                    "its lr or check the data. No checkpoint was written for this epoch")
            for k, v in zip(HISTORY_KEYS, (np.full(K, epoch), train_loss, train_acc, test_loss,
                                           test_acc), strict=True):
                hist[k] = np.concatenate([hist[k], np.asarray(v, np.float64)[:, None]], 1)
            now = (tr_ok == n) if stop == "fit" else (train_loss <= loss_target)
            epochs[active] = epoch
            reached = reached | (active & now)
            done = reached.all() or epoch == max_epochs
            if ckpt_path is not None and (epoch % checkpoint_every == 0 or done):
                p_host, s_host = gather_rows(state, K)
                _checkpoint.write(ckpt_path, pop_config, {
                    "params": p_host, "init_params": init_params, "opt_state": s_host,
                    "epoch": epoch, "key": np.asarray(train_key), "reached": bool(reached.all()),
                    "members": {"epochs": epochs, "reached": reached}, "history": hist})
            if progress is not None:
                progress({"epoch": epoch, "max_epochs": max_epochs,
                          "active": int((~reached).sum()), "train_loss": train_loss.tolist(),
                          "seconds": time.perf_counter() - t0})
        params, _ = gather_rows(state, K)
    finally:
        if lock is not None:
            lock.release()

    out = []
    for k in range(K):
        e = int(epochs[k])
        history = {key: [float(v) for v in hist[key][k, :e]] for key in HISTORY_KEYS}
        history["epoch"] = [int(v) for v in history["epoch"]]
        mfk = cached(model_functions, models[k], takes_train, eval_batch_size)
        out.append(TrainResult(
            params=in_order(jax.tree.map(lambda a, k=k: jnp.asarray(a[k]), params), order),
            init_params=init_params,
            apply_fn=mfk["jitted_apply"],
            history=history,
            epochs=e,
            reached=bool(reached[k]),
            config={**base_config, "model": _module_description(models[k]), "lr": mem[k]["lr"],
                    "weight_decay": mem[k]["weight_decay"], "population": K,
                    "max_epochs": max_epochs, "resumed_from": start_epoch},
            model=models[k],
        ))
    return out
