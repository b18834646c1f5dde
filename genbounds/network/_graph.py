r"""The records of a network and what is done with them: evaluation and rewriting.

A network, read by the jaxpr interpreter (`_trace.py`, from its function) or by
`Network.from_params` (from parameter names), is a list of `Node` records in application order,
node 0 being the input. `eval_node` re-evaluates one record (the check `Network.trace` makes
against ``apply_fn``); `simplify` folds element-wise affine maps into the linear map before them
(a bias, BatchNorm in inference mode: per output channel) or a scalar scale into the sum pool
before it (average pooling), and drops what the output does not depend on.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._activations import Activation
from ._layers import Layer
from ._normalisation import eval_norm


@dataclasses.dataclass
class Node:
    r"""One record of a traced network.

    Attributes:
      op: ``"input"``, ``"linear"``, ``"activation"``, ``"pool"``, ``"reshape"``, ``"scale"``,
        ``"shift"``, ``"add"``, ``"concat"``, ``"norm"`` (LayerNorm/RMSNorm without its scale
        and shift), ``"opaque"`` (an operation recorded but not read, with its reason) or
        ``"log_softmax"``.
      inputs: indices of the nodes it reads.
      shape: its output shape per example (the batch axis, always first, left out).
      scope: the module that applied it (Flax's name stack), e.g. ``"CNN/Conv_0"``.
      lipschitz: an upper bound on its Lipschitz constant in the $\ell_2$ norm (linear nodes:
        1.0 here; their norm is computed by the bounds).
      layer: the `Layer` of a linear node.
      activation: the `Activation` of an activation node.
      info: op-specific details (pool geometry, reshape target, constants, layouts).
    """

    op: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    scope: str = ""
    lipschitz: float = 1.0
    layer: Layer | None = None
    activation: Activation | None = None
    info: dict = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        if self.op == "linear":
            lay = self.layer
            extra = ""
            if lay.kind == "conv":
                c = lay.conv
                extra = f", strides {c.strides}, padding {c.padding}, input {c.input_shape}"
            bias = "" if lay.bias is None else " + bias"
            fold = " (BatchNorm folded)" if lay.folded else ""
            return (f"{lay.kind} {lay.path!r} kernel {tuple(lay.kernel.shape)}{bias}{fold}"
                    f"{extra}")
        if self.op == "activation":
            return f"{self.activation.name} (Lipschitz {self.lipschitz:g})"
        if self.op == "pool":
            return f"{self.info['kind']} pool {self.info.get('window', '')} (Lipschitz {self.lipschitz:.4g})"
        if self.op == "add":
            return f"add of nodes {list(self.inputs)} (residual / merge)"
        if self.op == "scale":
            return f"scale (max |c| = {self.lipschitz:.4g})"
        if self.op == "norm":
            name = "LayerNorm" if self.info["kind"] == "layer" else "RMSNorm"
            return (f"{name} over axes {self.info['axes']} (eps {self.info['eps']:.3g}, "
                    f"Lipschitz 1/sqrt(eps) = {self.lipschitz:.4g})")
        if self.op == "opaque":
            return f"opaque of nodes {list(self.inputs)} ({self.info.get('reason', '')})"
        return self.op



# ----------------------------------------------------------------------------------------------
# Re-evaluation of the records.


def eval_node(node: Node, args: list[jax.Array]) -> jax.Array:
    op = node.op
    x = args[0] if args else None
    if op == "linear":
        lay = node.layer
        dtype = node.info.get("dtype", x.dtype)
        k = lay.kernel.astype(dtype)
        if lay.kind == "dense":
            contract = node.info.get("contract")
            if contract is not None:  # x @ W over any axes, at every position of the others
                free = [i for i in range(1, x.ndim) if i - 1 not in contract]
                x = jnp.transpose(x, (0, *free, *[a + 1 for a in contract]))
                x = x.reshape(x.shape[:1 + len(free)] + (-1,))
            y = jnp.matmul(x, k, precision=lax.Precision.HIGHEST)
            if lay.bias is not None:
                y = y + lay.bias.astype(dtype)
            if contract is not None:
                y = y.reshape(y.shape[:-1] + tuple(node.info["out_dims"]))
            return y
        xin = jnp.transpose(x, node.info["in_perm"])
        nsp = k.ndim - 2
        dn = lax.conv_dimension_numbers(xin.shape, k.shape,
                                        ("N" + "HWDXYZ"[:nsp] + "C", "HWDXYZ"[:nsp] + "IO",
                                         "N" + "HWDXYZ"[:nsp] + "C"))
        y = lax.conv_general_dilated(xin, k, lay.conv.strides, lay.conv.padding,
                                     dimension_numbers=dn, precision=lax.Precision.HIGHEST)
        if lay.bias is not None:
            y = y + lay.bias.astype(dtype)
        return jnp.transpose(y, node.info["out_perm"])
    if op == "activation":
        return node.activation.fn(x)
    if op == "scale":
        return x * jnp.asarray(node.info["c"], x.dtype)
    if op == "shift":
        return x + jnp.asarray(node.info["c"], x.dtype)
    if op == "reshape":
        if "perm" in node.info:
            return jnp.transpose(x, node.info["perm"])
        return x.reshape((x.shape[0],) + node.info["target"])
    if op == "pool":
        kind = node.info["kind"]
        if kind.startswith("global_"):
            fn = {"global_max": jnp.max, "global_min": jnp.min, "global_sum": jnp.sum}[kind]
            return fn(x, axis=node.info["axes"])
        p = node.info["params"]
        init, comp = (-jnp.inf, lax.max) if kind == "max" else (0.0, lax.add)
        # a concrete init value: lax then takes its max/sum primitive, differentiable in jit
        y = lax.reduce_window(x, np.asarray(init, x.dtype), comp, p["window_dimensions"],
                              p["window_strides"], p["padding"], p["base_dilation"],
                              p["window_dilation"])
        return y * jnp.asarray(node.info.get("factor", 1.0), x.dtype)
    if op == "add":
        c0, c1 = node.info["coef"]
        return c0 * args[0] + c1 * args[1]
    if op == "concat":
        return jnp.concatenate(args, axis=node.info["dim"])
    if op == "norm":
        return eval_norm(x, node.info)
    if op == "opaque":
        return node.info["fn"](list(args))
    if op == "log_softmax":
        return jax.nn.log_softmax(x, axis=-1)
    if op == "softmax":
        return jax.nn.softmax(x, axis=-1)
    raise AssertionError(op)  # pragma: no cover


# ----------------------------------------------------------------------------------------------
# Graph clean-up: dead nodes, folding affine maps into the linear map before them.


def _consumers(nodes: list[Node | None], output: int) -> dict[int, list[int]]:
    cons: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, n in enumerate(nodes):
        if n is not None:
            for j in n.inputs:
                cons[j].append(i)
    return cons


def _per_channel(node: Node, lin: Node) -> np.ndarray | None:
    """The constant of a scale/shift node as one value per output channel of `lin`, or None."""
    c = np.asarray(node.info["c"], np.float64)
    shape = lin.shape
    c = np.broadcast_to(c, shape)
    if lin.layer.kind == "dense" and "out_dims" in lin.info:
        k = len(lin.info["out_dims"])
        moved = c.reshape(-1, int(np.prod(shape[len(shape) - k:])))
        return moved[0] if np.all(moved == moved[:1]) else None
    axis = len(shape) - 1 if lin.layer.kind == "dense" else lin.info["channel_axis"]
    moved = np.moveaxis(c, axis, -1).reshape(-1, shape[axis])
    if not np.all(moved == moved[:1]):
        return None
    return moved[0]


def _absorb(nodes: list[Node | None], i: int, j: int, output: int) -> int:
    """Node i has been folded into node j: drop i, let its consumers read j; the new output."""
    nodes[i] = None
    for m in nodes:
        if m is not None:
            m.inputs = tuple(j if k == i else k for k in m.inputs)
    return j if output == i else output


def simplify(nodes: list[Node], output: int) -> tuple[list[Node], int]:
    nodes = list(nodes)
    changed = True
    while changed:
        changed = False
        cons = _consumers(nodes, output)
        for i, n in enumerate(nodes):
            if n is None or n.op not in ("scale", "shift"):
                continue
            j = n.inputs[0]
            lin = nodes[j]
            if lin is None or lin.op != "linear" or len(cons[j]) != 1 or j == output:
                continue
            vec = _per_channel(n, lin)
            if vec is None:
                continue
            lay = lin.layer
            dt = lay.kernel.dtype
            if n.op == "shift":
                b = jnp.zeros(lay.fan_out, dt) if lay.bias is None else lay.bias
                lay = dataclasses.replace(lay, bias=(b + jnp.asarray(vec, dt)))
            else:
                k = lay.kernel * jnp.asarray(vec, dt)
                b = None if lay.bias is None else lay.bias * jnp.asarray(vec, dt)
                lay = dataclasses.replace(lay, kernel=k, bias=b, folded=True)
            nodes[j] = dataclasses.replace(lin, layer=lay)
            output = _absorb(nodes, i, j, output)
            changed = True
            break
        if changed:
            continue
        # a scalar scale after a pool folds into the pool
        for i, n in enumerate(nodes):
            if n is None or n.op != "scale" or np.size(n.info["c"]) == 0:
                continue
            c = np.asarray(n.info["c"])
            if not np.all(c == c.flat[0]):
                continue
            j = n.inputs[0]
            pool = nodes[j]
            if pool is None or pool.op != "pool" or pool.info["kind"] != "sum" \
                    or len(cons[j]) != 1 or j == output:
                continue
            info = dict(pool.info, factor=float(c.flat[0]) * pool.info.get("factor", 1.0))
            nodes[j] = dataclasses.replace(pool, lipschitz=pool.lipschitz * abs(float(c.flat[0])),
                                           info=info)
            output = _absorb(nodes, i, j, output)
            changed = True
            break
    # keep what the output depends on, renumbered in application order
    live = set()
    stack = [output]
    while stack:
        i = stack.pop()
        if i in live:
            continue
        live.add(i)
        stack.extend(nodes[i].inputs)
    live.add(0)
    order = sorted(live)
    index = {old: new for new, old in enumerate(order)}
    out = []
    for old in order:
        n = nodes[old]
        n = dataclasses.replace(n, inputs=tuple(index[k] for k in n.inputs))
        out.append(n)
    return out, index[output]

