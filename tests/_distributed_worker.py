"""Helper process for tests/test_rademacher_mc.py: sharded and multi-process Rademacher runs.

Run as a script (never collected by pytest: the name does not start with ``test_``):

    python tests/_distributed_worker.py sharded OUT.npz
        two forced CPU devices in this process; writes the draws of every problem under the
        strategies "sharded" (both devices), "vmap" and "loop".
    python tests/_distributed_worker.py distributed OUT.npz PORT PROCESS_ID NUM_PROCESSES
        one process of a `jax.distributed` run on 127.0.0.1:PORT with gloo CPU collectives;
        writes the draws every process ends up with.

`problems()` is imported by the test too, so both sides build the same data and classes.
"""

from __future__ import annotations

import sys

import numpy as np

NUM_DRAWS = 10  # not a multiple of the chunk, nor of the device or process count: padding runs
CHUNK = 3
NET_STEPS = 25


def _mlp():
    """A two-layer ReLU MLP as an (init_fn, apply_fn) pair, in plain JAX (no Flax import)."""
    import jax
    import jax.numpy as jnp

    def init(key, x):
        k1, k2 = jax.random.split(key)
        d = x.shape[-1]
        return {
            "w1": jax.random.normal(k1, (d, 16), x.dtype) / np.sqrt(d),
            "b1": jnp.zeros((16,), x.dtype),
            "w2": jax.random.normal(k2, (16, 1), x.dtype) / 4.0,
            "b2": jnp.zeros((1,), x.dtype),
        }

    def apply(p, x):
        return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    return init, apply


def problems():
    """The (name, hypotheses, X) triples both sides compute."""
    from genbounds.measures import KernelBall, LinearBall, NetworkClass

    rng = np.random.default_rng(20240611)
    X = rng.normal(size=(11, 4))
    Xn = rng.normal(size=(9, 3))
    net = NetworkClass(_mlp(), steps=NET_STEPS, learning_rate=0.05, norm_constraint=1.0)
    return [
        ("linear_l2", LinearBall(1.5, norm="l2"), X),
        ("kernel_rbf", KernelBall(2.0, kernel="rbf", bandwidth=1.3), X),
        ("network", net, Xn),
    ]


# Strategies each mode runs, per problem. Small: every (class, strategy) pair is a compilation.
SHARDED_MODE = {
    "linear_l2": ("sharded", "vmap"),
    "kernel_rbf": ("sharded", "vmap"),
    "network": ("sharded", "vmap"),
}
DISTRIBUTED_MODE = {"linear_l2": ("loop", "sharded"), "network": ("vmap",)}


def compute(plan, seed=7):
    """Runs each problem under the strategies `plan` names; returns {"name/strategy": draws}."""
    import jax

    from genbounds.measures import rademacher

    out = {}
    for name, hyp, X in problems():
        for strategy in plan.get(name, ()):
            chunk = None if strategy == "loop" else CHUNK
            est = rademacher(
                hyp,
                X,
                num_draws=NUM_DRAWS,
                key=jax.random.key(seed),
                strategy=strategy,
                chunk_size=chunk,
            )
            out[f"{name}/{strategy}"] = np.asarray(est.draws)
            out[f"{name}/{strategy}/meta"] = np.asarray(
                [est.num_devices, est.num_processes, float(est.value)]
            )
    return out


def main(argv):
    mode, path = argv[1], argv[2]
    import jax

    jax.config.update("jax_enable_x64", True)
    if mode == "sharded":
        jax.config.update("jax_num_cpu_devices", 2)  # before the backend starts
        assert jax.local_device_count() == 2, jax.devices()
        out = compute(SHARDED_MODE)
    elif mode == "distributed":
        port, pid, nproc = int(argv[3]), int(argv[4]), int(argv[5])
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=nproc,
            process_id=pid,
            initialization_timeout=60,
        )
        assert jax.process_count() == nproc and jax.process_index() == pid
        out = compute(DISTRIBUTED_MODE)
        # A call whose key differs between the processes must fail on every process, not hang.
        from genbounds.measures import rademacher

        _, hyp, X = problems()[0]
        try:
            rademacher(hyp, X, num_draws=NUM_DRAWS, key=jax.random.key(100 + pid), strategy="loop")
            out["mismatch_detected"] = np.asarray(0)
        except ValueError as e:
            out["mismatch_detected"] = np.asarray(int("differ from process 0" in str(e)))
        jax.distributed.shutdown()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv)
