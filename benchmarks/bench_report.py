"""Time `genbounds.report` on a 784-600-600-10 MLP with 10 000 examples, bound by bound.

    python benchmarks/bench_report.py            # plain script: prints the table
    pytest benchmarks/bench_report.py --benchmark-only -s

The network has random (He-initialised) weights and the labels are its own predictions, so every
margin bound applies (the 10% margin quantile is positive). The first call compiles; the table
shows the second (warm) call, each entry's wall time as recorded by `report`.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import genbounds


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(600)(x))
        x = nn.relu(nn.Dense(600)(x))
        return nn.Dense(10)(x)


def setup(n: int = 10_000, seed: int = 0):
    model = MLP()
    X = np.asarray(jax.random.uniform(jax.random.key(seed), (n, 784)), np.float32)
    params = model.init(jax.random.key(seed + 1), X[:1])["params"]
    init = model.init(jax.random.key(seed + 2), X[:1])["params"]
    apply_fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
    y = np.asarray(jnp.argmax(apply_fn(params, X), axis=1))
    return params, init, apply_fn, X, y


def run(params, init, apply_fn, X, y):
    return genbounds.report(params, X=X, y=y, apply_fn=apply_fn, init_params=init)


def main() -> None:
    args = setup()
    t0 = time.perf_counter()
    run(*args)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep = run(*args)
    warm = time.perf_counter() - t0
    print(f"report on 784-600-600-10, n = {len(args[4])}: first call {cold:.2f} s "
          f"(compiles), second call {warm:.2f} s")
    print(f"{'entry':<18}{'seconds':>10}  {'value':>12}")
    for b in rep.ranked():
        print(f"{b.name:<18}{rep.seconds[b.name]:>10.3f}  {float(b.value):>12.4g}")
    total = sum(rep.seconds[m.name] for m in rep.measures)
    print(f"{'norm_measures':<18}{total:>10.3f}  {len(rep.measures):>10} measures")
    for name, why in rep.skipped:
        print(f"skipped {name}: {why}")


def test_report_benchmark(benchmark):
    args = setup()
    run(*args)  # compile
    rep = benchmark.pedantic(run, args=args, rounds=1, iterations=1)
    assert rep.bounds and not rep.skipped


if __name__ == "__main__":
    main()
