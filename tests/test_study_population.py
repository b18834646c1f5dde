"""`genbounds study` trains the networks of one shape as one population
(`genbounds.train.train_population`): each member is the network `train` gives alone, to float
rounding; members stop one by one (frozen at the epoch they reach the loss target); a population
checkpoint resumes to the uninterrupted result; the grid is grouped by shape."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from genbounds.data import load
from genbounds.internal import STUDY_DEFAULT_GRID, STUDY_FIXED, study_grid_configs
from genbounds.train import CheckpointError, train, train_population

SPEC = {"kind": "mlp", "depth": 1, "width": 8}


@pytest.fixture(scope="module")
def digits():
    return load("digits", n=100, seed=0)


def _assert_params_close(a, b, rtol=1e-5, atol=1e-6):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [k for k, _ in la] == [k for k, _ in lb]
    for (k, x), (_, y) in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol,
                                   err_msg=jax.tree_util.keystr(k))


# The slow member has dropout and weight decay, the fast one neither: every per-member input.
MEMBERS = [{"lr": 1e-3, "dropout": 0.25, "weight_decay": 1e-3}, {"lr": 3e-2}]
KW = {"batch_size": 32, "loss_target": 1.0, "seed": 0}


@pytest.fixture(scope="module")
def population(digits):
    return train_population(SPEC, digits, MEMBERS, max_epochs=12, **KW)


def test_each_member_is_the_network_trained_alone(digits, population):
    for m, got in zip(MEMBERS, population, strict=True):
        alone = train(SPEC, digits, optimizer="adam", max_epochs=12, stop="loss", **KW, **m)
        assert got.epochs == alone.epochs and got.reached == alone.reached
        _assert_params_close(got.params, alone.params)  # float32 parameters
        _assert_params_close(got.init_params, alone.init_params, rtol=0, atol=0)
        np.testing.assert_allclose(got.history["train_loss"], alone.history["train_loss"],
                                   rtol=1e-5)
        assert got.history["epoch"] == alone.history["epoch"] == list(range(1, got.epochs + 1))
        assert got.config["lr"] == m["lr"] and got.config["population"] == 2
        assert got.model.dropout == m.get("dropout", 0.0)
        X = np.asarray(digits.X_test, np.float32)  # the evaluation the record is made of
        np.testing.assert_array_equal(np.argmax(got.apply_fn(got.params, X), -1),
                                      np.argmax(alone.apply_fn(alone.params, X), -1))


def test_members_stop_one_by_one_and_a_checkpoint_resumes(digits, population, tmp_path):
    slow, fast = population
    # the larger learning rate reaches the target first; the other runs to the budget
    assert fast.reached and not slow.reached and fast.epochs < slow.epochs == 12
    assert fast.history["train_loss"][-1] <= 1.0 < min(fast.history["train_loss"][:-1])
    assert len(fast.history["train_loss"]) == fast.epochs
    # frozen at its epoch: the population stopped right there gives it bitwise the same
    # parameters, while the slow member went on changing
    slow_e, fast_e = train_population(SPEC, digits, MEMBERS, max_epochs=fast.epochs, **KW)
    assert fast_e.epochs == fast.epochs and slow_e.epochs == fast.epochs
    for a, b in zip(jax.tree.leaves(fast.params), jax.tree.leaves(fast_e.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(slow.params), jax.tree.leaves(slow_e.params),
                               strict=True))
    # a checkpointed run, stopped after 5 epochs and resumed, ends where the uninterrupted one
    # does; a checkpoint of other members is refused
    d = tmp_path / "pop"
    train_population(SPEC, digits, MEMBERS, max_epochs=5, checkpoint_dir=d, checkpoint_every=2,
                     **KW)
    slow_r, fast_r = train_population(SPEC, digits, MEMBERS, max_epochs=12, checkpoint_dir=d,
                                      **KW)
    assert (slow_r.epochs, fast_r.epochs) == (12, fast.epochs)
    assert slow_r.config["resumed_from"] == 5
    assert slow_r.history["train_loss"] == slow.history["train_loss"]
    _assert_params_close(slow_r.params, slow.params, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="different configuration"):
        train_population(SPEC, digits, [MEMBERS[0], {"lr": 2e-2}], max_epochs=12,
                         checkpoint_dir=d, **KW)


def test_bad_members_are_refused(digits):
    with pytest.raises(ValueError, match=r"members\[1\] has unknown keys \['batch_size'\]"):
        train_population(SPEC, digits, [{"lr": 1e-3}, {"batch_size": 8}])
    with pytest.raises(ValueError, match=r"members\[0\]\['lr'\]"):
        train_population(SPEC, digits, [{"lr": -1.0}])
    with pytest.raises(TypeError, match="members must be a non-empty list"):
        train_population(SPEC, digits, [])

    class TwoRates(nn.Module):  # a Dropout layer whose rate is not the model's attribute
        dropout: float = 0.0

        @nn.compact
        def __call__(self, x, train=False):
            x = nn.Dropout(0.5, deterministic=not train)(nn.Dense(4)(x))
            return nn.Dense(10)(nn.Dropout(self.dropout, deterministic=not train)(x))

    with pytest.raises(ValueError, match="a Dropout layer of rate 0.5, not its 'dropout'"):
        train_population(TwoRates(), digits, [{"dropout": 0.1}], max_epochs=1)


def test_the_default_grid_trains_as_eight_populations_of_four():
    from genbounds.experiments._study import SHAPE_AXES, shape_groups

    cfgs = study_grid_configs(STUDY_DEFAULT_GRID, STUDY_FIXED)
    groups = shape_groups(cfgs)
    assert sorted(len(g) for g in groups) == [4] * 8
    assert sorted(i for g in groups for i in g) == list(range(len(cfgs)))
    for g in groups:  # one shape per group; lr and dropout vary inside it
        assert len({tuple(cfgs[i][k] for k in SHAPE_AXES) for i in g}) == 1
        assert len({(cfgs[i]["lr"], cfgs[i]["dropout"]) for i in g}) == 4


PROBE = """
import json, jax, numpy as np
from genbounds.data import load
from genbounds.train import train, train_population
assert len(jax.devices()) == 4, jax.devices()
ds = load("digits", n=100, seed=0)
spec = {"kind": "mlp", "depth": 1, "width": 8}
members = [{"lr": 1e-3, "dropout": 0.25, "weight_decay": 1e-3}, {"lr": 3e-2}, {"lr": 1e-2}]
kw = {"batch_size": 32, "max_epochs": 12, "loss_target": 1.0, "seed": 0}
out = []
for m, r in zip(members, train_population(spec, ds, members, **kw)):
    s = train(spec, ds, stop="loss", **kw, **m)
    # how far past numpy's allclose(rtol=1e-5) each parameter is (<= atol = 1e-6 passes)
    err = max(float(np.max(np.abs(a - b) - 1e-5 * np.abs(b)))
              for a, b in zip(jax.tree.leaves(r.params), jax.tree.leaves(s.params)))
    out.append([r.epochs, s.epochs, err])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_population_sharded_over_four_devices_is_the_networks_trained_alone():
    # 3 members over 4 CPU devices: padded to 4 rows, one member per device
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                       timeout=600, check=True)
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(a, b) for a, b, _ in rows] == [(12, 12), (8, 8), (12, 12)]
    assert max(e for _, _, e in rows) <= 1e-6
