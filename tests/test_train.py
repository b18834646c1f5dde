"""Tests of genbounds.train: models, training to fit (Zhang et al.), checkpoints, errors.

The randomisation test runs on scikit-learn's digits, all 1437 training examples, with a
one-hidden-layer MLP of width 256 trained by Adam (lr 1e-3, batch 32): true labels fit in about
50 epochs, fully random labels in about 400 (a few seconds each on two CPU cores).
"""

from __future__ import annotations

import hashlib
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import promoting

from genbounds.data import Dataset, load
from genbounds.internal import CHECKPOINT_MAGIC as MAGIC
from genbounds.train import CNN, MLP, CheckpointError, make_model, train

WIDE = {"kind": "mlp", "depth": 1, "width": 256}
FIT = dict(optimizer="adam", lr=1e-3, batch_size=32, max_epochs=1000, stop="fit", seed=0)


def _equal_trees(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    if [p for p, _ in la] != [p for p, _ in lb]:
        return False
    return all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
        for (_, x), (_, y) in zip(la, lb, strict=True)
    )


def _tiny_dataset(n=3, d=5, k=3, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, k, n).astype(np.int32)
    return Dataset(X, y, X, y, num_classes=k, input_shape=(d,), name="tiny")


def _ce64(model, params, X, y):
    """Mean cross-entropy in float64, written independently of the training code."""
    logits = model.apply({"params": params}, jnp.asarray(X, jnp.float64))
    logp = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
    return -jnp.mean(logp[jnp.arange(len(y)), y])


def _init_shapes(model, shape):
    """The parameter tree's shapes, without computing anything (`jax.eval_shape`)."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), x)["params"]


def _to64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


# ----------------------------------------------------------------------------------------------
# Models


def test_mlp_layers_in_application_order():
    model = make_model("mlp", depth=11, width=3, num_classes=4)
    order = [f"Dense_{i}" for i in range(12)]  # not sorted: Dense_10 comes after Dense_9
    params = model.init(jax.random.key(0), jnp.ones((1, 7), jnp.float32))["params"]
    assert list(params) == order
    shapes = [params[k]["kernel"].shape for k in params]
    assert shapes == [(7, 3)] + [(3, 3)] * 10 + [(3, 4)]
    lin = make_model("mlp", depth=0, width=1, num_classes=2, use_bias=False)
    p = _init_shapes(lin, (1, 5))
    assert list(p) == ["Dense_0"] and list(p["Dense_0"]) == ["kernel"]


def test_cnn_layers_and_shapes():
    model = make_model("cnn", depth=2, width=8, num_classes=10)
    params = _init_shapes(model, (1, 8, 8, 1))
    assert list(params) == ["Conv_0", "Conv_1", "Dense_0"]
    assert params["Conv_0"]["kernel"].shape == (3, 3, 1, 8)
    assert params["Conv_1"]["kernel"].shape == (3, 3, 8, 8)
    assert params["Dense_0"]["kernel"].shape == (2 * 2 * 8, 10)  # 8 -> 4 -> 2 with stride 2
    p28 = _init_shapes(CNN(features=(4, 4)), (1, 28, 28, 1))
    assert p28["Dense_0"]["kernel"].shape == (7 * 7 * 4, 10)
    with pytest.raises(ValueError, match="flatten=False"):
        _init_shapes(model, (1, 64))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: make_model("mlp", depth=2, width=0, num_classes=10),
            "width must be an integer >= 1, got 0",
        ),
        (lambda: make_model("mlp", depth=-1, width=8, num_classes=10), "depth must be"),
        (
            lambda: make_model("cnn", depth=0, width=8, num_classes=10),
            "depth must be an integer >= 1",
        ),
        (lambda: make_model("rnn", depth=1, width=8, num_classes=10), "kind must be one of"),
        (lambda: make_model("mlp", depth=1, width=8, num_classes=0), "num_classes"),
        (lambda: make_model("mlp", depth=1, width=8, num_classes=3, dropout=1.0), "dropout"),
        (lambda: MLP(features=(4, 0), num_classes=3), r"features\[1\]"),
    ],
)
def test_model_validation(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# ----------------------------------------------------------------------------------------------
# The randomisation test of Zhang et al. (2017) on digits


@pytest.fixture(scope="module")
def fitted():
    true = load("digits", seed=0)
    rand = load("digits", seed=0, corruption="random_labels")
    return {
        "true": (true, train(WIDE, true, **FIT)),
        "random": (rand, train(WIDE, rand, **FIT)),
    }


@pytest.mark.parametrize("which", ["true", "random"])
def test_fits_true_and_random_labels(fitted, which):
    ds, res = fitted[which]
    assert res.reached and res.epochs < FIT["max_epochs"]
    # Recomputed from the returned parameters, not read from the history.
    pred = np.argmax(np.asarray(res.apply_fn(res.params, ds.X_train)), axis=1)
    assert np.array_equal(pred, ds.y_train)
    assert res.train_acc == 1.0
    assert res.history["epoch"] == list(range(1, res.epochs + 1))
    assert all(len(v) == res.epochs for v in res.history.values())
    test_acc = np.mean(np.argmax(np.asarray(res.apply_fn(res.params, ds.X_test)), 1) == ds.y_test)
    assert test_acc == pytest.approx(res.test_acc, abs=1e-12)
    if which == "true":
        assert test_acc > 0.9
    else:
        # Chance is 1/10: within 4 binomial standard errors over the 360 test examples.
        se = np.sqrt(0.1 * 0.9 / ds.n_test)
        assert abs(test_acc - 0.1) <= 4 * se


def test_random_labels_take_longer(fitted):
    # Krueger et al. (2017) / Arpit et al. (2017): real data are fitted faster than noise.
    assert fitted["random"][1].epochs > 2 * fitted["true"][1].epochs


def test_result_structure(fitted):
    ds, res = fitted["true"]
    model = res.model
    ref = _init_shapes(model, (1, 64))
    assert jax.tree.structure(res.params) == jax.tree.structure(ref)
    assert jax.tree.structure(res.init_params) == jax.tree.structure(ref)
    assert list(res.params) == ["Dense_0", "Dense_1"]
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(res.init_params), strict=True):
        assert a.dtype == b.dtype == jnp.float32 and a.shape == b.shape
        assert not np.array_equal(a, b)
    # apply_fn is the model's forward pass, jitted, and does not recompile for the same shapes.
    X = ds.X_test[:17]
    np.testing.assert_array_equal(
        res.apply_fn(res.params, X), model.apply({"params": res.params}, X, train=False)
    )
    before = res.apply_fn._cache_size()
    res.apply_fn(res.init_params, X + 1)
    assert res.apply_fn._cache_size() == before
    assert res.config["optimizer"] == "adam" and res.config["n_train"] == 1437


def test_stop_on_loss():
    # The settings of the randomisation test (compiled once), stopping at cross-entropy 0.01.
    ds = load("digits", seed=0)
    res = train(WIDE, ds, **{**FIT, "stop": "loss"})
    assert res.reached
    losses = res.history["train_loss"]
    assert losses[-1] <= 0.01 < min(losses[:-1])
    ce = float(_ce64(res.model, _to64(res.params), ds.X_train, ds.y_train))
    assert ce == pytest.approx(losses[-1], rel=1e-4)


# ----------------------------------------------------------------------------------------------
# Minibatches and the update rule against float64 references


def test_partial_last_batch_is_mean_over_real_examples():
    # n = 3, batch 2: one full minibatch and one of a single example. Whatever permutation the
    # epoch drew, the result must be two SGD steps on some ordering of the examples, the second
    # on the mean loss of one example only (not diluted by padding).
    ds = _tiny_dataset(n=3)
    lr = 0.5
    spec = {"kind": "mlp", "depth": 1, "width": 4}
    res = train(spec, ds, optimizer="sgd", lr=lr, batch_size=2, max_epochs=1, stop=None)
    model = res.model
    grad = jax.jit(jax.grad(lambda p, X, y: _ce64(model, p, X, y)))

    def sgd(p, X, y):
        return jax.tree.map(lambda w, g: w - lr * g, p, grad(p, X, y))

    got = _to64(res.params)
    errors = []
    for perm in ([0, 1, 2], [0, 2, 1], [1, 2, 0]):  # which example is alone in batch 2
        p = _to64(res.init_params)
        p = sgd(p, ds.X_train[perm[:2]], ds.y_train[perm[:2]])
        p = sgd(p, ds.X_train[perm[2:]], ds.y_train[perm[2:]])
        errors.append(
            max(
                float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(got), strict=True)
            )
        )
    assert min(errors) < 1e-5
    assert max(errors) > 1e-3  # the orderings are distinguishable


def test_full_batch_sgd_with_weight_decay_is_one_gradient_step():
    ds = _tiny_dataset(n=6, seed=1)
    lr, wd = 0.3, 0.1
    res = train(
        {"kind": "mlp", "depth": 2, "width": 5},
        ds,
        optimizer="sgd",
        lr=lr,
        weight_decay=wd,
        batch_size=100,  # capped at n: one full batch
        max_epochs=1,
        stop=None,
    )
    p0 = _to64(res.init_params)
    g = jax.jit(jax.grad(lambda p: _ce64(res.model, p, ds.X_train, ds.y_train)))(p0)
    # Coupled L2: w <- w - lr (grad + wd w), biases included.
    ref = jax.tree.map(lambda w, gw: w - lr * (gw + wd * w), p0, g)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(res.params), strict=True):
        np.testing.assert_allclose(np.asarray(b, np.float64), a, rtol=0, atol=1e-5)
    assert res.config["batch_size"] == 6


# ----------------------------------------------------------------------------------------------
# Checkpoints and resume


RESUME = dict(
    optimizer="momentum", lr=0.05, dropout=0.1, batch_size=48, max_epochs=6, stop=None, seed=3
)
# Eleven Dense layers: jit returns dicts with sorted keys ('Dense_10' before 'Dense_2'); train
# must hand back linen's creation order all the same.
RESUME_SPEC = {"kind": "mlp", "depth": 10, "width": 16}
LINEN_ORDER = [f"Dense_{i}" for i in range(11)]


@pytest.fixture(scope="module")
def resume_data():
    ds = load("digits", n=200, seed=1)
    return ds, train(RESUME_SPEC, ds, **RESUME)


class _Interrupt(Exception):
    pass


def test_resume_after_interrupt_is_bitwise_identical(resume_data, tmp_path):
    ds, full = resume_data

    def interrupt_at_4(info):
        if info["epoch"] == 4:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(
            RESUME_SPEC,
            ds,
            **RESUME,
            checkpoint_dir=tmp_path,
            checkpoint_every=3,
            progress=interrupt_at_4,
        )
    seen = []
    resumed = train(
        RESUME_SPEC, ds, **RESUME, checkpoint_dir=tmp_path, checkpoint_every=3, progress=seen.append
    )
    assert resumed.config["resumed_from"] == 3  # the epoch-4 state was never written
    assert [s["epoch"] for s in seen] == [4, 5, 6]
    assert _equal_trees(resumed.params, full.params)
    assert _equal_trees(resumed.init_params, full.init_params)
    assert resumed.history == full.history and resumed.epochs == 6
    assert list(full.params) == list(full.init_params) == LINEN_ORDER
    assert list(resumed.params) == list(resumed.init_params) == LINEN_ORDER
    assert list(resumed.params["Dense_10"]) == ["kernel", "bias"]
    assert os.listdir(tmp_path) == ["checkpoint.msgpack"]  # no temporary files left


def test_resume_with_larger_budget_and_finished_run(resume_data, tmp_path):
    ds, full = resume_data
    first = train(RESUME_SPEC, ds, **{**RESUME, "max_epochs": 2}, checkpoint_dir=tmp_path)
    assert first.epochs == 2 and not first.reached
    resumed = train(RESUME_SPEC, ds, **RESUME, checkpoint_dir=tmp_path)
    assert _equal_trees(resumed.params, full.params)
    # Asking again returns the finished run without training further.
    seen = []
    again = train(RESUME_SPEC, ds, **RESUME, checkpoint_dir=tmp_path, progress=seen.append)
    assert seen == [] and again.epochs == 6 and _equal_trees(again.params, full.params)
    with pytest.raises(ValueError, match="beyond max_epochs=4"):
        train(RESUME_SPEC, ds, **{**RESUME, "max_epochs": 4}, checkpoint_dir=tmp_path)


SMALL = dict(optimizer="adam", lr=1e-2, batch_size=16, max_epochs=2, stop=None)
SMALL_SPEC = {"kind": "mlp", "depth": 1, "width": 8}


@pytest.fixture
def checkpointed(tmp_path):
    ds = load("digits", n=40, seed=0)
    train(SMALL_SPEC, ds, **SMALL, checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.msgpack"
    return ds, path, path.read_bytes()


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: b[: len(b) // 2], "corrupt"),
        (lambda b: b[:10], "not a genbounds checkpoint or is corrupt"),
        (lambda b: b"\x00garbage" * 50, "not a genbounds checkpoint"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum does not match"),
        (lambda b: MAGIC + hashlib.sha256(b"junk").digest() + b"junk", "cannot decode"),
    ],
)
def test_corrupt_checkpoint_raises(checkpointed, damage, match):
    ds, path, good = checkpointed
    bad = damage(good)
    path.write_bytes(bad)
    with pytest.raises(CheckpointError, match=match):
        train(SMALL_SPEC, ds, **SMALL, checkpoint_dir=path.parent)
    assert path.read_bytes() == bad  # never silently overwritten


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"lr": 2e-2}, "lr: checkpoint 0.01, now 0.02"),
        ({"spec": {"kind": "mlp", "depth": 1, "width": 9}}, "model"),
        ({"data_seed": 1}, "data_sha256"),
        ({"seed": 5}, "seed"),
        ({"optimizer": "sgd"}, "optimizer"),
    ],
)
def test_mismatched_checkpoint_raises(checkpointed, change, match):
    ds, path, good = checkpointed
    change = dict(change)
    spec = change.pop("spec", SMALL_SPEC)
    if "data_seed" in change:
        ds = load("digits", n=40, seed=change.pop("data_seed"))
    with pytest.raises(CheckpointError, match=match):
        train(spec, ds, **{**SMALL, **change}, checkpoint_dir=path.parent)
    assert path.read_bytes() == good
    assert issubclass(CheckpointError, ValueError)


# ----------------------------------------------------------------------------------------------
# Other models and options


def test_cnn_trains_on_images():
    ds = load("digits", flatten=False, n=150)
    res = train(
        {"kind": "cnn", "depth": 2, "width": 8}, ds, lr=1e-2, batch_size=32, max_epochs=6, stop=None
    )
    assert list(res.params) == ["Conv_0", "Conv_1", "Dense_0"]
    loss = res.history["train_loss"]
    assert loss[-1] < 0.5 * loss[0] and res.test_acc > 0.5
    with pytest.raises(ValueError, match="flatten=False"):
        train({"kind": "cnn", "depth": 1, "width": 4}, load("digits", n=40), max_epochs=1)


def test_dropout_override_and_custom_module():
    ds = load("digits", n=60)
    res = train({"kind": "mlp", "depth": 1, "width": 16}, ds, dropout=0.3, max_epochs=1, stop=None)
    assert res.model.dropout == 0.3

    class Linear(nn.Module):  # no `train` argument, no dropout attribute
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(x)

    lin = train(Linear(), ds, max_epochs=1, stop=None)
    assert list(lin.params) == ["Dense_0"] and lin.epochs == 1
    with pytest.raises(ValueError, match="no 'dropout' attribute"):
        train(Linear(), ds, dropout=0.5, max_epochs=1)


def test_adam_step_matches_optax_reference():
    # One full-batch Adam step, recomputed with optax directly in float64.
    ds = _tiny_dataset(n=5, seed=2)
    res = train(
        {"kind": "mlp", "depth": 1, "width": 3}, ds, lr=0.01, batch_size=5, max_epochs=1, stop=None
    )
    p0 = _to64(res.init_params)
    tx = optax.adam(0.01)
    g = jax.jit(jax.grad(lambda p: _ce64(res.model, p, ds.X_train, ds.y_train)))(p0)
    upd, _ = promoting(tx.update)(g, tx.init(p0), p0)  # optax's Adam: a float ** int32
    ref = optax.apply_updates(p0, upd)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(res.params), strict=True):
        np.testing.assert_allclose(np.asarray(b, np.float64), a, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"optimizer": "rmsprop"}, ValueError, "optimizer must be one of"),
        ({"lr": 0.0}, ValueError, "lr must be a finite number > 0"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"max_epochs": 0}, ValueError, "max_epochs"),
        ({"stop": "accuracy"}, ValueError, "stop must be one of"),
        ({"dropout": 1.5}, ValueError, "dropout must lie in"),
        (
            {"spec": {"kind": "mlp", "depth": 1, "width": 0}},
            ValueError,
            "width must be an integer >= 1",
        ),
        (
            {"spec": {"kind": "mlp", "depth": 1, "width": 4, "num_classes": 3}},
            ValueError,
            "num_classes=3",
        ),
        ({"spec": "mlp"}, TypeError, "model_or_spec must be"),
        ({"spec": MLP(features=(4,), num_classes=7)}, ValueError, r"logits of shape \(batch, 10\)"),
        ({"progress": 3}, TypeError, "progress must be callable"),
    ],
)
def test_train_bad_input(kwargs, exc, match):
    kwargs = dict(kwargs)
    spec = kwargs.pop("spec", {"kind": "mlp", "depth": 1, "width": 4})
    with pytest.raises(exc, match=match):
        train(spec, load("digits", n=20), max_epochs=kwargs.pop("max_epochs", 1), **kwargs)
