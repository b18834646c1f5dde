"""The supersample population trainer (`genbounds.cmi`): methods agree, resumable, sharded runs
identical on 1 and 4 CPU devices (a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genbounds import cmi, internal
from tests.helpers import promoting

ROOT = Path(__file__).resolve().parents[1]


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.Dense(8)(x)))


def task(N=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, 3)).astype(np.float32)
    y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(np.int32)
    return X, y


def parts():
    model = Tiny()
    X, _ = task()
    opt = optax.adam(1e-2)
    return (promoting(model.apply), promoting(lambda k: model.init(k, X[:1])),
            optax.GradientTransformation(promoting(opt.init), promoting(opt.update)))


def test_draws_are_distinct_pairs_and_fair_masks():
    X, y = task()
    ss = cmi.draw_supersample(X, y, 20, key=jax.random.key(0))
    assert ss.X.shape == (20, 2, 3) and ss.y.shape == (20, 2) and ss.n == 20
    rows = {tuple(r) for r in ss.X.reshape(40, 3)}
    assert len(rows) == 40  # every example of the pool once
    m = cmi.draw_masks(jax.random.key(1), 200, 20)
    assert m.shape == (200, 20) and set(np.unique(m)) == {0, 1}
    assert abs(m.mean() - 0.5) < 0.05
    with pytest.raises(ValueError, match="n must be at most"):
        cmi.draw_supersample(X, y, 21, key=jax.random.key(0))
    with pytest.raises(TypeError, match="key"):
        cmi.draw_masks(3, 4, 5)


def test_population_methods_agree_and_runs_differ():
    apply_fn, init, opt = parts()
    X, y = task()
    ss = cmi.draw_supersample(X, y, 12, key=jax.random.key(0))
    masks = cmi.draw_masks(jax.random.key(1), 5, 12)
    kw = dict(key=jax.random.key(2), epochs=3, batch_size=4)
    loop = cmi.train_population(apply_fn, init, opt, ss, masks, method="loop", **kw)
    vmap = cmi.train_population(apply_fn, init, opt, ss, masks, method="vmap", **kw)
    mapped = cmi.train_population(apply_fn, init, opt, ss, masks, method="map", chunk=2, **kw)
    assert loop.shape == (5, 12, 2) and loop.dtype == np.int32
    np.testing.assert_array_equal(vmap, loop)
    np.testing.assert_array_equal(mapped, loop)
    with pytest.raises(ValueError, match="method must be one of"):
        cmi.train_population(apply_fn, init, opt, ss, masks, method="pmap", **kw)
    with pytest.raises(ValueError, match="masks must have shape"):
        cmi.train_population(apply_fn, init, opt, ss, masks[:, :3], **kw)


def test_run_population_pads_and_matches_a_python_map():
    def fn(row):
        a, b = row
        return jnp.tanh(a @ a.T).sum() * b

    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 3, 4))
    b = rng.normal(size=(5,))
    ref = np.array([np.tanh(a[k] @ a[k].T).sum() * b[k] for k in range(5)])
    for chunk in (None, 2, 8):
        got = cmi.run_population(fn, (a, b), chunk=chunk)
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    with pytest.raises(ValueError, match="same leading axis"):
        cmi.run_population(fn, (a, b[:3]))


def test_experiment_records_bounds_and_resume(tmp_path, monkeypatch):
    apply_fn, init, opt = parts()
    X, y = task(60)
    kw = dict(n=10, key=jax.random.key(3), epochs=4, batch_size=5, num_masks=4,
              num_supersamples=1, out=tmp_path)
    e = cmi.supersample_experiment(apply_fn, init, opt, X, y, **kw)
    assert e.predictions.shape == (1, 4, 10, 2) and e.masks.shape == (1, 4, 10)
    recs = e.to_records()
    assert len(recs) == 4 and {"train_error", "test_error", "gap"} <= set(recs[0])
    assert np.mean([r["gap"] for r in recs]) == pytest.approx(e.mean_gap, rel=1e-12)
    b = e.bounds(num_bootstrap=10)
    assert b["fcmi"].terms["mean_gap"] == pytest.approx(e.mean_gap, rel=1e-12, abs=1e-15)
    assert sorted(p.name for p in tmp_path.glob("supersample-*.npz")) == ["supersample-0.npz"]

    def refuse(*a, **k):
        raise AssertionError("trained again instead of resuming")

    monkeypatch.setattr(internal.cmi_supersample, "train_population", refuse)
    again = cmi.supersample_experiment(apply_fn, init, opt, X, y, **kw)
    np.testing.assert_array_equal(again.predictions, e.predictions)
    with pytest.raises(ValueError, match="other settings"):
        cmi.supersample_experiment(apply_fn, init, opt, X, y, **{**kw, "epochs": 5})
    # another learning rate, or another model, is another program: refused, never reused
    with pytest.raises(ValueError, match="other settings"):
        cmi.supersample_experiment(apply_fn, init, optax.adam(5e-3), X, y, **kw)
    with pytest.raises(ValueError, match="other settings"):
        cmi.supersample_experiment(lambda p, x: 2.0 * apply_fn(p, x), init, opt, X, y, **kw)


PROBE = textwrap.dedent(r"""
    import json, jax, jax.numpy as jnp, numpy as np, optax, flax.linen as nn
    from genbounds import cmi
    assert len(jax.devices()) == 4, jax.devices()
    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.relu(nn.Dense(8)(x)))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(np.int32)
    model = Tiny()
    init = lambda k: model.init(k, X[:1])
    out = {}
    for name, devs in (("one", jax.devices()[:1]), ("four", jax.devices())):
        for method in (("map",) if name == "one" else ("vmap",)):
            e = cmi.supersample_experiment(model.apply, init, optax.adam(1e-2), X, y, n=12,
                key=jax.random.key(0), epochs=2, batch_size=4, num_masks=6, method=method,
                chunk=2 if method == "map" else None, devices=devs)
            out[f"{name}-{method}"] = e.predictions.tolist()
        w = jnp.asarray(rng.normal(size=(6, 3, 3)), jnp.float32) if name == "one" else w
        f = lambda a: jnp.tanh(a @ a @ a).sum()
        out[f"{name}-float"] = np.asarray(cmi.run_population(f, w, chunk=2, devices=devs)).tolist()
    print(json.dumps(out))
""")


def test_one_and_four_cpu_devices_give_identical_results():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu", "GENBOUNDS_JAX_CACHE": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["one-map"] == out["four-vmap"]
    # Floats agree to rounding: XLA may compile a loop of one group (4 devices) differently
    # from a loop of three (1 device).
    np.testing.assert_allclose(out["four-float"], out["one-float"], rtol=1e-6)


MULTI = textwrap.dedent(r"""
    import json, sys
    import jax
    nproc, pid, port = (int(a) for a in sys.argv[1:4])
    if nproc > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                                   num_processes=nproc, process_id=pid)
    import numpy as np, optax, flax.linen as nn
    from genbounds import cmi
    assert jax.process_count() == nproc and len(jax.devices()) == nproc
    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.relu(nn.Dense(8)(x)))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(np.int32)
    model = Tiny()
    e = cmi.supersample_experiment(model.apply, lambda k: model.init(k, X[:1]),
        optax.adam(1e-2), X, y, n=12, key=jax.random.key(0), epochs=2, batch_size=4,
        num_masks=6, method="map", chunk=2)
    print(json.dumps(e.predictions.tolist()))
""")


@pytest.mark.slow
def test_two_processes_give_the_single_process_result():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "GENBOUNDS_JAX_CACHE": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("XLA_FLAGS", None)
    runs = [subprocess.Popen([sys.executable, "-c", MULTI, str(nproc), str(pid), str(port)],
                             env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for nproc, pid in ((1, 0), (2, 0), (2, 1))]
    outs = []
    for p in runs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[1] == outs[0] and outs[2] == outs[0]
