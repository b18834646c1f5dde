"""What perez_ortiz runs as one compiled program instead of eager operations: the jitted
flatten/unravel against `ravel_pytree`, the 0-1 counter against a float64 numpy count, the ERM
epoch's held-out statistics against the network evaluated separately, and the number of
programs one call compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from genbounds.pacbayes import (
    Certificate,
    PosteriorTraining,
    PriorTraining,
    _montecarlo,
    _pbb_training,
    perez_ortiz,
)
from genbounds.pacbayes._gaussian import Unravel, flat64, flatten
from genbounds.pacbayes._posterior import run_posterior_loop

rng = np.random.default_rng(0)
X = rng.normal(size=(120, 3)).astype(np.float32)
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int32)
W = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.zeros(2, jnp.float32)}


def f(p, X):
    return X @ p["w"] + p["b"]


def test_flatten_and_unravel_match_ravel_pytree():
    tree = {"a": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3), "b": jnp.ones(4, jnp.float32),
            "c": (jnp.full((1, 2), 7.0, jnp.float32),)}
    ref, unravel_ref = ravel_pytree(tree)
    flat = flatten(tree, jnp.float32)
    np.testing.assert_array_equal(np.asarray(flat), np.asarray(ref))
    np.testing.assert_array_equal(flat64(tree), np.asarray(ref, np.float64))
    un = Unravel(tree, jnp.float32)
    v = jnp.asarray(rng.normal(size=flat.shape), jnp.float32)
    eager = un(v)  # the jitted path
    traced = jax.jit(lambda v: un(v))(v)  # the traced path inside another program
    for a, b, c in zip(jax.tree.leaves(eager), jax.tree.leaves(traced),
                       jax.tree.leaves(unravel_ref(v)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
        np.testing.assert_array_equal(np.asarray(b), np.asarray(c))


def test_zero_one_errors_and_subset_error_against_numpy():
    logits = np.asarray(X, np.float64) @ np.asarray(W["w"], np.float64)
    wrong = np.argmax(logits, 1) != Y
    err, mean, nan, inf = _pbb_training.zero_one_errors(f, W, jnp.asarray(X), jnp.asarray(Y))
    np.testing.assert_array_equal(np.asarray(err) > 0, wrong)
    assert float(mean) == pytest.approx(wrong.mean(), abs=1e-7)
    assert int(nan) == 0 and int(inf) == 0
    for size in (5, 37, 61, 119):
        idx = np.sort(np.random.default_rng(size).choice(len(X), size, replace=False))
        sub = _pbb_training.subset_error(err, idx)
        assert sub == pytest.approx(wrong[idx].mean(), abs=1e-7)
        assert sub == _pbb_training.net_error(f, W, X[idx], Y[idx])  # bit for bit
    bad = {"w": W["w"].at[0, 0].set(jnp.inf), "b": W["b"]}
    _, _, nan, inf = _pbb_training.zero_one_errors(f, bad, jnp.asarray(X), jnp.asarray(Y))
    with pytest.raises(ValueError, match=r"apply_fn\(params, X\) is not finite"):
        _pbb_training.check_finite_counts(nan, inf, "apply_fn(params, X)")


def test_erm_epoch_heldout_statistics_are_those_of_the_new_weights():
    sgd, un = (0.1, 0.9), Unravel(W, jnp.float32)
    state = _pbb_training._erm_start(sgd, W)
    Xt, Yt, Xh, Yh = (jnp.asarray(a) for a in (X[:90], Y[:90], X[90:], Y[90:]))
    key = jax.random.key(3)
    (w, opt), loss, err, ce = _pbb_training._erm_epoch(f, un, sgd, 16, True, state, Xt, Yt, Xh,
                                                       Yh, key, 4)
    # float64 numpy reference on the returned weights
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), un(w))
    z = np.asarray(X[90:], np.float64) @ p["w"] + p["b"]
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    assert float(err) == pytest.approx(np.mean(np.argmax(z, 1) != Y[90:]), abs=1e-6)
    assert float(ce) == pytest.approx(-logp[np.arange(30), Y[90:]].mean(), rel=1e-5)
    # the epoch's key is the key folded with the epoch number, as an eager fold_in gives
    (w2, _), loss2, *_ = _pbb_training._erm_epoch(f, un, sgd, 16, False, state, Xt, Yt, Xh, Yh,
                                                  key, 4)
    np.testing.assert_array_equal(np.asarray(w2), np.asarray(w))
    assert float(loss2) == float(loss)


def test_perez_ortiz_compiles_each_program_once():
    # shapes used nowhere else in the tests: every program of the call compiles here, and
    # the posterior loop and the Monte-Carlo counter exactly once each
    Xs = np.concatenate([X, X[:17]]).astype(np.float32)
    Ys = np.concatenate([Y, Y[:17]])
    loops, counters = run_posterior_loop._cache_size(), _montecarlo.mc_errors._cache_size()
    jax.random.fold_in(jax.random.key(0), 0)  # the key's own programs, compiled beforehand
    compiles = []

    def listen(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        b, _ = perez_ortiz(W, X=Xs, y=Ys, apply_fn=f, key=jax.random.key(0),
                           prior=PriorTraining(epochs=1), posterior=PosteriorTraining(epochs=1),
                           certificate=Certificate(num_mc_samples=37))
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert 0.0 < b.value < 1.0
    assert run_posterior_loop._cache_size() == loops + 1
    assert _montecarlo.mc_errors._cache_size() == counters + 1
    # the 0-1 counter, two key splits, the ERM start and epoch, the unravel, the posterior's
    # start, loop and finish, the flatten, the counter and the kl inversion: at most 12 new
    # programs (fewer where another test compiled one); eager operations would add dozens
    assert len(compiles) <= 12
