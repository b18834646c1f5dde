"""The population trainer of `genbounds.cmi` against K trainings one after another.

    python benchmarks/bench_cmi_population.py [--n 300] [--masks 32] [--epochs 40] [--width 64]
        [--devices 2]

One supersample of binary digits (the MLP 64-WIDTH-2 of ``genbounds reproduce cmi``, Adam,
batch 32), K masks, the same epochs for every method. Runs in a fresh interpreter with
``XLA_FLAGS=--xla_force_host_platform_device_count=DEVICES`` (one CPU device per core), and
times, after one warm-up call of each (compilation excluded; the first call is printed too):

- ``python loop, jitted step``: K runs one after another, each a Python loop over epochs and
  minibatches calling one jitted optimiser step (how one trains K models without a population);
- ``python loop, jitted run``: K runs one after another, each one compiled `lax.scan` over all of
  its steps (`train_population(method="loop")`, on one device);
- ``population vmap, 1 device`` / ``population vmap, all devices`` / ``population map (chunk 8),
  all devices``: `train_population` sharded over the devices.

Prints each time and the ratio of the best population time to each Python loop, measured in the
same run. On CPU the population gains what XLA's per-step overhead and the extra cores give: a
run of a small MLP is compute-bound inside one compiled scan, so against the jitted-run loop the
ratio is about the number of cores; against the per-step Python loop it is much larger.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROBE = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax, flax.linen as nn
from genbounds import cmi
from genbounds.data import load
from optax import softmax_cross_entropy_with_integer_labels as ce
n, K, epochs, width = (int(a) for a in sys.argv[1:5])
ds = load("digits", binary=True, seed=0)
X = np.concatenate([ds.X_train, ds.X_test]).astype(np.float32)
y = np.concatenate([ds.y_train, ds.y_test]).astype(np.int32)
class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.Dense(width)(x)))
model = MLP(); init = lambda k: model.init(k, X[:1]); opt = optax.adam(1e-3)
ss = cmi.draw_supersample(X, y, n, key=jax.random.key(0))
masks = cmi.draw_masks(jax.random.key(1), K, n)
out = {"devices": len(jax.devices())}

def step_loop():
    @jax.jit
    def step(p, s, xb, yb):
        g = jax.grad(lambda q: jnp.mean(ce(model.apply(q, xb), yb)))(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s
    preds = []
    rng = np.random.default_rng(0)
    for k in range(K):
        Xtr, ytr = ss.X[np.arange(n), masks[k]], ss.y[np.arange(n), masks[k]]
        p = init(jax.random.key(k)); s = opt.init(p)
        for e in range(epochs):
            order = rng.permutation(n)
            for b in range(n // 32):
                idx = order[b * 32:(b + 1) * 32]
                p, s = step(p, s, Xtr[idx], ytr[idx])
        preds.append(np.asarray(model.apply(p, ss.X.reshape(2 * n, -1))))
    return preds

def timed(f):
    t = time.perf_counter(); r = f(); jax.block_until_ready(r); return time.perf_counter() - t

cases = {
    "python loop, jitted step": step_loop,
    "python loop, jitted run": lambda: cmi.train_population(
        model.apply, init, opt, ss, masks, key=jax.random.key(2), epochs=epochs, method="loop"),
    "population vmap, 1 device": lambda: cmi.train_population(
        model.apply, init, opt, ss, masks, key=jax.random.key(2), epochs=epochs, method="vmap",
        devices=jax.devices()[:1]),
    "population vmap, all devices": lambda: cmi.train_population(
        model.apply, init, opt, ss, masks, key=jax.random.key(2), epochs=epochs, method="vmap"),
    "population map (chunk 8), all devices": lambda: cmi.train_population(
        model.apply, init, opt, ss, masks, key=jax.random.key(2), epochs=epochs, method="map",
        chunk=8),
}
for name, f in cases.items():
    first = timed(f)
    out[name] = {"first": first, "warm": min(timed(f) for _ in range(2))}
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--masks", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--devices", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={a.devices}",
           "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", PROBE, str(a.n), str(a.masks), str(a.epochs),
                        str(a.width)], env=env, capture_output=True, text=True, check=False)
    if r.returncode:
        sys.exit(r.stderr[-4000:])
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"n={a.n} K={a.masks} epochs={a.epochs} MLP 64-{a.width}-2, {res.pop('devices')} "
          f"CPU devices (cores available: {os.cpu_count()})")
    for name, t in res.items():
        print(f"  {name:40s} warm {t['warm']:7.2f} s   first call {t['first']:7.2f} s")
    pop = min(t["warm"] for name, t in res.items() if name.startswith("population"))
    for base in ("python loop, jitted step", "python loop, jitted run"):
        print(f"ratio {base} / best population: {res[base]['warm'] / pop:.2f}x")


if __name__ == "__main__":
    main()
