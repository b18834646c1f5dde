"""`genbounds.report`: every bound for one net, as a table, records and a plot."""

import json

import numpy as np
import pytest
from helpers import promoting  # the float32 model below is applied to float64 data

import genbounds
from genbounds.data import load
from genbounds.train import train


@pytest.fixture(scope="module")
def trained():
    data = load("digits", n=300, seed=0)
    net = train({"kind": "mlp", "depth": 1, "width": 48}, data, lr=3e-3, batch_size=32,
                max_epochs=300, seed=0)
    assert net.reached
    return data, net


@pytest.fixture(scope="module")
def rep(trained):
    data, net = trained
    return genbounds.report(net.params, X=data.X_train, y=data.y_train,
                            apply_fn=net.apply_fn, init_params=net.init_params,
                            X_test=data.X_test, y_test=data.y_test)


def test_report_contents(rep, trained):
    data, net = trained
    names = {b.name for b in rep.bounds}
    assert {"vc", "spectral", "pac_bayes", "golowich", "golowich_l1inf", "spectral_init",
            "pac_bayes_init"} <= names
    assert not rep.skipped
    measures = {m.name for m in rep.measures}
    assert {"path_norm", "l2_path_norm", "fro_dist", "num_weights"} <= measures
    assert {"ht_alpha", "ht_alpha_weighted", "ht_log_alpha_norm", "ht_stable_rank"} <= measures
    assert all(m.value is None for m in rep.measures)
    # errors measured independently
    pred = np.argmax(np.asarray(net.apply_fn(net.params, data.X_test)), axis=1)
    np.testing.assert_allclose(rep.test_error, np.mean(pred != data.y_test))
    assert rep.train_error == 0.0 and rep.n == len(data.y_train)


def test_soundness_no_bound_below_test_error(rep):
    assert all(b.value >= rep.test_error for b in rep.bounds)
    assert all(b.vacuous == (b.value >= 1.0) for b in rep.bounds)


def test_ranked_and_renderings(rep):
    ranked = rep.ranked()
    values = [b.value for b in ranked]
    assert values == sorted(values)
    md = rep.to_markdown()
    assert md.count("\n| ") == len(rep.bounds) + len(rep.measures) + 1  # header + rows
    txt = rep.to_text()
    assert all(b.name in txt for b in rep.bounds) and str(rep) == txt
    records = rep.to_records()
    json.dumps(records)
    assert [r["name"] for r in records[: len(ranked)]] == [b.name for b in ranked]
    assert all(r["seconds"] is not None for r in records)


def test_plot(rep, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    ax = rep.plot()
    assert ax.get_yscale() == "log" and len(ax.patches) == len(rep.bounds)
    ax.figure.savefig(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_report_lists_what_does_not_apply():
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class CNN(nn.Module):
        @nn.compact
        @promoting
        def __call__(self, x):
            x = nn.relu(nn.Conv(3, (3, 3))(x))
            return nn.Dense(2)(x.reshape(x.shape[0], -1))

    X = np.random.default_rng(0).standard_normal((40, 6, 6, 1))
    model = CNN()
    params = model.init(jax.random.key(0), jnp.ones((1, 6, 6, 1)))["params"]

    def apply_fn(p, x):
        return model.apply({"params": p}, x)

    y = np.argmax(np.asarray(apply_fn(params, X)), axis=1)
    r = genbounds.report(params, X=X, y=y, apply_fn=apply_fn)
    skipped = dict(r.skipped)
    # The CNN is traced: BFT covers it (operator norms); the fully connected theorems refuse.
    assert "spectral" in {b.name for b in r.bounds}
    assert "pac_bayes" in skipped and "golowich" in skipped and "vc" in skipped
    assert all("fully connected" in skipped[k] for k in ("pac_bayes", "golowich", "vc"))


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(delta=2.0), "delta"), (dict(y=np.zeros(3, int)), "same number"),
     (dict(X_test=np.zeros((2, 64))), "both")],
)
def test_report_bad_input(trained, kwargs, match):
    data, net = trained
    args = dict(X=data.X_train, y=data.y_train, apply_fn=net.apply_fn)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        genbounds.report(net.params, **args)


def test_rademacher_entry_is_a_measure_with_its_conditional_bound(trained):
    import math

    data, net = trained
    n = len(data.y_train)
    X = np.asarray(data.X_train, np.float64)
    est = genbounds.rademacher(genbounds.LinearBall(1.0), X, num_draws=16,
                               key=__import__("jax").random.key(0))
    r = genbounds.report(net.params, X=data.X_train, y=data.y_train,
                         apply_fn=net.apply_fn, rademacher_estimate=est, delta=0.05)
    assert "rademacher" not in {x.name for x in r.bounds}  # not tied to the net: a measure
    b = {x.name: x for x in r.measures}["rademacher"]
    upper = est.upper(1 - 0.025)
    want = 0.0 + 2 * upper + 3 * math.sqrt(math.log(2 / 0.025) / (2 * n))
    np.testing.assert_allclose(b.terms["bound_if_in_class"], want, rtol=1e-12)
    np.testing.assert_allclose(b.complexity, est.value, rtol=1e-12)
    assert b.value is None and b.estimated and b.delta == 0.05
    with pytest.raises(ValueError, match="points"):
        genbounds.report(net.params, X=data.X_train[:10], y=data.y_train[:10],
                         apply_fn=net.apply_fn, rademacher_estimate=est)


def test_report_flatness_entries(trained):
    data, net = trained
    r = genbounds.report(net.params, X=data.X_train, y=data.y_train,
                         apply_fn=net.apply_fn, flatness=True)
    m = {x.name: x for x in r.measures}
    assert m["hessian_top"].complexity > 0 and m["hessian_top"].estimated
    assert m["pac_bayes_flatness"].complexity > 0
    with pytest.raises(ValueError, match="init_params"):
        genbounds.report(net.params, X=data.X_train, y=data.y_train,
                         apply_fn=net.apply_fn, dziugaite_roy_options={})


def test_report_options_bundle_and_keywords_agree():
    import dataclasses

    params = {"Dense_0": {"kernel": np.eye(2)}, "Dense_1": {"kernel": np.eye(2)}}
    X = np.array([[1.0, 0.0], [0.0, 1.0]] * 50)
    y = np.array([0, 1] * 50)

    def f(p, x):
        return x @ p["Dense_0"]["kernel"] @ p["Dense_1"]["kernel"]

    def values(r):
        return [(b.name, b.value, b.complexity) for b in (*r.bounds, *r.measures)]

    opts = genbounds.ReportOptions(margin=0.5)
    by_name = genbounds.report(params, X=X, y=y, apply_fn=f, margin=0.5)
    bundled = genbounds.report(params, X=X, y=y, apply_fn=f, options=opts)
    assert values(by_name) == values(bundled)
    assert {b.terms.get("margin") for b in bundled.bounds} >= {0.5}
    # a keyword beside the bundle replaces its field
    replaced = genbounds.report(params, X=X, y=y, apply_fn=f, options=opts, margin=0.25)
    assert values(replaced) == values(genbounds.report(params, X=X, y=y, apply_fn=f,
                                                       margin=0.25))
    assert values(replaced) != values(bundled)
    # the bundle's defaults are report's, and it is frozen
    assert genbounds.ReportOptions() == genbounds.ReportOptions(
        margin=None, margin_quantile=0.1, input_bound=None, layers=None, rademacher_class=None,
        rademacher_draws=8, rademacher_estimate=None, flatness=False, evidence_prior=None,
        dziugaite_roy_options=None, extra=None, robustness=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.margin = 1.0
    with pytest.raises(TypeError, match="'margni'"):
        genbounds.report(params, X=X, y=y, apply_fn=f, margni=0.5)
    with pytest.raises(TypeError, match="ReportOptions"):
        genbounds.report(params, X=X, y=y, apply_fn=f, options={"margin": 0.5})
    # the options are checked as the keywords were, naming the field
    with pytest.raises(ValueError, match="margin_quantile"):
        genbounds.report(params, X=X, y=y, apply_fn=f,
                         options=genbounds.ReportOptions(margin_quantile=1.5))
