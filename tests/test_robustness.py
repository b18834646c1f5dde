"""Certified radii: closed forms, merged maps, soundness against PGD; Lipschitz-margin training."""

from __future__ import annotations

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genbounds
from genbounds import NotBoundable
from genbounds.data import load
from genbounds.internal import lmt_power_start as _power_start
from genbounds.internal import lmt_power_step as _power_step
from genbounds.train import train


def _pair_radius(logits, y, W, dual):
    """numpy float64 reference: min_{j != y} (z_y - z_j) / ||w_y - w_j||_dual, 0 if wrong."""
    out = []
    for z, t in zip(logits, y, strict=True):
        r = min((z[t] - z[j]) / np.linalg.norm(W[:, t] - W[:, j], dual)
                for j in range(len(z)) if j != t)
        out.append(max(r, 0.0))
    return np.asarray(out)


def _dense_chain(depth):
    """apply_fn of a ReLU chain of dense layers Dense_0 .. Dense_{depth-1}."""
    def apply(p, x):
        for i in range(depth):
            lay = p[f"Dense_{i}"]
            x = x @ lay["kernel"] + (lay["bias"] if "bias" in lay else 0.0)
            if i < depth - 1:
                x = jax.nn.relu(x)
        return x
    return apply


def test_linear_classifier_gets_its_exact_distance():
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(5, 4)), rng.normal(size=4)
    X = rng.normal(size=(40, 5))
    y = rng.integers(0, 4, size=40)
    params = {"Dense_0": {"kernel": W, "bias": b}}
    logits = X @ W + b
    f = _dense_chain(1)
    r2 = genbounds.certified_radius(params, X=X, y=y, apply_fn=f)
    np.testing.assert_allclose(r2.radius, _pair_radius(logits, y, W, 2), rtol=1e-10)
    rinf = genbounds.certified_radius(params, X=X, y=y, norm="linf", apply_fn=f)
    np.testing.assert_allclose(rinf.radius, _pair_radius(logits, y, W, 1), rtol=1e-10)
    # the theorem's radius margin / (sqrt(2) ||W||) is never larger
    m = np.asarray(genbounds.margins(logits, y))
    prod = genbounds.certified_radius(params, X=X, y=y, method="product", apply_fn=f)
    np.testing.assert_allclose(prod.radius,
                               np.maximum(m, 0) / (math.sqrt(2) * np.linalg.norm(W, 2)),
                               rtol=1e-10)
    assert np.all(prod.radius <= r2.radius + 1e-12)
    np.testing.assert_allclose(genbounds.certified_radius(params, X=X, y=y, norm="linf",
                                                          method="product", apply_fn=f).radius,
                               prod.radius / math.sqrt(5), rtol=1e-10)


def test_product_radius_of_a_relu_chain():
    rng = np.random.default_rng(1)
    Ws = [rng.normal(size=(6, 8)), rng.normal(size=(8, 8)), rng.normal(size=(8, 3))]
    params = {f"Dense_{i}": {"kernel": w} for i, w in enumerate(Ws)}
    X = rng.normal(size=(30, 6))
    y = rng.integers(0, 3, size=30)
    h = X
    for w in Ws[:-1]:
        h = np.maximum(h @ w, 0)
    logits = h @ Ws[-1]
    m = np.asarray(genbounds.margins(logits, y))
    L = np.prod([np.linalg.norm(w, 2) for w in Ws])
    f = _dense_chain(3)
    r = genbounds.certified_radius(params, X=X, y=y, method="product", apply_fn=f)
    assert r.lipschitz == pytest.approx(L, rel=1e-10)
    np.testing.assert_allclose(r.radius, np.maximum(m, 0) / (math.sqrt(2) * L), rtol=1e-9)
    # pairwise last layer: min_j gap_j / (||w_t - w_j|| L_h), L_h the bound of the first two
    # layers: the smaller of the product of norms and the block bound around the ReLU,
    # ||W0 W1||/2 + ||W0|| ||W1||/2 (slopes in [1/2 - 1/2, 1/2 + 1/2])
    t = genbounds.certified_radius(params, X=X, y=y, apply_fn=f)
    n0, n1 = np.linalg.norm(Ws[0], 2), np.linalg.norm(Ws[1], 2)
    lh = min(n0 * n1, 0.5 * np.linalg.norm(Ws[0] @ Ws[1], 2) + 0.5 * n0 * n1)
    want = np.maximum(_pair_radius(logits, y, Ws[-1], 2) / lh, r.radius)
    np.testing.assert_allclose(t.radius, want, rtol=1e-9)
    np.testing.assert_array_equal(t.accuracy([0.0, 0.01]),
                                  [np.mean(want > 0), np.mean(want > 0.01)])


def test_merged_linear_maps_use_the_norm_of_the_product():
    rng = np.random.default_rng(2)
    W1, W2, W3 = rng.normal(size=(4, 7)), rng.normal(size=(7, 7)), rng.normal(size=(7, 3))

    def apply(p, x):  # no activation between the first two maps
        return jnp.maximum((x @ p["a"]) @ p["b"], 0.0) @ p["c"]

    params = {"a": W1, "b": W2, "c": W3}
    X = rng.normal(size=(25, 4))
    y = rng.integers(0, 3, size=25)
    r = genbounds.certified_radius(params, X=X, y=y, apply_fn=apply)
    A, n3 = W1 @ W2, np.linalg.norm(W3, 2)
    merged = np.linalg.norm(A, 2) * n3
    # and the block around the ReLU: ||A W3||/2 + ||A|| ||W3||/2 where that is smaller
    block = 0.5 * np.linalg.norm(A @ W3, 2) + 0.5 * np.linalg.norm(A, 2) * n3
    assert r.lipschitz_tight == pytest.approx(min(merged, block), rel=1e-9)
    assert r.lipschitz == pytest.approx(np.prod([np.linalg.norm(w, 2) for w in (W1, W2, W3)]),
                                        rel=1e-9)
    assert r.lipschitz_tight < r.lipschitz


class _ResMLP(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        h = nn.relu(nn.Dense(32)(x))
        h = h + nn.Dense(32)(nn.relu(nn.Dense(32)(h)))
        return nn.Dense(self.num_classes)(h)


@pytest.fixture(scope="module")
def nets():
    flat = load("digits", seed=0, n=300)
    images = load("digits", seed=0, n=300, flatten=False)
    out = {}
    out["mlp"] = (train({"kind": "mlp", "depth": 1, "width": 32}, flat, max_epochs=6, stop=None,
                        batch_size=50, lipschitz_margin=0.3), flat)
    out["cnn"] = (train({"kind": "cnn", "depth": 2, "width": 6}, images, max_epochs=3,
                        stop=None, batch_size=50), images)
    out["resmlp"] = (train(_ResMLP(), flat, max_epochs=3, stop=None, batch_size=50), flat)
    return out


@pytest.mark.parametrize(("name", "norm"), [("mlp", "l2"), ("mlp", "linf"), ("cnn", "l2"),
                                           ("resmlp", "l2"),
                                           pytest.param("cnn", "linf", marks=pytest.mark.slow),
                                           pytest.param("resmlp", "linf",
                                                        marks=pytest.mark.slow)])
def test_certified_never_exceeds_pgd(nets, name, norm):
    res, ds = nets[name]
    X, y = ds.X_test[:100], ds.y_test[:100]
    r = genbounds.certified_radius(res.params, X=X, y=y, apply_fn=res.apply_fn, norm=norm)
    pos = r.radius[r.radius > 0]
    assert pos.size > 0  # a non-trivial certificate
    grid = [0.0, *np.quantile(pos, [0.3, 0.8])]
    for e in grid:
        a = genbounds.pgd(res.params, X=X, y=y, apply_fn=res.apply_fn, eps=float(e), norm=norm, steps=10,
                          box=(0.0, 1.0))
        certified = r.radius > e
        # per example: no certified example is broken, hence the accuracies are ordered
        assert not np.any(certified & ~a.robust)
        assert np.mean(certified) <= a.robust_accuracy
    if name == "resmlp":
        assert genbounds.Network.trace(res.apply_fn, res.params, X[:4]).structure == "residual"


def test_robustness_curve(nets):
    res, ds = nets["mlp"]
    X, y = ds.X_test[:100], ds.y_test[:100]
    curve = genbounds.robustness(res.params, apply_fn=res.apply_fn, X=X, y=y,
                                 eps=[0.0, 0.3, 0.6], steps=10, restarts=1, box=(0.0, 1.0))
    assert curve.violations == 0
    assert curve.clean_accuracy == pytest.approx(curve.pgd_accuracy[0])
    assert np.all(curve.certified_accuracy <= curve.pgd_accuracy)
    assert np.all(curve.pgd_accuracy <= curve.fgsm_accuracy + 0.05)  # PGD is the stronger
    # the CROWN column (float32 intervals with their rounding enclosed): sound, and at radius
    # 0 every correctly classified example certified
    assert curve.propagated_violations == 0
    assert np.all(curve.propagated_accuracy <= curve.pgd_accuracy)
    assert curve.propagated.terms["rounding_enclosed"]
    assert curve.propagated_accuracy[0] == pytest.approx(curve.clean_accuracy)
    # decided on the grid (search="grid"): no per-example radius searched, no median given
    assert curve.settings["propagation_search"] == "grid"
    assert curve.to_dict()["median_propagated_radius"] is None
    json.dumps(curve.to_dict())
    assert "| 0.3 |" in curve.to_markdown()


@pytest.mark.slow
def test_report_entry(nets):
    res, ds = nets["mlp"]
    X, y = ds.X_test[:100], ds.y_test[:100]
    rep = genbounds.report(res.params, X=ds.X_train, y=ds.y_train,
                           apply_fn=res.apply_fn, X_test=X, y_test=y, margin=0.5,
                           robustness={"eps": [0.0, 0.3], "steps": 5, "restarts": 1,
                                       "box": (0.0, 1.0)})
    entry = next(m for m in rep.measures if m.name == "robustness")
    assert entry.terms["violations"] == 0
    r = genbounds.certified_radius(res.params, X=X, y=y, apply_fn=res.apply_fn)
    assert entry.complexity == pytest.approx(np.median(r.radius))


def test_power_iteration_finds_the_layer_norms():
    rng = np.random.default_rng(3)
    params = {"Dense_0": {"kernel": jnp.asarray(rng.normal(size=(6, 9)), jnp.float32),
                          "bias": jnp.zeros(9)},
              "Conv_0": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)}}
    us = _power_start(params)
    for _ in range(200):
        lip, us = _power_step(params, us)
    want = (np.linalg.norm(np.asarray(params["Dense_0"]["kernel"], np.float64), 2)
            * np.linalg.norm(np.asarray(params["Conv_0"]["kernel"], np.float64).reshape(18, 4),
                             2) * 3.0)
    assert float(lip) == pytest.approx(want, rel=1e-4)


@pytest.mark.slow
def test_lipschitz_margin_training_enlarges_certified_radii():
    ds = load("digits", seed=1)
    radii = []
    for c in (0.0, 0.5):
        res = train({"kind": "mlp", "depth": 1, "width": 64}, ds, max_epochs=30, stop=None,
                    batch_size=64, lipschitz_margin=c)
        assert ("lipschitz_margin" in res.config) == (c > 0)
        r = genbounds.certified_radius(res.params, X=ds.X_test, y=ds.y_test, apply_fn=res.apply_fn)
        radii.append(float(r.accuracy([0.5])[0]))
    assert radii[1] > radii[0] + 0.2  # certified accuracy at l2 radius 0.5
    with pytest.raises(ValueError, match="lipschitz_margin"):
        train({"kind": "mlp", "depth": 1, "width": 8}, ds, max_epochs=1, lipschitz_margin=-1)


@pytest.mark.slow
def test_cli_robustness(tmp_path):
    from genbounds.experiments.cli import main

    out = tmp_path / "rob"
    rc = main(["robustness", "--out", str(out), "--quick", "--n", "200", "--width", "32",
               "--max-epochs", "3", "--steps", "5", "--restarts", "1", "--eps", "0,0.5,1"])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    assert data["curve"]["violations"] == 0
    assert data["curve"]["eps"] == [0.0, 0.5, 1.0]
    assert (out / "robustness.png").stat().st_size > 0


def test_errors_name_the_argument():
    params = {"Dense_0": {"kernel": np.eye(2)}}
    X, y = np.eye(2), np.array([0, 1])
    with pytest.raises(ValueError, match="norm"):
        genbounds.certified_radius(params, X=X, y=y, norm="l1")
    with pytest.raises(ValueError, match="method"):
        genbounds.certified_radius(params, X=X, y=y, method="sdp")
    with pytest.raises(ValueError, match="max_entries"):
        genbounds.certified_radius(params, X=X, y=y, max_entries=0)
    with pytest.raises(ValueError, match="eps"):
        genbounds.certified_radius(params, X=X, y=y, apply_fn=_dense_chain(1)).accuracy([-1.0])
    # parameters alone do not show the activations: nothing is certified from them
    with pytest.raises(NotBoundable, match="certified_radius needs the network's function"):
        genbounds.certified_radius(params, X=X, y=y)
    with pytest.raises(NotBoundable, match="lipschitz needs the network's function"):
        genbounds.lipschitz(params)
