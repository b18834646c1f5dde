"""Values the jaxpr interpreter (`_trace.py`) does not read one primitive at a time.

Two kinds: *symbolic* values (`_normalisation.Sym`), started by a reduction of an activation
over its own per-example axes and lowered to a sum/mean pool or a LayerNorm/RMSNorm record when
they leave the symbolic domain; and *opaque* values (`_opaque.Opaque`), an operation no rule
reads recorded as it is, with its reason. `StructuredValues` holds the interpreter's methods
for both; the interpreter provides ``Act``, ``Const``, ``refuse`` and its record helpers.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from genbounds.core._checks import NotBoundable

from . import _normalisation as _norm
from ._elementwise import VAR, evaluate
from ._graph import Node
from ._opaque import Opaque, chunked, per_example


class _Aval:
    """Shape and dtype of a value made here (what `act_out`, `scale` and `shift` read)."""

    def __init__(self, shape, dtype):
        self.shape = tuple(shape)
        self.dtype = dtype


class StructuredValues:
    """Mixin of the jaxpr interpreter: symbolic normalisation values and opaque values."""


    def structured(self, eqn, ins: list, scope: str) -> tuple[list | None, list]:
        """Symbolic normalisation values and opaque values: ``(outputs, None)`` when handled
        here, else ``(None, inputs)`` for the ordinary handlers (with symbolic and opaque
        inputs turned into records)."""
        name = eqn.primitive.name
        aval = eqn.outvars[0].aval
        if any(isinstance(v, Opaque) for v in ins):
            merges = name in ("add", "sub", "concatenate") and any(
                isinstance(v, self.Act) for v in ins)
            if name not in ("dot_general", "conv_general_dilated") and not merges:
                return [self.compose(eqn, ins, scope, None)], ins
            ins = [self.opaque_node(v) if isinstance(v, Opaque) else v for v in ins]
        if name == "reduce_sum":  # a complete normalisation, then pooled: lower it first
            ins = [self.lower(v) if isinstance(v, _norm.Sym) and self.is_norm(v) else v
                   for v in ins]
        syms = [v for v in ins if isinstance(v, _norm.Sym)]
        if syms:
            src = syms[0].src
            ok = name in _norm.SYMBOLIC_PRIMS and all(
                isinstance(v, self.Const) or (isinstance(v, _norm.Sym) and v.src == src)
                or (isinstance(v, self.Act) and self.source_node(v) == src) for v in ins)
            if ok and name == "reduce_sum" and 0 in tuple(eqn.params["axes"]):
                ok = False
            if ok:
                args = []
                for v in ins:
                    if isinstance(v, self.Const):
                        args.append(("c", self.batch_free(v.val)))
                    elif isinstance(v, self.Act):
                        args.append(_norm.X)
                    else:
                        args.append(v.expr)
                expr = ("p", eqn.primitive, dict(eqn.params), *args)
                return [_norm.Sym(src, expr, aval.shape, aval.dtype, scope)], ins
            ins = [self.lower(v) if isinstance(v, _norm.Sym) else v for v in ins]
        if name == "reduce_sum" and isinstance(ins[0], self.Act) \
                and 0 not in tuple(eqn.params["axes"]):
            x = ins[0]
            expr = _norm.X
            sq = x.expr
            while sq is not None and sq.op == "id":  # dtype conversions
                sq = sq.args[0]
            if sq is not None and sq.op == "ipow" and sq.info.get("n") == 2:
                # a sum of squares (a variance or RMS): the square of the pending program's
                # argument, which is materialised as the record the norm reads
                inner = self.Act(x.node, x.shape, x.dtype, expr=sq.args[0], scope=x.scope)
                node = self.materialise(inner, consumer="reduction")
                expr = ("p", jax.lax.square_p, {}, _norm.X)
            else:
                node = self.materialise(x, consumer="reduction")
            sym = ("p", eqn.primitive, dict(eqn.params), expr)
            return [_norm.Sym(node, sym, aval.shape, aval.dtype, scope)], ins
        if name in ("add", "sub") and len(ins) == 2 and isinstance(ins[0], self.Act) \
                and isinstance(ins[1], self.Const) and np.all(np.asarray(ins[1].val) == 0) \
                and tuple(aval.shape) == tuple(ins[0].shape) and (ins[0].expr is None or ins[0].expr is VAR):
            return [ins[0]], ins  # x - 0, x + 0 (Flax's RMSNorm subtracts a zero mean)
        if name in self.elementwise_prims:
            ins = [self.Const(self.batch_free(v.val), v.prov) if isinstance(v, self.Const)
                   else v for v in ins]
        return None, ins

    @staticmethod
    def source_node(v) -> int | None:
        """The record an activation value stands for: its node, or the record its pending
        element-wise program was already materialised into (None if not yet)."""
        if v.expr is None or v.expr is VAR:
            return v.node
        return v._done

    def batch_free(self, val: Any) -> Any:
        """A constant with a leading batch axis along which it does not vary, as one row."""
        arr = np.asarray(val)
        if arr.ndim >= 2 and arr.shape[0] == self.batch and self.batch > 1 \
                and np.all(arr == arr[:1]):
            return arr[:1]
        return val

    def is_norm(self, v) -> bool:
        src_shape = (self.batch,) + tuple(self.nodes[v.src].shape)
        return tuple(v.shape) == src_shape and _norm.read_norm(v.expr, src_shape) is not None

    def lower(self, v) -> Any:
        """A symbolic value leaving the symbolic domain: a sum/mean pool or a normalisation
        record (`_normalisation.py`), or a refusal. Lowered once: every consumer reads the
        same records."""
        if v.done is None:
            v.done = self._lower(v)
        return v.done

    def _lower(self, v) -> Any:
        src_shape = (self.batch,) + tuple(self.nodes[v.src].shape)
        lin = _norm.read_linear(v.expr)
        if lin is not None and 0 not in lin[0]:
            axes, factor = lin
            m = int(np.prod([src_shape[a] for a in axes]))
            aval = _Aval(v.shape, v.dtype)
            info = {"kind": "global_sum", "axes": axes, "window": m}
            pool_shape = tuple(s for i, s in enumerate(src_shape) if i not in axes)
            n = self.add_node(Node("pool", (v.src,), pool_shape[1:], v.scope, math.sqrt(m),
                                   info=info))
            act = self.Act(n, (self.batch,) + pool_shape[1:], v.dtype, scope=v.scope)
            if factor != 1.0:
                act = self.scale(n, np.full(pool_shape[1:], factor), _Aval(act.shape, v.dtype), v.scope)
            if tuple(act.shape) != tuple(aval.shape):
                r = self.add_node(Node("reshape", (act.node,), tuple(aval.shape[1:]), v.scope,
                                       info={"target": tuple(aval.shape[1:])}))
                act = self.act_out(r, aval, v.scope)
            return act
        norm = _norm.read_norm(v.expr, src_shape) if tuple(v.shape) == src_shape else None
        if norm is None:
            raise _norm.refusal(v.scope)
        aval = _Aval(v.shape, v.dtype)
        info = {"kind": norm["kind"], "axes": norm["axes"], "eps": norm["eps"], "d": norm["d"]}
        n = self.add_node(Node("norm", (v.src,), tuple(v.shape[1:]), v.scope,
                               _norm.norm_lipschitz(norm["eps"]), info=info))
        act = self.act_out(n, aval, v.scope)
        if norm["gamma"] is not None:
            act = self.scale(act.node, self.per_example(norm["gamma"], v.shape, v.scope),
                             aval, v.scope)
        if norm["beta"] is not None:
            act = self.shift(act.node, self.per_example(norm["beta"], v.shape, v.scope),
                             aval, v.scope)
        return act

    def getter(self, v) -> tuple[tuple[int, ...], Any]:
        """(nodes read, env -> value) of any value during interpretation."""
        if isinstance(v, self.Const):
            val = v.val
            return (), lambda env: val
        if isinstance(v, self.Act):
            node, e = v.node, v.expr
            return (node,), (lambda env: evaluate(e, env[node])) if e is not None and e is not VAR else \
                (lambda env: env[node])
        if isinstance(v, _norm.Sym):
            src, expr = v.src, v.expr
            return (src,), lambda env: _norm.evaluate(expr, env[src])
        return v.leaves, v.fn

    def compose(self, eqn, ins: list, scope: str, error: NotBoundable | None):
        """An opaque value: `eqn` applied to `ins` as it is."""
        gets = [self.getter(v) for v in ins]
        leaves = tuple(sorted({n for g in gets for n in g[0]}))
        reasons = [v.reason for v in ins if isinstance(v, Opaque)]
        reason = str(error) if error is not None else (reasons[0] if reasons else "")
        prim, params = eqn.primitive, dict(eqn.params)
        fns = [g[1] for g in gets]
        multi = prim.multiple_results

        def fn(env, k=0):
            out = prim.bind(*[f(env) for f in fns], **params)
            return out[k] if multi else out

        outs = []
        for k, var in enumerate(eqn.outvars):
            f = (lambda env, k=k: fn(env, k)) if multi else fn
            outs.append(Opaque(leaves, f, var.aval.shape, var.aval.dtype, scope, reason))
        return outs if multi else outs[0]

    def opaque(self, eqn, ins: list, scope: str, error: NotBoundable) -> list:
        """A refused operation recorded as it is, when it acts on each example separately
        and is not random (`_opaque.py`); otherwise the refusal stands."""
        if any(isinstance(v, self.Const) and "__random__" in v.prov for v in ins):
            raise error
        if not per_example(eqn, self.batch):
            raise error
        out = self.compose(eqn, ins, scope, error)
        return out if eqn.primitive.multiple_results else [out]

    def opaque_node(self, v: Opaque) -> Any:
        if not v.shape or v.shape[0] != self.batch:
            raise self.refuse(v.scope, f"{v.reason} (and its result does not keep the batch axis "
                                   "first)")
        leaves, f = v.leaves, v.fn

        def fn(args, leaves=leaves, f=f):
            return f(dict(zip(leaves, args, strict=True)))

        n = self.add_node(Node("opaque", leaves, tuple(v.shape[1:]), v.scope, math.inf,
                               info={"fn": chunked(fn, self.batch), "reason": v.reason}))
        return self.Act(n, v.shape, v.dtype, scope=v.scope)

    def leave(self, v) -> int:
        """The record of the network's output value."""
        if isinstance(v, Opaque):
            v = self.opaque_node(v)
        elif isinstance(v, _norm.Sym):
            try:
                v = self.lower(v)
            except NotBoundable as e:
                v = self.opaque_node(Opaque((v.src,), self.getter(v)[1], v.shape, v.dtype,
                                            v.scope, str(e)))
        return self.materialise(v)
