"""A population of independent runs, sharded over devices and processes with `jax.sharding`.

`run_population(fn, inputs)` evaluates ``fn`` on each of the K rows of ``inputs`` (a pytree of
arrays with a leading axis K) and returns the K outputs on the host. The population axis is laid
out over a one-axis `jax.sharding.Mesh` of ``devices`` (default: `jax.devices()`, i.e. every
device of every process once `jax.distributed.initialize` has run) with a
`jax.sharding.NamedSharding`, and `jax.shard_map` runs on each device

* ``chunk=None``: one `jax.vmap` over the device's rows (fastest when memory allows), or
* ``chunk=c``: `jax.lax.map` over groups of ``c`` rows, each group one `jax.vmap` (memory
  bounded by c runs).

The runs are independent: `jax.shard_map` runs with ``check_vma=False``. With JAX's
varying-manual-axes checks on, the gradient of a value that every device holds alike (a
zero-initialised bias, or initial parameters shared by all runs) is summed over the devices in
the backward pass, the semantics of replicated parameters: each run would then train on the sum
of the gradients of the runs beside it (the test on 1 and 4 devices caught it).

K is padded (with copies of row 0, dropped afterwards) to a multiple of the number of devices,
times ``chunk`` when given. With a ``chunk``, every device evaluates the same vmapped program on
groups of the same size, whatever the number of devices. Run k's result does not depend on the
number of devices: the trained networks' predictions on 1 and on 4 devices are identical, and
float outputs agree to rounding (XLA may compile a loop of one group differently from a loop of
several; tests/test_cmi_population.py runs both in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``).

Several processes: start each with `jax.distributed.initialize(...)` before any other JAX call
(coordinator address, number of processes, this process's id), then call `run_population` in
every process with the same arguments. Each process feeds the rows its own devices hold
(`jax.make_array_from_callback`) and the outputs are gathered to every process
(`jax.experimental.multihost_utils.process_allgather`). No scheduler of our own: JAX's SPMD
partitioner and its distributed runtime do the work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "population"


def population_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A one-axis mesh named ``"population"`` over `devices` (default: all `jax.devices()`)."""
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("devices must name at least one device, got an empty list")
    return Mesh(np.array(devs), (AXIS,))


def _padded(x: np.ndarray, total: int) -> np.ndarray:
    k = x.shape[0]
    if total == k:
        return x
    return np.concatenate([x, np.repeat(x[:1], total - k, axis=0)], axis=0)


def run_population(
    fn: Callable[[Any], Any],
    inputs: Any,
    *,
    devices: Sequence[Any] | None = None,
    chunk: int | None = None,
) -> Any:
    """Runs ``fn`` on every row of ``inputs``, the rows spread over devices (and processes).

    Args:
      fn: a jittable function of one row (a pytree of arrays without the leading axis).
      inputs: a pytree of host arrays with a common leading axis K (the population).
      devices: the devices to use (default: all of `jax.devices()`).
      chunk: rows per vmapped group inside each device (`jax.lax.map` over groups), or None for
        one vmap over all of a device's rows.

    Returns:
      The pytree of outputs, numpy arrays with leading axis K, on every process.
    """
    leaves, treedef = jax.tree_util.tree_flatten(inputs)
    host = [np.asarray(v) for v in leaves]
    if not host:
        raise ValueError("inputs must hold at least one array")
    K = host[0].shape[0]
    if any(v.ndim == 0 or v.shape[0] != K for v in host):
        raise ValueError(f"every input must have the same leading axis (the population); got "
                         f"shapes {[v.shape for v in host]}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive integer or None, got {chunk!r}")
    mesh = population_mesh(devices)
    total = padded_size(K, mesh, chunk)
    arrays = put_rows(jax.tree_util.tree_unflatten(treedef, host), mesh, total)
    return gather_rows(population_function(fn, mesh=mesh, chunk=chunk)(arrays), K)


def padded_size(K: int, mesh: Mesh, chunk: int | None = None) -> int:
    """K rounded up to a multiple of the mesh's devices (times `chunk` when given)."""
    per = mesh.devices.size * (chunk or 1)
    return -(-K // per) * per


def put_rows(inputs: Any, mesh: Mesh, total: int) -> Any:
    """The host pytree `inputs` (leading axis K) padded with copies of row 0 to `total` rows and
    laid out over `mesh`'s population axis: each process feeds the rows its devices hold."""
    sharding = NamedSharding(mesh, P(AXIS))

    def put(v):
        v = _padded(np.asarray(v), total)
        return jax.make_array_from_callback(v.shape, sharding, lambda idx: v[idx])

    return jax.tree_util.tree_map(put, inputs)


def population_function(fn: Callable[..., Any], *, mesh: Mesh, chunk: int | None = None,
                        shared: bool = False) -> Callable[..., Any]:
    """``fn`` of one row, mapped over the rows of one pytree argument laid out by `put_rows`:
    a jitted `jax.shard_map` over `mesh` of one `jax.vmap` (``chunk=None``) or of `jax.lax.map`
    over vmapped groups of `chunk` rows. Its outputs stay on the devices, sharded alike, so it
    can be called again on them (an epoch loop) without a round trip to the host.

    With ``shared=True`` the mapped function takes a second argument, a pytree every row sees
    whole (replicated on every device; e.g. the data set), and ``fn(row, shared)`` is called.
    """

    def local(tree, *rest):
        f = (lambda row: fn(row, *rest)) if shared else fn
        if chunk is None:
            return jax.vmap(f)(tree)
        return jax.lax.map(f, tree, batch_size=chunk)

    specs = (P(AXIS), P()) if shared else (P(AXIS),)
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P(AXIS),
                                 check_vma=False))


def gather_rows(out: Any, K: int) -> Any:
    """The first K rows of every output of `population_function`, numpy, on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        out = multihost_utils.process_allgather(out, tiled=True)
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[:K], out)
