"""Operations the trace records without reading them: ``opaque`` records.

A network may hold operations no Lipschitz rule covers (attention, where activations multiply
each other; gating; an element-wise function no rule reads). Refusing the whole network would
also refuse what needs no such rule: parameter counts, weight norms, distances from
initialisation, and the stochastic PAC-Bayes bounds, which need only ``apply_fn``. So where the
jaxpr interpreter (`_trace.py`) cannot read an operation, it records the sub-computation as
it is: an ``opaque`` record whose inputs are the records it reads and whose function re-binds
the primitives (so the network's re-evaluation still reproduces ``apply_fn``), with the reason
it could not be read. Every quantity that needs a Lipschitz constant refuses such a network
with that reason; the linear maps around it (the query, key, value and output projections of
attention, say) are still recorded.

An operation is recorded opaquely only when it acts on each example separately (the batch axis
stays first, nothing reduces, contracts, reshapes or indexes across it) and is not random; any
other refusal (a batch statistic, Dropout in training mode) still refuses the trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import NotBoundable

# Primitives that act on each example separately whatever their parameters, as long as the
# batch axis stays first (checked on the shapes).
_PER_EXAMPLE = {
    "neg", "sign", "floor", "ceil", "round", "is_finite", "exp", "exp2", "log", "log1p",
    "expm1", "tanh", "logistic", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
    "asinh", "acosh", "atanh", "sqrt", "rsqrt", "cbrt", "abs", "integer_pow", "square", "erf",
    "erfc", "erf_inv", "lgamma", "digamma", "convert_element_type", "copy", "copy_p", "not",
    "add", "sub", "mul", "div", "rem", "pow", "max", "min", "atan2", "nextafter", "and", "or",
    "xor", "eq", "ne", "ge", "gt", "le", "lt", "select_n", "clamp", "reduce_precision",
    "stop_gradient", "optimization_barrier", "custom_jvp_call", "custom_vjp_call",
    "pjit", "jit", "closed_call",
}


class Opaque:
    """A value computed from some nodes' outputs by operations the trace does not read.

    ``fn(env)`` computes it from ``env``, a mapping from node index to that node's value;
    ``leaves`` are the nodes it reads."""

    __slots__ = ("leaves", "fn", "shape", "dtype", "scope", "reason")

    def __init__(self, leaves: tuple[int, ...], fn: Callable, shape, dtype, scope: str,
                 reason: str):
        self.leaves = leaves
        self.fn = fn
        self.shape = tuple(shape)
        self.dtype = dtype
        self.scope = scope
        self.reason = reason


def per_example(eqn: Any, batch: int) -> bool:
    """Whether `eqn` acts on each example separately (batch axis first in and out)."""
    name = eqn.primitive.name
    p = eqn.params
    for v in list(eqn.outvars):
        shape = getattr(v.aval, "shape", ())
        if not shape or shape[0] != batch:
            return False
    if name in _PER_EXAMPLE:
        return True
    if name == "dot_general":
        (lc, rc), (lb, rb) = p["dimension_numbers"]
        shapes = [getattr(v.aval, "shape", ()) for v in eqn.invars]
        lhs_b = bool(shapes[0]) and shapes[0][0] == batch
        rhs_b = bool(shapes[1]) and shapes[1][0] == batch
        if lhs_b and rhs_b:
            return tuple(lb[:1]) == (0,) and tuple(rb[:1]) == (0,)
        if lhs_b:
            return 0 not in lc and not lb
        return False
    if name in ("reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin",
                "reduce_prod", "reduce_and", "reduce_or"):
        return 0 not in tuple(p["axes"])
    if name in ("cumsum", "cumlogsumexp", "cummax", "cummin", "cumprod"):
        return int(p["axis"]) != 0
    if name == "transpose":
        return tuple(p["permutation"])[:1] == (0,)
    if name in ("reshape", "expand_dims", "squeeze"):
        return True  # the batch axis is first and of the same size in and out (above)
    if name == "broadcast_in_dim":
        ins = getattr(eqn.invars[0].aval, "shape", ())
        return bool(ins) and ins[0] == batch and tuple(p["broadcast_dimensions"])[:1] == (0,)
    if name == "concatenate":
        return int(p["dimension"]) != 0
    if name in ("reduce_window_sum", "reduce_window_max", "reduce_window_min"):
        return int(p["window_dimensions"][0]) == 1 and int(p["window_strides"][0]) == 1
    if name == "sort":
        return int(p["dimension"]) != 0
    if name == "pad":
        return tuple(p["padding_config"][0]) == (0, 0, 0)
    return False


def chunked(fn: Callable[[list], jax.Array], batch: int) -> Callable[[list], jax.Array]:
    """`fn` (whose primitives were traced for `batch` examples) on any number of examples:
    in chunks of `batch`, the last one padded by repeating its last example (each example is
    computed separately, so the padding changes nothing)."""

    def run(args: list) -> jax.Array:
        n = int(args[0].shape[0]) if args else batch
        if n == batch:
            return fn(args)
        outs = []
        for s in range(0, n, batch):
            part = [a[s:s + batch] for a in args]
            k = int(part[0].shape[0])
            if k < batch:
                part = [jnp.concatenate([a, jnp.repeat(a[-1:], batch - k, axis=0)]) for a in part]
            outs.append(fn(part)[:k])
        return jnp.concatenate(outs)

    return run


def refusal(reason: str) -> NotBoundable:
    return NotBoundable(f"{reason}; the network holds it as an opaque record, so no Lipschitz "
                        "constant (and no quantity built on one) covers it")


def opaque_lipschitz() -> float:
    return math.inf


def check_no_opaque(nodes: Any, caller: str, upto: int | None = None) -> None:
    """Raises `NotBoundable` naming the first opaque record (up to node `upto`)."""
    last = len(nodes) - 1 if upto is None else upto
    for n in list(nodes)[1:last + 1]:
        if n.op == "opaque":
            where = f"layer {n.scope!r}" if n.scope else "an operation"
            raise NotBoundable(f"{caller}: {where} is not read by any Lipschitz rule: "
                               f"{n.info.get('reason', 'not covered')}")


def as_float64(x: Any) -> np.ndarray:
    return np.asarray(x, np.float64)
