"""FGSM and PGD: exact on linear classifiers, invariants of the ball and the box, errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import promoting

import genbounds
from genbounds.internal import attack_kernel as _attack


def _linear(seed=0, n=200, d=6, k=3):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, k))
    b = rng.normal(size=k) * 0.1
    X = rng.normal(size=(n, d))
    y = np.argmax(X @ W + b, axis=1)
    flip = rng.random(n) < 0.2  # some misclassified examples too
    y[flip] = (y[flip] + 1) % k
    return {"W": W, "b": b}, X, y


def _apply(p, x):
    return x @ p["W"] + p["b"]


def _exact_distance(p, X, y, norm):
    """The exact distance to the decision region of another class of a linear classifier, in
    the attack's norm, for two classes; for k classes: min over j of the distance to the
    half-space f_j >= f_y (the closest wrong region), by Hoelder's dual norm."""
    logits = _apply(p, X)
    out = np.empty(len(X))
    dual = 2 if norm == "l2" else 1
    for i, (z, t) in enumerate(zip(logits, y, strict=True)):
        best = np.inf
        for j in range(len(z)):
            if j != t:
                w = p["W"][:, t] - p["W"][:, j]
                best = min(best, (z[t] - z[j]) / np.linalg.norm(w, dual))
        out[i] = best
    return out


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("k", [2, 3])
def test_pgd_on_a_linear_classifier(norm, k):
    # Two classes: the problem is linear and PGD exact: an example is robust at eps iff its
    # distance to the wrong half-space exceeds eps (away from the boundary). More classes: the
    # margin loss follows the currently largest other logit, which need not be the closest
    # region, so PGD may miss; it never breaks an example that is truly robust, and it finds
    # almost all the others.
    p, X, y = _linear(k=k)
    dist = _exact_distance(p, X, y, norm)
    for eps in (0.0, 0.3, 0.8):
        r = genbounds.pgd(p, X=X, y=y, apply_fn=_apply, eps=eps, norm=norm, steps=60, restarts=2)
        clear = np.abs(dist - eps) > 0.05 * max(eps, 0.1)
        assert clear.sum() > 100
        truly = (dist > eps)[clear]
        assert np.all(r.robust[clear][truly])
        if k == 2:
            np.testing.assert_array_equal(r.robust[clear], truly)
        else:
            assert np.mean(r.robust[clear] == truly) >= 0.97
        # the reported margins are those at the reported points
        m = genbounds.margins(_apply(p, r.x_adv), y)
        np.testing.assert_allclose(r.margins, np.asarray(m), rtol=1e-6, atol=1e-9)


def test_fgsm_is_exact_for_two_linear_classes_in_linf():
    # Two classes: the cross-entropy gradient is a positive multiple of w_other - w_true, so
    # one signed step of length eps is the optimal l_inf perturbation.
    p, X, y = _linear(seed=3, k=2)
    dist = _exact_distance(p, X, y, "linf")
    for eps in (0.1, 0.3):
        r = genbounds.fgsm(p, X=X, y=y, apply_fn=_apply, eps=eps, norm="linf")
        clear = np.abs(dist - eps) > 1e-6
        np.testing.assert_array_equal(r.robust[clear], (dist > eps)[clear])


class _MLP(nn.Module):
    @nn.compact
    @promoting  # float32 parameters on float64 data
    def __call__(self, x):
        return nn.Dense(4)(nn.relu(nn.Dense(16)(x)))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_adversarial_points_stay_in_ball_and_box(norm):
    model = _MLP()
    rng = np.random.default_rng(1)
    X = rng.uniform(0.0, 1.0, size=(64, 5))
    params = model.init(jax.random.key(0), jnp.asarray(X))
    y = rng.integers(0, 4, size=64)
    eps = 0.4
    r = genbounds.pgd(params, X=X, y=y, apply_fn=model.apply, eps=eps, norm=norm, steps=10, restarts=2,
                      box=(0.0, 1.0), batch_size=24)  # batches 24, 24, 16 (padded)
    d = r.x_adv - X
    size = np.linalg.norm(d, axis=1) if norm == "l2" else np.max(np.abs(d), axis=1)
    assert np.all(size <= eps * (1 + 1e-9) + 1e-12)
    assert r.x_adv.min() >= 0.0 and r.x_adv.max() <= 1.0
    clean = np.asarray(genbounds.margins(model.apply(params, X), y)) > 0
    assert np.all(~r.robust[~clean])  # misclassified examples are never robust
    assert np.all(r.margins <= np.asarray(genbounds.margins(model.apply(params, X), y)) + 1e-12)
    acc = genbounds.robust_accuracy(params, X=X, y=y, apply_fn=model.apply, eps=[0.0, eps], norm=norm,
                                    steps=10, box=(0.0, 1.0))
    assert acc[0] == pytest.approx(clean.mean())
    assert acc[1] <= acc[0]


def test_second_call_does_not_recompile():
    p, X, y = _linear(n=50)
    genbounds.pgd(p, X=X, y=y, apply_fn=_apply, eps=0.3, norm="l2", steps=5)
    size = _attack._cache_size()
    genbounds.pgd(p, X=X, y=y, apply_fn=_apply, eps=0.7, norm="l2", steps=5, key=jax.random.key(5))
    assert _attack._cache_size() == size


def test_errors_name_the_argument():
    p, X, y = _linear(n=20)
    with pytest.raises(ValueError, match="norm"):
        genbounds.pgd(p, X=X, y=y, apply_fn=_apply, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="eps"):
        genbounds.pgd(p, X=X, y=y, apply_fn=_apply, eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        genbounds.pgd(p, X=X, y=y, apply_fn=_apply, eps=0.1, steps=0)
    with pytest.raises(ValueError, match="box"):
        genbounds.pgd(p, X=X, y=y, apply_fn=_apply, eps=0.1, box=(0.0, 1.0))  # X is not in [0, 1]
    with pytest.raises(TypeError, match="apply_fn"):
        genbounds.pgd(p, X=X, y=y, apply_fn=None, eps=0.1)
    with pytest.raises(ValueError, match="same number"):
        genbounds.fgsm(p, X=X, y=y[:5], apply_fn=_apply, eps=0.1)
    with pytest.raises(ValueError, match="attack"):
        genbounds.robust_accuracy(p, X=X, y=y, apply_fn=_apply, eps=[0.1], attack="cw")
