"""Draws per second of the Monte-Carlo Rademacher estimate: loop vs vmap vs sharded.

Two workloads:

- ``linear``: `LinearBall` (ℓ2) on n = 10 000 points of dimension d = 784 (closed form per draw);
- ``network``: `NetworkClass` of a 40-256-1 ReLU MLP (Flax linen) on n = 500 points, 300
  training steps per draw.

As a script it prints a table; the strategies ``loop`` and ``vmap`` run in this process and
``sharded`` runs in a subprocess that forces two CPU devices (``jax_num_cpu_devices``), unless
``--devices`` is given, in which case everything runs here on that many forced CPU devices:

    python benchmarks/bench_rademacher.py                       # K = 256 linear, 8 network draws
    python benchmarks/bench_rademacher.py --linear-draws 256 --network-draws 32
    python benchmarks/bench_rademacher.py --devices 2 --strategies sharded,vmap --json

On a GPU/TPU machine run it without ``--devices``: ``sharded`` then spreads over the local
accelerators (in the subprocess too). Each timing is of a second call with a new key (same
shapes, no compilation); the first call, compilation included, is shown alongside.

Under pytest-benchmark (``pytest benchmarks/bench_rademacher.py``) each (workload, strategy) is
one benchmark with small K, on the devices this process has.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=None, help="force this many CPU devices here")
    p.add_argument("--linear-draws", type=int, default=256)
    p.add_argument("--network-draws", type=int, default=8)
    p.add_argument("--steps", type=int, default=300, help="training steps per network draw")
    p.add_argument("--workloads", default="linear,network")
    p.add_argument("--strategies", default="loop,vmap,sharded")
    p.add_argument("--sharded-devices", type=int, default=2, help="CPU devices of the subprocess")
    p.add_argument("--json", action="store_true", help="print the rows as JSON only")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


def _workloads(steps):
    import flax.linen as nn
    import numpy as np

    from genbounds.measures import LinearBall, NetworkClass

    class MLP(nn.Module):  # 40-256-1
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.relu(nn.Dense(256)(x)))

    rng = np.random.default_rng(0)
    return {
        "linear": (LinearBall(1.0, norm="l2"), rng.normal(size=(10_000, 784)).astype(np.float32)),
        "network": (
            NetworkClass(MLP(), steps=steps, learning_rate=1e-2),
            rng.normal(size=(500, 40)).astype(np.float32),
        ),
    }


def _run(H, X, K, strategy, seed):
    import jax

    from genbounds.measures import rademacher

    t = time.perf_counter()
    est = rademacher(H, X, num_draws=K, key=jax.random.key(seed), strategy=strategy)
    jax.block_until_ready(est.draws)
    return time.perf_counter() - t, est


def _measure(workloads, strategies, draws, steps):
    import jax

    table = _workloads(steps)
    rows = []
    for w in workloads:
        H, X = table[w]
        for s in strategies:
            first, _ = _run(H, X, draws[w], s, seed=0)  # compiles
            secs, est = _run(H, X, draws[w], s, seed=1)
            rows.append(
                dict(
                    workload=w,
                    strategy=s,
                    devices=est.num_devices,
                    backend=jax.default_backend(),
                    draws=draws[w],
                    chunk=est.chunk_size,
                    first_s=first,
                    seconds=secs,
                    draws_per_s=draws[w] / secs,
                    value=float(est.value),
                )
            )
    return rows


def _sharded_subprocess(args):
    """Runs the sharded strategy in a fresh process with forced CPU devices; returns its rows."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--json",
        "--strategies",
        "sharded",
        "--workloads",
        args.workloads,
        "--linear-draws",
        str(args.linear_draws),
        "--network-draws",
        str(args.network_draws),
        "--steps",
        str(args.steps),
    ]
    import jax

    if jax.default_backend() == "cpu":
        cmd += ["--devices", str(args.sharded_devices)]
    root = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    )
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print_table(rows):
    base = {r["workload"]: r["draws_per_s"] for r in rows if r["strategy"] == "loop"}
    head = (
        f"{'workload':8} {'strategy':8} {'backend':7} {'dev':>3} {'K':>5} {'chunk':>5} "
        f"{'first s':>8} {'s':>8} {'draws/s':>9} {'vs loop':>7} {'value':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = r["draws_per_s"] / base[r["workload"]] if r["workload"] in base else float("nan")
        chunk = "-" if r["chunk"] is None else str(r["chunk"])
        print(
            f"{r['workload']:8} {r['strategy']:8} {r['backend']:7} {r['devices']:>3} "
            f"{r['draws']:>5} {chunk:>5} {r['first_s']:>8.2f} {r['seconds']:>8.3f} "
            f"{r['draws_per_s']:>9.2f} {ratio:>7.2f} {r['value']:>8.4f}"
        )


def main(argv=None):
    args = _parse(argv)
    import jax

    if args.devices is not None:
        jax.config.update("jax_num_cpu_devices", args.devices)  # before the backend starts
    workloads = args.workloads.split(",")
    strategies = args.strategies.split(",")
    draws = {"linear": args.linear_draws, "network": args.network_draws}
    here = [s for s in strategies if s != "sharded" or args.devices is not None or args.json]
    rows = _measure(workloads, here, draws, args.steps)
    if "sharded" in strategies and "sharded" not in here:
        rows += _sharded_subprocess(args)
        order = {w: i for i, w in enumerate(workloads)}
        rows.sort(key=lambda r: (order[r["workload"]], strategies.index(r["strategy"])))
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, network steps/draw = {args.steps}")
        _print_table(rows)


# --------------------------------------------------------------------------------------------
# pytest-benchmark
# --------------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # plain-script use does not need pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module")
    def bench_workloads():
        return _workloads(steps=300)

    @pytest.mark.parametrize("strategy", ["loop", "vmap", "sharded"])
    @pytest.mark.parametrize("workload, K", [("linear", 32), ("network", 2)])
    def test_draws_per_second(benchmark, bench_workloads, workload, K, strategy):
        H, X = bench_workloads[workload]
        _run(H, X, K, strategy, seed=0)  # compile outside the timing
        secs, est = benchmark.pedantic(_run, args=(H, X, K, strategy, 1), rounds=1, iterations=1)
        benchmark.extra_info.update(draws=K, draws_per_s=K / secs, devices=est.num_devices)
        assert est.num_draws == K and est.strategy == strategy


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's genbounds
    main()
