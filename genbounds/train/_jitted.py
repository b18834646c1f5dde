"""The jitted functions of one training configuration, built once and cached per process.

`model_functions` (initialisation, evaluation mode apply, full-set evaluation) depend on the model
only; `epoch_functions` (the optimiser and one epoch as a `lax.scan`, `epoch_body`) on the model,
the optimiser and the data size. `cached` keeps the most recent ones, so that the levels of a label-noise sweep,
a resumed run and other seeds compile once. `key_order` / `in_order` put linen's creation order
back into the parameter dicts that `jax.jit` returns with sorted keys.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from genbounds.core._dtypes import promote, standard_promotion

from ._lipschitz_margin import power_start, power_step


def make_optimizer(name: str, lr: Any, momentum: float, weight_decay: Any, *,
                   decayed: bool | None = None):
    """The optax optimiser `name` (see `train`). ``lr`` and ``weight_decay`` may be traced
    arrays (a population's per-member values); the coupled decay is chained in when
    ``decayed`` (default: ``weight_decay > 0``)."""
    if decayed is None:
        decayed = weight_decay > 0.0
    if name == "adamw":
        return optax.adamw(lr, weight_decay=weight_decay)
    base = {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=momentum),
        "adam": lambda: optax.adam(lr),
    }[name]()
    if decayed:
        # Coupled L2 regularisation: the gradient of (weight_decay / 2) ||w||^2 is added to the
        # loss gradient before the optimiser transforms it (all parameters, biases included).
        return optax.chain(optax.add_decayed_weights(weight_decay), base)
    return base


def key_order(tree: Any) -> Any:
    """The nested key order of a dict tree, read directly (tree utilities sort dict keys)."""
    if isinstance(tree, Mapping):
        return {k: key_order(v) for k, v in tree.items()}
    return None


def in_order(tree: Any, order: Any) -> Any:
    """Rebuilds the dicts of `tree` with their keys in `order`.

    Linen lists a module's parameters in creation order (= application order for our models),
    but every pytree that passes through `jax.jit` comes back with its dict keys sorted
    ('Dense_10' before 'Dense_2'). The returned parameters are put back in creation order.
    """
    if order is None:
        return tree
    return {k: in_order(tree[k], order[k]) for k in order}


def set_sums(apply: Callable, params: Any, X: jax.Array, y: jax.Array, chunk: int):
    """Sum of cross-entropies and number of correct argmax predictions over (X, y).

    Runs in chunks of `chunk` examples inside the jitted caller (a `fori_loop` of dynamic
    slices; the last chunk is shifted back to end at n and its already counted examples are
    masked), so memory stays at one chunk of activations and X is never copied or padded.
    """
    n = X.shape[0]
    if n == 0:
        return jnp.float32(0.0), jnp.int32(0)
    size = min(chunk, n)

    def body(i, acc):
        start = jnp.minimum(i * size, n - size)
        xb = jax.lax.dynamic_slice_in_dim(X, start, size)
        yb = jax.lax.dynamic_slice_in_dim(y, start, size)
        fresh = start + jnp.arange(size) >= i * size
        logits = apply(params, xb)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), yb)
        correct = jnp.equal(*promote(jnp.argmax(logits, axis=-1), yb))
        return (
            acc[0] + jnp.sum(jnp.where(fresh, ce, 0.0)),
            acc[1] + jnp.sum(fresh & correct, dtype=jnp.int32),
        )

    return jax.lax.fori_loop(0, math.ceil(n / size), body, (jnp.float32(0.0), jnp.int32(0)))


def model_functions(model: nn.Module, takes_train: bool, chunk: int) -> dict[str, Any]:
    """The jitted functions that depend on the model only: init, apply and evaluation."""
    eval_kwargs = {"train": False} if takes_train else {}
    order: dict[str, Any] = {}

    def apply_fn(params, X):
        return model.apply({"params": params}, X, **eval_kwargs)

    @jax.jit
    def init(rngs, x):
        variables = model.init(rngs, x, **eval_kwargs)
        order["params"] = key_order(variables["params"])  # recorded while tracing
        return variables

    @jax.jit
    def evaluate(params, X_train, y_train, X_test, y_test):
        return (
            set_sums(apply_fn, params, X_train, y_train, chunk),
            set_sums(apply_fn, params, X_test, y_test, chunk),
        )

    return {
        "apply": apply_fn,
        "jitted_apply": jax.jit(apply_fn),
        "init": init,
        "order": order,
        "evaluate": evaluate,
    }


def epoch_functions(
    model: nn.Module, takes_train: bool, opt: tuple, n: int, batch_size: int,
    lipschitz_margin: float = 0.0,
    certified: Any = None,
) -> dict[str, Any]:
    """The optimiser and the jitted epoch (`epoch_body`) of one configuration."""
    tx = make_optimizer(*opt)
    return {"tx": tx, "epoch": jax.jit(epoch_body(model, takes_train, tx, n, batch_size,
                                                  lipschitz_margin, certified))}


def epoch_body(
    model: nn.Module, takes_train: bool, tx: Any, n: int, batch_size: int,
    lipschitz_margin: float = 0.0, certified: Any = None,
) -> Callable:
    """One epoch, ``epoch(params, opt_state, key, X, y, epoch_index=0) -> (params, opt_state,
    losses)`` (the epoch index drives the certified-training schedules), not
    jitted: `epoch_functions` jits it for `train`, and `train_population` runs it for every
    member of a population (its optimiser `tx` built from the member's hyperparameters), so a
    network trains by one program alone or in a population.

    One epoch is one `lax.scan` over ``ceil(n / batch_size)`` minibatches. The permutation of
    the n examples is padded with index 0 up to a multiple of the batch size; padded slots carry
    weight 0, so the last (partial) minibatch's loss is the mean over its real examples only and
    every example is seen exactly once per epoch.

    With ``lipschitz_margin`` = c > 0 the loss is Tsuzuku et al.'s (2018, Section 4): the
    cross-entropy of the logits with sqrt(2) c L added to every logit but the label's, L the
    product of the layers' estimated spectral norms (`power_step`).

    With ``certified`` (a `CertifiedSpec`) the loss is IBP's or CROWN-IBP's
    (`_certified.robust_loss`), with $\\varepsilon$, $\\kappa$, $\\beta$ scheduled per
    minibatch from the epoch index the epoch is given.
    """
    lm = float(lipschitz_margin)
    steps = math.ceil(n / batch_size)
    pops = None
    if certified is not None:
        from ._certified import ParamOps

        eval_kwargs = {"train": False} if takes_train else {}
        x_ex = jax.random.uniform(jax.random.key(1), (4,) + tuple(certified.input_shape),
                                  jnp.float32)
        params0 = jax.jit(lambda k, x: model.init(k, x, **eval_kwargs))(
            jax.random.key(0), x_ex)["params"]
        pops = ParamOps(lambda p, x: model.apply({"params": p}, x, **eval_kwargs), params0,
                        x_ex)

    def loss_fn(params, xb, yb, wb, key, us, sched):
        if takes_train:
            logits = model.apply({"params": params}, xb, train=True, rngs={"dropout": key})
        else:
            logits = model.apply({"params": params}, xb)
        logits = logits.astype(jnp.float32)
        if lm > 0.0:
            lip, us = power_step(params, us)
            others = 1.0 - jax.nn.one_hot(yb, logits.shape[-1], dtype=logits.dtype)
            logits = logits + math.sqrt(2.0) * lm * lip * others
        if pops is not None:
            from ._certified import robust_loss

            ce = robust_loss(pops, certified, params, logits, xb, yb, *sched)
        else:
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
        return jnp.sum(ce * wb) / jnp.sum(wb), us

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    pad = steps * batch_size - n

    def epoch(params, opt_state, key, X, y, epoch_index=0):
        perm_key, drop_key = jax.random.split(key)
        perm = jax.random.permutation(perm_key, n).astype(jnp.int32)
        idx = jnp.concatenate([perm, jnp.zeros(pad, jnp.int32)]).reshape(steps, batch_size)
        w = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(pad, jnp.float32)])
        w = w.reshape(steps, batch_size)
        keys = jax.random.split(drop_key, steps)
        us0 = power_start(params) if lm > 0.0 else []
        first = jnp.asarray(epoch_index, jnp.int32) * steps

        def step(carry, inputs):
            params, opt_state, us = carry
            ib, wb, kb, t = inputs
            sched = () if pops is None else certified.schedule(first + t, steps)
            (loss, us), grads = grad_fn(params, X[ib], y[ib], wb, kb, us, sched)
            with standard_promotion():  # optax's Adam bias correction: float ** int32
                updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, us), loss

        ts = jnp.arange(steps, dtype=jnp.int32)
        (params, opt_state, _), losses = jax.lax.scan(step, (params, opt_state, us0),
                                                      (idx, w, keys, ts))
        return params, opt_state, losses

    return epoch


# Jitted functions of recent configurations, so that several runs with one model (the levels
# of a label-noise sweep, a resumed run, other seeds) compile once per process.
_CACHE: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
_CACHE_SIZE = 16


def cached(builder: Callable, *args: Any) -> dict[str, Any]:
    key = (builder.__name__, type(args[0]), *args)
    try:
        hash(key)
    except TypeError:  # a module with unhashable attributes (e.g. lists): no caching
        return builder(*args)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    built = _CACHE[key] = builder(*args)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return built
