"""Training to a stopping criterion, one jitted `lax.scan` per epoch, with resumable checkpoints.

`train` checks its arguments, resumes from a checkpoint and runs the epoch loop. The functions it
runs under jit are built in `_jitted` (one epoch, the full-set evaluation; cached per
configuration), the power iteration of Lipschitz-margin training in `_lipschitz_margin`, and the
checkpoint file in `_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import numbers
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import (
    check_choice,
    check_finite_tree,
    check_float_array,
    check_labels,
    check_positive,
    check_range,
)
from genbounds.files import DirectoryLock, held_here

from . import _checkpoint
from ._certified import check_certified
from ._jitted import cached, epoch_functions, in_order, model_functions
from ._models import make_model

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
STOPS = ("fit", "loss")
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")


@dataclasses.dataclass(frozen=True, eq=False)
class TrainResult:
    """The outcome of `train`.

    Attributes:
      params: the trained linen parameter dict, *without* the outer ``{'params': ...}``, i.e.
        the structure of ``model.init(...)['params']``, layers in application order.
      init_params: the parameters at initialisation, same structure (the bounds that measure
        distance from initialisation need them).
      apply_fn: a pure, jitted function ``apply_fn(params, X) -> logits`` (evaluation mode:
        dropout off).
      history: per-epoch lists under ``"epoch"``, ``"train_loss"``, ``"train_acc"``,
        ``"test_loss"``, ``"test_acc"``, evaluated after each epoch on the full sets (in
        evaluation mode, so ``train_acc`` is the accuracy the stopping rule saw).
      epochs: the epochs run: the first epoch at which the stopping criterion held, else
        ``max_epochs``.
      reached: whether the stopping criterion was met.
      config: the run's settings as plain values (model, optimiser, data fingerprint, ...).
      model: the linen module that was trained.
    """

    params: Any
    init_params: Any
    apply_fn: Callable[[Any, jax.Array], jax.Array]
    history: Mapping[str, list]
    epochs: int
    reached: bool
    config: Mapping[str, Any]
    model: nn.Module

    @property
    def train_acc(self) -> float:
        """Training accuracy after the last epoch (on the labels trained on)."""
        return self.history["train_acc"][-1]

    @property
    def test_acc(self) -> float:
        """Test accuracy after the last epoch."""
        return self.history["test_acc"][-1]

    @property
    def train_loss(self) -> float:
        """Mean training cross-entropy after the last epoch."""
        return self.history["train_loss"][-1]


def _check_int(x: Any, name: str, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x!r}")
    return int(x)


def check_loop_options(optimizer: Any, stop: Any, momentum: Any, loss_target: Any,
                       batch_size: Any, max_epochs: Any, checkpoint_every: Any,
                       eval_batch_size: Any, seed: Any, progress: Any, *,
                       stop_optional: bool) -> tuple:
    """The options `train` and `train_population` share, checked at the boundary: returns
    (momentum, loss_target, batch_size, max_epochs, checkpoint_every, eval_batch_size, seed)."""
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    if stop is not None or not stop_optional:
        check_choice(stop, "stop", STOPS)
    # Heavy-ball momentum beta must lie in [0, 1): beta >= 1 accumulates gradients without decay
    # (the iterates diverge), beta < 0 is not momentum.
    momentum = check_range(momentum, "momentum", low=0.0, high=1.0, high_open=True)
    loss_target = check_positive(loss_target, "loss_target")
    out = (momentum, loss_target, _check_int(batch_size, "batch_size", 1),
           _check_int(max_epochs, "max_epochs", 1),
           _check_int(checkpoint_every, "checkpoint_every", 1),
           _check_int(eval_batch_size, "eval_batch_size", 1), _check_int(seed, "seed", 0))
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")
    return out


def _module_description(model: nn.Module) -> dict[str, Any]:
    fields = {
        f.name: repr(getattr(model, f.name))
        for f in dataclasses.fields(model)
        if f.name not in ("parent", "name")
    }
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}", **fields}


def _data_fingerprint(dataset: Any) -> str:
    h = hashlib.sha256()
    for a in (dataset.X_train, dataset.y_train, dataset.X_test, dataset.y_test):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _resolve_model(model_or_spec: Any, num_classes: int, dropout: float | None) -> nn.Module:
    if isinstance(model_or_spec, nn.Module):
        model = model_or_spec
    elif isinstance(model_or_spec, Mapping):
        spec = dict(model_or_spec)
        if spec.setdefault("num_classes", num_classes) != num_classes:
            raise ValueError(
                f"model spec has num_classes={spec['num_classes']} but the dataset has "
                f"{num_classes} classes"
            )
        if "kind" not in spec:
            raise ValueError(f"model spec must have a 'kind' ('mlp' or 'cnn'), got {spec}")
        model = make_model(spec.pop("kind"), **spec)
    else:
        raise TypeError(
            "model_or_spec must be a flax.linen Module or a dict for make_model, e.g. "
            f"{{'kind': 'mlp', 'depth': 1, 'width': 256}}; got {type(model_or_spec).__name__}"
        )
    if dropout is not None:
        rate = float(dropout)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        if hasattr(model, "dropout"):
            model = model.clone(dropout=rate)
        elif rate > 0.0:
            raise ValueError(
                f"dropout={dropout} was asked for, but {type(model).__name__} has no 'dropout' "
                "attribute; build the model with its own dropout layers"
            )
    return model


def check_dataset(dataset: Any) -> tuple[int, int]:
    """Checks a dataset for training (attributes, shapes, finite float32-range inputs, labels)
    and returns its number of training examples and of classes."""
    for attr in ("X_train", "y_train", "X_test", "y_test", "num_classes"):
        if not hasattr(dataset, attr):
            raise TypeError(f"dataset must have an attribute {attr!r} (a genbounds Dataset)")
    num_classes = _check_int(dataset.num_classes, "dataset.num_classes", 2)
    X_train_in = check_float_array(dataset.X_train, "dataset.X_train")
    n = int(np.shape(X_train_in)[0])
    if np.size(dataset.X_test) or np.size(dataset.y_test):
        X_test_in = check_float_array(dataset.X_test, "dataset.X_test")
        if np.shape(X_test_in)[1:] != np.shape(X_train_in)[1:]:
            raise ValueError(
                f"dataset.X_test must have the per-example shape of dataset.X_train, "
                f"{np.shape(X_train_in)[1:]}, got {np.shape(X_test_in)[1:]}"
            )
        if np.shape(dataset.y_test) != (np.shape(X_test_in)[0],):
            raise ValueError(
                f"dataset.y_test must have shape ({np.shape(X_test_in)[0]},) matching X_test, "
                f"got {np.shape(dataset.y_test)}"
            )
    for name in ("X_train", "X_test"):
        a = np.asarray(getattr(dataset, name))
        if a.size and np.max(np.abs(a)) > np.finfo(np.float32).max:
            raise ValueError(f"dataset.{name} holds values beyond the float32 range the model "
                             f"is trained in (largest {np.max(np.abs(a)):.3g})")
    if n < 1 or np.shape(dataset.y_train) != (n,):
        raise ValueError(
            f"dataset.y_train must have shape ({n},) matching X_train, got {np.shape(dataset.y_train)}"
        )
    check_labels(dataset.y_train, "dataset.y_train", num_classes=num_classes)
    if np.size(dataset.y_test):
        check_labels(dataset.y_test, "dataset.y_test", num_classes=num_classes)
    return n, num_classes


def _takes_train(model: nn.Module) -> bool:
    return "train" in inspect.signature(type(model).__call__).parameters


def _run_epochs(run_epoch, evaluate, train_key, params, opt_state, X_train, y_train, X_test,
                y_test, *, start_epoch, max_epochs, reached, history, stop, loss_target, n, lr,
                optimizer, ckpt_path, checkpoint_every, config, init_params, progress,
                stop_from=0):
    """The epoch loop of `train`: train, evaluate, stop test, checkpoint, progress."""
    epoch = start_epoch
    while not reached and epoch < max_epochs:
        t0 = time.perf_counter()
        params, opt_state, _ = run_epoch(
            params, opt_state, jax.random.fold_in(train_key, epoch), X_train, y_train,
            jnp.int32(epoch),
        )
        epoch += 1
        (tr_sum, tr_correct), (te_sum, te_correct) = evaluate(
            params, X_train, y_train, X_test, y_test
        )
        correct, n_test = int(tr_correct), int(X_test.shape[0])
        train_loss, train_acc = float(tr_sum) / n, correct / n
        test_loss = float(te_sum) / n_test if n_test else math.nan
        test_acc = int(te_correct) / n_test if n_test else math.nan
        if not math.isfinite(train_loss):
            # Diverged (learning rate too large, or an overflow): stop before a non-finite
            # state is checkpointed or returned as if it were a trained network.
            raise ValueError(
                f"train: the training loss became {train_loss} at epoch {epoch} (the run "
                f"diverged; lr={lr}, optimizer={optimizer!r}); lower lr or check the data. "
                "No checkpoint was written for this epoch"
            )
        for k, v in zip(
            HISTORY_KEYS, (epoch, train_loss, train_acc, test_loss, test_acc), strict=True
        ):
            history[k].append(v)
        if epoch < stop_from:
            pass  # certified training: the radius has not reached certified_eps yet
        elif stop == "fit":
            reached = correct == n
        elif stop == "loss":
            reached = train_loss <= loss_target
        if ckpt_path is not None and (
            epoch % checkpoint_every == 0 or reached or epoch == max_epochs
        ):
            _checkpoint.write(
                ckpt_path,
                config,
                {
                    "params": params,
                    "init_params": init_params,
                    "opt_state": opt_state,
                    "epoch": epoch,
                    "key": np.asarray(train_key),
                    "reached": reached,
                    "history": {k: np.asarray(v) for k, v in history.items()},
                },
            )
        if progress is not None:
            progress(
                {
                    "epoch": epoch,
                    "max_epochs": max_epochs,
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "test_loss": test_loss,
                    "test_acc": test_acc,
                    "reached": reached,
                    "seconds": time.perf_counter() - t0,
                }
            )

    return epoch, reached, history, params, opt_state


def train(
    model_or_spec: nn.Module | Mapping[str, Any],
    dataset: Any,
    *,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    dropout: float | None = None,
    batch_size: int = 128,
    max_epochs: int = 100,
    stop: str | None = "fit",
    loss_target: float = 0.01,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    progress: Callable[[dict[str, Any]], None] | None = None,
    eval_batch_size: int = 4096,
    lipschitz_margin: float = 0.0,
    certified: str | None = None,
    certified_eps: float | None = None,
    certified_norm: str = "linf",
    certified_warmup: int = 0,
    certified_ramp: int = 1,
    certified_kappa: float = 0.5,
    certified_beta: float = 0.0,
) -> TrainResult:
    """Trains a classifier with cross-entropy until it fits the training set, or for a budget.

    Each epoch is one jitted `jax.lax.scan` over ``ceil(n / batch_size)`` minibatches of a
    fresh permutation of the training set; the last minibatch, when partial, is padded with
    zero-weight examples, so its loss is the mean over its real examples (nothing is dropped).
    The permutation and the dropout masks of epoch e come from ``fold_in(key, e)`` with
    ``key`` derived from `seed`, so a run resumed from a checkpoint repeats exactly the
    computation of an uninterrupted one and ends with bitwise identical parameters.

    After every epoch the full training and test sets are evaluated (dropout off); training
    stops at the first epoch where the criterion holds:
    ``stop="fit"``: training accuracy 100% (every training label, corrupted or not, is the
    argmax of the logits; Zhang et al. 2017); ``stop="loss"``: mean training cross-entropy
    <= `loss_target` (0.01 as in Jiang et al. 2020); ``stop=None``: never (run `max_epochs`).

    Args:
      model_or_spec: a flax linen module taking ``(x, train=...)`` (or just ``x``) and
        returning logits, or a dict for `make_model`, e.g. ``{"kind": "mlp", "depth": 2,
        "width": 256}`` (``num_classes`` defaults to the dataset's).
      dataset: a `genbounds.data.Dataset` (anything with ``X_train, y_train, X_test, y_test,
        num_classes``); inputs are cast to float32.
      optimizer: ``"sgd"``, ``"momentum"`` (heavy ball, `momentum`), ``"adam"`` or
        ``"adamw"`` (decoupled weight decay).
      lr: learning rate, > 0 (constant).
      momentum: the momentum of ``"momentum"``, in [0, 1).
      weight_decay: >= 0. For sgd/momentum/adam it is coupled L2 regularisation (the gradient
        of ``weight_decay/2 * ||w||^2`` is added, biases included); for adamw the decoupled
        decay of `optax.adamw`.
      dropout: None keeps the model's own rate; a number in [0, 1) overrides it (the model must
        have a ``dropout`` attribute, as `MLP` and `CNN` do).
      batch_size: minibatch size, >= 1 (capped at n).
      max_epochs: the epoch budget, >= 1.
      stop: ``"fit"``, ``"loss"`` or None (see above).
      loss_target: the cross-entropy threshold of ``stop="loss"``.
      seed: initialisation, shuffling and dropout all derive from it.
      checkpoint_dir: where to keep ``checkpoint.msgpack``. If it holds one from the same
        configuration (model, data, optimiser, seed, ...; `max_epochs` may differ), training
        resumes from it; if the checkpoint has already reached the criterion it is returned
        as is. A checkpoint from another configuration, or a corrupt one, raises
        `CheckpointError` (training never restarts silently over it).
      checkpoint_every: write every this many epochs (and always at the end).
      progress: called after every epoch (after its checkpoint is written) with a dict of
        ``epoch, max_epochs, train_loss, train_acc, test_loss, test_acc, reached, seconds``.
        An exception it raises stops training; the run can then be resumed.
      eval_batch_size: chunk size of the full-set evaluations.
      lipschitz_margin: c >= 0. With c > 0, Lipschitz-margin training (Tsuzuku, Sato &
        Sugiyama 2018, arXiv:1802.04034, Section 4 / Algorithm 1): the loss is the
        cross-entropy of the logits with sqrt(2) c L added to every logit except the
        label's, where L is the product of the weight matrices' spectral norms (a conv kernel's
        reshaped norm times sqrt(window size)), estimated by one power iteration per step with
        the vectors carried across the steps of an epoch (warmed up by 20 iterations at its
        start) and differentiated with the vectors held fixed (Miyato et al. 2018). Minimising
        it pushes every training margin towards sqrt(2) c L, i.e. a certified l2
        radius of about c (`genbounds.certified_radius`). The stopping rule and the recorded
        losses and accuracies use the plain logits.
      certified: None (plain cross-entropy), ``"ibp"`` (Gowal et al. 2018, arXiv:1810.12715)
        or ``"crown-ibp"`` (Zhang et al. 2020, arXiv:1906.06316): training for certified
        robustness, with the loss $\\kappa\\,L(z, y) + (1-\\kappa)\\,L(-\\underline m, y)$,
        $\\underline m$ the lower bounds of the margins $z_y - z_j$ over the
        ``certified_norm`` ball of radius $\\varepsilon$ from `genbounds.verify` (interval
        propagation; for CROWN-IBP $\\beta$ times the CROWN bound with interval pre-activation
        bounds plus $1 - \\beta$ times the interval one), differentiated in float32 through the
        verifier's own computation (docs/verify.md states the objective). Only networks of
        dense/convolution layers and ReLU-type activations without BatchNorm are supported
        (others are refused by name). Exclusive with ``lipschitz_margin``. The bounds are
        those of the network in evaluation mode (dropout off). The stopping rule is tested
        only once $\\varepsilon$ has reached ``certified_eps``.
      certified_eps: the radius trained for, > 0 (required with ``certified``).
      certified_norm: ``"linf"`` (as in both papers) or ``"l2"``.
      certified_warmup: epochs of plain cross-entropy first ($\\varepsilon = 0$), >= 0.
      certified_ramp: epochs over which $\\varepsilon$ rises linearly (per minibatch) from 0
        to ``certified_eps``, >= 1; $\\kappa$ falls from 1 to ``certified_kappa`` and
        (CROWN-IBP) $\\beta$ from 1 to ``certified_beta`` in proportion. ``certified_warmup +
        certified_ramp`` must not exceed ``max_epochs``.
      certified_kappa: $\\kappa$ at the end of the ramp, in [0, 1] (0.5 as in Gowal et al.).
      certified_beta: $\\beta$ at the end of the ramp, in [0, 1] (CROWN-IBP; 0 as in
        Zhang et al.'s "1 → 0" schedule).

    Returns:
      A `TrainResult`.

    Raises:
      ValueError: a bad argument (NaN/inf or non-real inputs, X_test of another shape than
        X_train, fewer than 2 classes, momentum outside [0, 1), ...), a model whose output is
        not ``num_classes`` logits, or a model with other mutable collections (batch
        statistics) than ``params``.
      ValueError: the training loss became NaN or inf (the run diverged).
      CheckpointError: (a ValueError) a corrupt or mismatched checkpoint, or one whose
        stored arrays are not finite.
      DirectoryBusy: (an OSError) another running process trains into the
        same `checkpoint_dir` (it is locked with ``checkpoint_dir/.genbounds.lock``).

    Examples:
      >>> from genbounds.data import load
      >>> ds = load("digits", n=200)
      >>> res = train({"kind": "mlp", "depth": 1, "width": 64}, ds, batch_size=32, max_epochs=200)
      >>> res.reached, res.train_acc
      (True, 1.0)

    References:
      Zhang et al., "Understanding deep learning requires rethinking generalization",
      ICLR 2017, arXiv:1611.03530.
      Jiang et al., "Fantastic generalization measures and where to find them", ICLR 2020,
      arXiv:1912.02178.
    """
    lr = check_positive(lr, "lr")
    weight_decay = check_positive(weight_decay, "weight_decay", allow_zero=True)
    (momentum, loss_target, batch_size, max_epochs, checkpoint_every, eval_batch_size,
     seed) = check_loop_options(optimizer, stop, momentum, loss_target, batch_size, max_epochs,
                                checkpoint_every, eval_batch_size, seed, progress,
                                stop_optional=True)
    lipschitz_margin = check_positive(lipschitz_margin, "lipschitz_margin", allow_zero=True)
    cert = check_certified(certified, eps=certified_eps, norm=certified_norm,
                           warmup=certified_warmup, ramp=certified_ramp,
                           kappa_end=certified_kappa, beta_end=certified_beta,
                           lipschitz_margin=lipschitz_margin, max_epochs=max_epochs)
    n, num_classes = check_dataset(dataset)
    batch_size = min(batch_size, n)
    model = _resolve_model(model_or_spec, num_classes, dropout)

    X_train = jnp.asarray(dataset.X_train, jnp.float32)
    y_train = jnp.asarray(dataset.y_train, jnp.int32)
    X_test = jnp.asarray(dataset.X_test, jnp.float32)
    y_test = jnp.asarray(dataset.y_test, jnp.int32)

    takes_train = _takes_train(model)
    mf = cached(model_functions, model, takes_train, eval_batch_size)
    ef = cached(
        epoch_functions, model, takes_train, (optimizer, lr, momentum, weight_decay), n, batch_size,
        lipschitz_margin,
        None if cert is None else dataclasses.replace(
            cert, input_shape=tuple(int(s) for s in X_train.shape[1:])),
    )
    apply_fn, init, order, evaluate = mf["apply"], mf["init"], mf["order"], mf["evaluate"]
    tx, run_epoch = ef["tx"], ef["epoch"]

    key = jax.random.PRNGKey(seed)
    init_key, train_key = jax.random.split(key)
    # Initialised under jit (one compilation instead of one per eager operation); `order` holds
    # linen's creation order of the parameters, which jit's output has lost.
    variables = init({"params": init_key, "dropout": init_key}, X_train[:1])
    extra = sorted(set(variables) - {"params"})
    if extra:
        raise ValueError(
            f"the model has mutable collections {extra} besides 'params' (e.g. BatchNorm "
            "statistics); train supports parameter-only models"
        )
    init_params = in_order(variables["params"], order["params"])
    out_shape = jax.eval_shape(apply_fn, init_params, X_train[:2]).shape
    if out_shape != (min(2, n), num_classes):
        raise ValueError(
            f"the model must return logits of shape (batch, {num_classes}), got {out_shape}"
        )
    config: dict[str, Any] = {
        "model": _module_description(model),
        "dataset": getattr(dataset, "name", type(dataset).__name__),
        "data_sha256": _data_fingerprint(dataset),
        "n_train": n,
        "num_classes": num_classes,
        "optimizer": optimizer,
        "lr": lr,
        "momentum": momentum if optimizer == "momentum" else None,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "last_batch": "padded with zero-weight examples (mean over its real examples)",
        "stop": stop,
        "loss_target": loss_target if stop == "loss" else None,
        "seed": seed,
    }
    if lipschitz_margin > 0.0:  # only then, so that older checkpoints keep their configuration
        config["lipschitz_margin"] = lipschitz_margin
    if cert is not None:
        config["certified"] = cert.config()

    params, opt_state = init_params, tx.init(init_params)
    history: dict[str, list] = {k: [] for k in HISTORY_KEYS}
    start_epoch, reached = 0, False
    lock = None
    if checkpoint_dir is not None and not held_here(checkpoint_dir):
        # Two runs resuming from and writing to one checkpoint would clobber each other.
        lock = DirectoryLock(checkpoint_dir).acquire()
    try:
        ckpt_path = None
        if checkpoint_dir is not None:
            ckpt_path = Path(checkpoint_dir) / _checkpoint.FILENAME
            if ckpt_path.exists():
                restored = _checkpoint.read(
                    ckpt_path,
                    config,
                    {"params": params, "init_params": init_params, "opt_state": opt_state},
                )
                if not np.array_equal(restored["key"], np.asarray(train_key)):
                    raise _checkpoint.CheckpointError(
                        f"checkpoint {ckpt_path} holds another random key than seed={seed} gives"
                    )
                start_epoch, reached = restored["epoch"], restored["reached"]
                if start_epoch > max_epochs:
                    raise ValueError(
                        f"checkpoint {ckpt_path} is at epoch {start_epoch}, beyond "
                        f"max_epochs={max_epochs}; raise max_epochs or use another checkpoint_dir"
                    )
                for what in ("params", "init_params", "opt_state"):
                    if what == "opt_state" and not jax.tree_util.tree_leaves(restored[what]):
                        continue  # a stateless optimiser (plain sgd)
                    try:
                        check_finite_tree(restored[what], what)
                    except ValueError as e:
                        raise _checkpoint.CheckpointError(
                            f"checkpoint {ckpt_path} has a valid checksum but holds non-finite "
                            f"values ({e}); it is not resumed: delete it to start afresh"
                        ) from None
                to_jax = lambda tree: jax.tree.map(jnp.asarray, tree)  # noqa: E731
                params, init_params = to_jax(restored["params"]), to_jax(restored["init_params"])
                opt_state, history = to_jax(restored["opt_state"]), restored["history"]
                history["epoch"] = [int(e) for e in history["epoch"]]
        epoch, reached, history, params, opt_state = _run_epochs(
            run_epoch, evaluate, train_key, params, opt_state, X_train, y_train, X_test, y_test,
            start_epoch=start_epoch, max_epochs=max_epochs, reached=reached, history=history,
            stop=stop, loss_target=loss_target, n=n, lr=lr, optimizer=optimizer,
            ckpt_path=ckpt_path, checkpoint_every=checkpoint_every, config=config,
            init_params=init_params, progress=progress,
            stop_from=0 if cert is None else cert.warmup + cert.ramp)
    finally:
        if lock is not None:
            lock.release()

    return TrainResult(
        params=in_order(params, order["params"]),
        init_params=in_order(init_params, order["params"]),
        apply_fn=mf["jitted_apply"],
        history=history,
        epochs=epoch,
        reached=reached,
        config={**config, "max_epochs": max_epochs, "resumed_from": start_epoch},
        model=model,
    )
