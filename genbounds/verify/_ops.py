r"""The records of a traced network as bound propagation reads them.

Each record of a `genbounds.Network` (`_graph.py` in the network package evaluates them) is
classified once:

* **affine** (``linear`` — dense or convolution with its geometry, BatchNorm folded in —,
  ``scale``, ``shift``, ``reshape``, ``add``, ``concat``, sum and average ``pool``):
  $y = L(x_1, \dots, x_m) + b$. The linear part $L$ is the record evaluated without its
  constant (bias or shift), so its transpose, which backward propagation needs, is obtained by
  `jax.linear_transpose` of that function — every convolution's padding, strides and layout
  is handled by JAX, no transposed kernel is written by hand; $b$ is the record evaluated at 0.
  Interval propagation uses $|L|$ (the record with every coefficient replaced by its absolute
  value) on the radius of a box;
* **activation**: an element-wise function proved piecewise linear and positively homogeneous
  with at most two pieces (ReLU, leaky ReLU, PReLU with learnt slopes, ``-relu(-t)``, ``|t|``):
  $g(t) = a\,t + d\,\mathrm{relu}(t)$ per element, $a = -g(-1)$, $d = g(1) + g(-1)$ (exact for
  such functions: $g(t) = g(1)\,t$ for $t \ge 0$ and $g(-1)\,|t|$ for $t \le 0$);
* **max** and **min pooling**: monotone, so interval propagation maps $[l, u]$ to
  $[f(l), f(u)]$; linear propagation uses the relaxation of `_pooling.py`;
* everything else (an activation that is not such a function — GELU, tanh, hard tanh, ReLU6 —,
  LayerNorm/RMSNorm, attention and other opaque records, softmax inside the network) is refused
  by name with `NotBoundable`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from genbounds.core._checks import NotBoundable
from genbounds.network._graph import Node, eval_node
from genbounds.network._network import Network

from ._rounding import terms

AFFINE = ("linear", "scale", "shift", "reshape", "add", "concat")
_SUM_POOLS = ("sum", "global_sum")
_MONOTONE_POOLS = ("max", "global_max", "global_min")  # (no windowed min is traced)


@dataclasses.dataclass(frozen=True)
class Op:
    r"""One record, as bound propagation reads it.

    Attributes:
      kind: ``"input"``, ``"affine"``, ``"act"`` or ``"monotone"`` (max/min pooling).
      inputs: the indices of the records it reads.
      shape: its output shape per example.
      full: the record as a function of a list of batched inputs (``"affine"``, ``"monotone"``).
      lin: its linear part (``"affine"``).
      absl: its linear part with absolute coefficients (``"affine"``, interval propagation).
      slope_neg, slope_jump: $a$ and $d$ of $g(t) = a t + d\,\mathrm{relu}(t)$ (``"act"``),
        arrays of the record's shape.
      name: what the record is, for messages.
      terms: the most terms of any sum its linear part or that part's transpose computes
        (``"affine"``; ``"monotone"``: the window's size; for the rounding enclosure,
        `_rounding.py`).
      pool: the pool's kind and geometry (``"monotone"``: the record's ``info``).
      permutes: a reshape or transpose (``"affine"``): its entries are its input's.
    """

    kind: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    full: Callable | None = None
    lin: Callable | None = None
    absl: Callable | None = None
    slope_neg: np.ndarray | None = None
    slope_jump: np.ndarray | None = None
    name: str = ""
    terms: int = 1
    pool: dict | None = None
    permutes: bool = False


def with_dtype(node: Node, dtype) -> Node:
    return dataclasses.replace(node, info={**node.info, "dtype": dtype})


def _fn(node: Node) -> Callable:
    if node.op == "pool" and node.info["kind"] == "sum":
        return lambda args, n=node: _sum_pool(n, args[0])
    return lambda args, n=node: eval_node(n, list(args))


def _sum_pool(node: Node, x: jnp.ndarray) -> jnp.ndarray:
    """A sum (average) pool as `_graph.py` evaluates it, with a Python-scalar initial value so
    that JAX reads it as a windowed sum, which has a transpose rule."""
    p = node.info["params"]
    y = lax.reduce_window(x, 0.0, lax.add, p["window_dimensions"], p["window_strides"],
                          p["padding"], p["base_dilation"], p["window_dilation"])
    return y * jnp.asarray(node.info.get("factor", 1.0), x.dtype)


def _abs_node(node: Node) -> Node:
    """The record with every coefficient replaced by its absolute value, and no constant."""
    op = node.op
    if op == "linear":
        lay = dataclasses.replace(node.layer, kernel=jnp.abs(node.layer.kernel), bias=None)
        return dataclasses.replace(node, layer=lay)
    if op == "scale":
        return dataclasses.replace(node, info={**node.info, "c": np.abs(np.asarray(
            node.info["c"]))})
    if op == "add":
        c0, c1 = node.info["coef"]
        return dataclasses.replace(node, info={**node.info, "coef": (abs(c0), abs(c1))})
    if op == "pool":
        return dataclasses.replace(node, info={**node.info, "factor": abs(
            node.info.get("factor", 1.0))})
    return node


def _linear_node(node: Node) -> Node | None:
    """The record without its constant; None for a pure shift (its linear part is the
    identity)."""
    if node.op == "linear" and node.layer.bias is not None:
        return dataclasses.replace(node, layer=dataclasses.replace(node.layer, bias=None))
    if node.op == "shift":
        return None
    return node


def _identity(args):
    return args[0]


def _activation_slopes(node: Node, dtype) -> tuple[np.ndarray, np.ndarray]:
    act = node.activation
    if not (act.pieces is not None and act.pieces <= 2 and act.homogeneous):
        kind = ("piecewise linear with a breakpoint away from 0" if act.pieces is not None
                else "not piecewise linear")
        raise NotBoundable(
            f"bound propagation has no relaxation for the activation {act.name!r} "
            f"(g(t) = {act.formula}): it is {kind}; only positively homogeneous functions "
            "with at most two linear pieces (ReLU, leaky ReLU, PReLU, |t|) are relaxed")
    one = jnp.ones((1,) + tuple(node.shape), dtype)
    gp = np.asarray(act.fn(one), np.float64)[0]
    gm = np.asarray(act.fn(-one), np.float64)[0]
    return -gm, gp + gm


def affine_op(node: Node, name: str) -> Op:
    """The `Op` of an affine record (its dtype already set by `with_dtype`). Its functions
    close over the record's coefficients, which may be traced arrays (the parameters during
    training, `genbounds.train`): everything here is differentiable in them."""
    ln = _linear_node(node)
    lin = _identity if ln is None else _fn(ln)
    return Op("affine", node.inputs, tuple(node.shape), full=_fn(node), lin=lin,
              absl=_identity if ln is None else _fn(_abs_node(ln)), name=name)


def _monotone_op(node: Node, shape_in: tuple[int, ...], name: str) -> Op:
    """The `Op` of a max or min pool; refused where some window holds only padding (its
    output is $-\\infty$ whatever the input)."""
    info = node.info
    if info["kind"].startswith("global_"):
        batched = (1,) + tuple(shape_in)
        size = int(np.prod([batched[a] for a in info["axes"]]))
    else:
        p = info["params"]
        size = int(np.prod(p["window_dimensions"]))
        ones = np.ones((1,) + tuple(shape_in), np.float32)
        with jax.ensure_compile_time_eval():  # the geometry is static, even under a trace
            count = lax.reduce_window(ones, 0.0, lax.add, p["window_dimensions"],
                                      p["window_strides"], p["padding"], p["base_dilation"],
                                      p["window_dilation"])
        if np.any(np.asarray(count) == 0):
            raise NotBoundable(f"bound propagation cannot relax {name}: some of its windows "
                               "hold only padding (their maximum is -inf)")
    return Op("monotone", node.inputs, tuple(node.shape), full=_fn(node), name=name,
              terms=size, pool=dict(info))


def read_ops(net: Network, dtype, *, output: int | None = None) -> list[Op]:
    """The records up to ``output`` (default the network's output) as `Op` s, or
    `NotBoundable` naming the first record no relaxation covers."""
    if net.source != "trace":
        raise NotBoundable("bound propagation needs a network traced from its function "
                           "(Network.trace or apply_fn with X); a network read from parameter "
                           "names only assumes its structure")
    out = net.output if output is None else output
    ops: list[Op] = []
    for i, node in enumerate(net.nodes[:out + 1]):
        where = f"record {i} ({node.scope or node.op})"
        if node.op == "input":
            ops.append(Op("input", (), tuple(node.shape), name="input"))
            continue
        n = with_dtype(node, dtype)
        if node.op in AFFINE or (node.op == "pool" and node.info["kind"] in _SUM_POOLS):
            size_in = max(int(np.prod(net.nodes[j].shape)) for j in node.inputs)
            op = affine_op(n, f"{where}: {node.describe()}")
            ops.append(dataclasses.replace(op, terms=terms(node, size_in,
                                                                 int(np.prod(node.shape))),
                                           permutes=node.op == "reshape"))
        elif node.op == "pool" and node.info["kind"] in _MONOTONE_POOLS:
            ops.append(_monotone_op(n, net.nodes[node.inputs[0]].shape,
                                    f"{where}: {node.describe()}"))
        elif node.op == "activation":
            a, d = _activation_slopes(n, dtype)
            ops.append(Op("act", node.inputs, tuple(node.shape), slope_neg=a, slope_jump=d,
                          name=f"{where}: {node.activation.name}"))
        else:
            what = node.describe()
            raise NotBoundable(f"bound propagation cannot relax {where}: {what} (no linear "
                               "relaxation of this operation is implemented)")
    return ops


def _exact_in_float32(a) -> bool:
    a = np.asarray(a)
    if a.dtype.itemsize <= 4 and a.dtype.kind in "fiub":
        return True
    with np.errstate(over="ignore"):
        return bool(np.all(a.astype(np.float32).astype(a.dtype) == a))


def float32_records(net: Network, upto: int) -> bool:
    """Whether the records up to ``upto`` are the same functions in float32: every kernel and
    bias stored in float32 or narrower, every other constant exactly representable in it."""
    for node in net.nodes[:upto + 1]:
        if node.op == "linear":
            arrays = [node.layer.kernel] + ([] if node.layer.bias is None else [node.layer.bias])
            if any(np.dtype(a.dtype).itemsize > 4 for a in arrays):
                return False
        elif node.op in ("scale", "shift") and not _exact_in_float32(node.info["c"]):
            return False
        elif node.op == "add" and not _exact_in_float32(node.info["coef"]):
            return False
        elif node.op == "pool" and not _exact_in_float32(node.info.get("factor", 1.0)):
            return False
    return True


def logit_node(net: Network) -> tuple[int, str | None]:
    """The record whose values are the logits, and a note when a final (log-)softmax was
    stripped: $\\log\\mathrm{softmax}$ and softmax preserve the order of the logits, so the
    sign of every margin $f_y - f_j$ is that of the logits before them."""
    node = net.nodes[net.output]
    if node.op in ("log_softmax", "softmax"):
        return node.inputs[0], (f"the final {node.op} was stripped: it preserves the order of "
                                "the logits, so the signs of the margins are those before it")
    return net.output, None
