"""perez_ortiz with its DEFAULT settings on a digits MLP and a digits CNN written here (not
tuned for it): a useful certificate (<= 0.15), never below the measured test errors it bounds.
The fast counterpart (a smaller MLP, fewer networks) is in tests/test_majority_vote.py."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from genbounds.data import load
from genbounds.pacbayes import perez_ortiz


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(100)(x))
        x = nn.relu(nn.Dense(100)(x))
        return nn.Dense(10)(x)


class _CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], 8, 8, 1)
        x = nn.max_pool(nn.relu(nn.Conv(16, (3, 3))(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3))(x)), (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


@pytest.mark.slow
@pytest.mark.parametrize("model", [_MLP(), _CNN()], ids=["mlp", "cnn"])
def test_defaults_certify_digits_nets(model):
    ds = load("digits", seed=0)
    X, y = np.asarray(ds.X_train, np.float32), np.asarray(ds.y_train)
    Xt, yt = np.asarray(ds.X_test, np.float32), np.asarray(ds.y_test)
    p0 = model.init(jax.random.key(0), X[:1])
    b, _ = perez_ortiz(p0, X=X, y=y, apply_fn=model.apply, key=jax.random.key(1),
                       X_test=Xt, y_test=yt)
    t = b.terms
    assert b.value <= 0.15
    assert b.value >= t["stochastic_test_error"]
    assert t["majority_vote_certificate"] >= t["majority_vote_test_error"]
    assert b.n == t["n_bound"] == len(X) - t["n_prior"]
    assert not any("WEAK PRIOR" in n for n in b.notes)
