"""The training of `genbounds study --quick`: its networks as populations against one after another.

    python benchmarks/bench_study_population.py [--max-epochs 500] [--devices 1]

The quick grid (MNIST-1D, n = 500, MLPs of width 32, batch 32, depth {1, 2} x lr {3e-3, 1e-2},
Adam, stop at training cross-entropy <= 0.01) trained two ways, each in a fresh interpreter
without the persistent compilation cache:

- ``one after another``: `genbounds.train.train` for each network (protocol 2 of the study);
- ``populations``: `genbounds.train.train_population` for each group of one shape (depth), the
  way `genbounds study` trains since protocol 3 (2 populations of 2).

Each is timed twice in its process: the first time includes compilation (what a study run
pays), the second is warm. Prints both, the ratio one-after-another / populations of each, the
epochs every network took under each method (they must agree: the same program) and the load
average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROBE = r"""
import json, sys, time
import jax
from genbounds.data import load
from genbounds.experiments._study import QUICK_FIXED, QUICK_GRID, grid_configs, shape_groups
from genbounds.train import train, train_population
method, max_epochs = sys.argv[1], int(sys.argv[2])
ds = load("mnist1d", seed=0, n=500)
cfgs = grid_configs(QUICK_GRID, QUICK_FIXED)

def one_after_another():
    return [train({"kind": "mlp", "depth": c["depth"], "width": c["width"]}, ds,
                  optimizer="adam", lr=c["lr"], batch_size=c["batch_size"], dropout=c["dropout"],
                  weight_decay=c["weight_decay"], max_epochs=max_epochs, stop="loss",
                  loss_target=0.01, seed=0).epochs for c in cfgs]

def populations():
    epochs = [None] * len(cfgs)
    for g in shape_groups(cfgs):
        c0 = cfgs[g[0]]
        res = train_population({"kind": "mlp", "depth": c0["depth"], "width": c0["width"]}, ds,
                               [{k: cfgs[i][k] for k in ("lr", "dropout", "weight_decay")}
                                for i in g], optimizer="adam", batch_size=c0["batch_size"],
                               max_epochs=max_epochs, stop="loss", loss_target=0.01, seed=0)
        for i, r in zip(g, res):
            epochs[i] = r.epochs
    return epochs

f = {"one": one_after_another, "pop": populations}[method]
times = []
for _ in range(2):
    t = time.perf_counter(); epochs = f(); times.append(time.perf_counter() - t)
print(json.dumps({"first": times[0], "warm": times[1], "epochs": epochs,
                  "devices": len(jax.devices())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-epochs", type=int, default=500)
    ap.add_argument("--devices", type=int, default=1)
    a = ap.parse_args()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "GENBOUNDS_JAX_CACHE": "0",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={a.devices}"}
    load0 = os.getloadavg()
    res = {}
    for method in ("one", "pop"):
        r = subprocess.run([sys.executable, "-c", PROBE, method, str(a.max_epochs)], env=env,
                           capture_output=True, text=True, check=False)
        if r.returncode:
            sys.exit(r.stderr[-4000:])
        res[method] = json.loads(r.stdout.strip().splitlines()[-1])
    load1 = os.getloadavg()
    print(f"genbounds study --quick training (4 MLPs, MNIST-1D n=500), "
          f"{res['pop']['devices']} CPU device(s), cores available: {os.cpu_count()}")
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    for method, name in (("one", "one after another (train)"),
                         ("pop", "populations (train_population)")):
        t = res[method]
        print(f"  {name:32s} first (with compile) {t['first']:7.2f} s   warm {t['warm']:7.2f} s"
              f"   epochs {t['epochs']}")
    for k in ("first", "warm"):
        print(f"ratio one after another / populations, {k}: "
              f"{res['one'][k] / res['pop'][k]:.2f}x")
    if res["one"]["epochs"] != res["pop"]["epochs"]:
        print("note: the epochs differ between the two methods (float rounding at the target)")


if __name__ == "__main__":
    main()
