"""The first `genbounds.spectral(params)` in a fresh process, on a linen 64-256-256-10 MLP.

    python benchmarks/bench_first_call.py [--repeats 3]

Each case runs in its own interpreter (best of `--repeats`), timing `import genbounds` and the
first and second `spectral(params)` call:

- ``jitted kernels``: every norm by a jitted kernel compiled for its shape (the previous
  behaviour: the host paths switched off), no persistent compilation cache;
- ``current, empty cache``: small layers by float64 LAPACK on the host, a fresh cache directory;
- ``current, warm cache``: the same, the cache directory filled by the previous case;
- ``jitted kernels, warm cache``: the previous behaviour, but its kernels loaded from the cache.

Also printed: ``np.linalg.norm(W, 2)`` on the three kernels in float64, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import genbounds
t_import = time.perf_counter() - t0
import flax.linen as nn, jax, numpy as np
from genbounds.linalg import _spectral_norm
if sys.argv[1] == "jitted":
    _linalg.HOST_EXACT_MAX_WORK = 0
    _linalg._host_ok = lambda x: False
class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(256)(x))
        x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(10)(x)
params = MLP().init(jax.random.key(0), np.zeros((1, 64), np.float32))["params"]
Ws = [np.asarray(params[k]["kernel"], np.float64) for k in params]
t0 = time.perf_counter(); [np.linalg.norm(W, 2) for W in Ws]; t_np = time.perf_counter() - t0
t0 = time.perf_counter(); b = genbounds.spectral(params); t1 = time.perf_counter() - t0
t0 = time.perf_counter(); genbounds.spectral(params); t2 = time.perf_counter() - t0
print(json.dumps(dict(imp=t_import, first=t1, second=t2, np=t_np, value=b.complexity)))
"""


def run(case: str, cache: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENBOUNDS_JAX_CACHE")}
    if cache is None:
        env["GENBOUNDS_JAX_CACHE"] = "0"
    else:
        env["GENBOUNDS_JAX_CACHE_DIR"] = cache
    out = subprocess.run([sys.executable, "-c", PROBE, case], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(case: str, cache_of, repeats: int) -> dict:
    runs = [run(case, cache_of()) for _ in range(repeats)]
    return {k: min(r[k] for r in runs) if k != "value" else runs[0][k] for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="genbounds-bench-")
    counter = iter(range(10**6))
    warm_dir = os.path.join(root, "warm")
    warm_jit = os.path.join(root, "warm-jit")
    cases = [
        ("jitted kernels", "jitted", lambda: None),
        ("current, empty cache", "current",
         lambda: os.path.join(root, f"empty-{next(counter)}")),
        ("current, warm cache", "current", lambda: warm_dir),
        ("jitted kernels, warm cache", "jitted", lambda: warm_jit),
    ]
    run("current", warm_dir)  # fill the caches
    run("jitted", warm_jit)
    rows = [(label, best(case, cache_of, a.repeats)) for label, case, cache_of in cases]
    print(f"first spectral(params), linen 64-256-256-10, fresh process (best of {a.repeats})")
    print(f"{'case':<28}{'import':>9}{'first':>9}{'second':>9}")
    for label, r in rows:
        print(f"{label:<28}{r['imp']:>8.2f}s{r['first']:>8.3f}s{r['second']:>8.3f}s")
    base = rows[0][1]["first"]
    for label, r in rows[1:]:
        print(f"ratio jitted kernels / {label}: {base / r['first']:.1f}x")
    print(f"np.linalg.norm(W, 2) on the three kernels (float64): {rows[0][1]['np']:.3f}s")
    print(f"complexity: jitted {rows[0][1]['value']:.6g}, current {rows[1][1]['value']:.6g}")


if __name__ == "__main__":
    main()
