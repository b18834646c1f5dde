r"""The jaxpr interpreter behind ``Network.trace(apply_fn, params, x)``.

The network is traced to a jaxpr (``jax.make_jaxpr`` of ``x -> apply_fn(params, x)`` with the
parameters as inputs, so every constant knows which parameters it came from) and the jaxpr is
interpreted once (`trace_records`) into a graph of *records* (`Node`), in application order:

* ``linear``: a ``dot_general`` or ``conv_general_dilated`` whose second operand is computed from
  the parameters alone: a `Layer` with the kernel in Flax layout ((in, out) for dense,
  (*window, in, out) for conv, dilation and feature groups materialised into a full kernel), the
  real strides, explicit padding and input shape, its bias, and the ``params`` path of its kernel;
* ``activation``: an element-wise function, read as a program and analysed by rules per
  primitive (`_elementwise.py`): its Lipschitz constant is a theorem about the program, and
  what cannot be bounded (a discontinuous select, ``round``, ``sign``, ...) is refused by name
  (docs/networks.md);
* ``pool``: max or sum pooling (``reduce_window``; average pooling is a sum pool times a scalar),
  global max/sum reductions; Lipschitz constants from the window overlap (below);
* ``reshape``: reshape/transpose of the features (a permutation: Lipschitz 1);
* ``scale``/``shift``: element-wise affine maps by constants; the ones that follow a linear map
  and act per output channel are folded into it (a bias, BatchNorm in inference mode);
* ``add`` (residual connections, branches that merge) and ``concat``; ``log_softmax`` at the
  output (it leaves every margin unchanged).

What cannot be bounded by the weights is refused with the module named: data-dependent
normalisation (LayerNorm, RMSNorm, GroupNorm, BatchNorm with batch statistics), products of two
activations (attention, gating), random ops (Dropout in training mode), unknown element-wise
functions and control flow on activations.

**Lipschitz constants of pooling** (for the $\ell_2$ norm). A max pool with window $k_d$, stride
$s_d$ and window dilation $r_d$ covers each input position by at most
$c_d = \min(k_d, \lceil((k_d-1) r_d + 1)/s_d\rceil)$ windows per axis, and
$|\max_W a - \max_W b| \le \max_W |a - b| \le \|a - b\|_{2,W}$, so summing over windows
$\|P a - P b\|_2^2 \le (\prod_d c_d)\|a - b\|_2^2$: Lipschitz $\sqrt{\prod_d c_d}$ (1 for
non-overlapping windows). A sum pool is linear; by Cauchy-Schwarz each output is at most
$\sqrt{\prod_d k_d}$ times the norm of its window, so its norm is at most
$\sqrt{\prod_d k_d c_d}$ (an average pool, times $1/\prod_d k_d$: $\sqrt{\prod_d c_d/k_d}$,
exact for non-overlapping windows). A global max over $m$ positions is 1-Lipschitz, a global sum
$\sqrt m$.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

from genbounds.core._checks import NotBoundable
from genbounds.core._dtypes import analysis_dtype, default_tolerance

from ._elementwise import VAR, Expr, apply, constant, decompose
from ._graph import Node, simplify
from ._layers import _KERNEL_NAMES, ConvSpec, Layer
from ._structured import StructuredValues

_CALL_PRIMS = {"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint",
               "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "remat2"}
_ELEMENTWISE = {
    "neg", "sign", "floor", "ceil", "round", "is_finite", "exp", "exp2", "log", "log1p",
    "expm1", "tanh", "logistic", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
    "asinh", "acosh", "atanh", "sqrt", "rsqrt", "cbrt", "abs", "integer_pow", "square", "erf",
    "erfc", "erf_inv", "lgamma", "digamma", "convert_element_type", "copy", "copy_p", "not",
    "add", "sub", "mul", "div", "rem", "pow", "max", "min", "atan2", "nextafter", "and", "or",
    "xor", "eq", "ne", "ge", "gt", "le", "lt", "select_n", "clamp", "reduce_precision",
    "stop_gradient", "optimization_barrier",
}
_RANDOM_PRIMS = {"random_bits", "random_seed", "random_wrap", "random_unwrap",
                 "threefry2x32", "random_fold_in", "random_split"}
# Modules whose presence explains a refusal better than the primitive that triggered it.
_MODULE_REASONS = (
    ("layernorm", "LayerNorm is not Lipschitz-bounded by its weights (it divides by a "
                  "statistic of its own input)"),
    ("rmsnorm", "RMSNorm is not Lipschitz-bounded by its weights (it divides by the norm of its "
                "own input)"),
    ("groupnorm", "GroupNorm is not Lipschitz-bounded by its weights (it divides by statistics "
                  "of its own input)"),
    ("instancenorm", "InstanceNorm is not Lipschitz-bounded by its weights"),
    ("batchnorm", "BatchNorm with batch statistics (training mode) depends on the other "
                  "examples of the batch; trace it in inference mode (use_running_average=True "
                  "in linen, model.eval() in nnx), where it is an affine map that is folded"),
    ("attention", "attention multiplies activations with each other; no bound here covers it"),
    ("dropout", "Dropout in training mode is random; trace the network in evaluation mode "
                "(deterministic=True in linen, model.eval() in nnx)"),
)


def _refuse(scope: str, detail: str) -> NotBoundable:
    low = scope.lower().replace("_", "")
    for key, reason in _MODULE_REASONS:
        if key in low:
            return NotBoundable(f"layer {scope!r}: {reason} ({detail})")
    where = f"layer {scope!r}" if scope else "the network"
    return NotBoundable(f"{where}: {detail}")



# ----------------------------------------------------------------------------------------------
# Values during interpretation.


class _Const:
    """A value computed from the parameters (and literals) alone."""

    __slots__ = ("val", "prov")

    def __init__(self, val: Any, prov: frozenset):
        self.val = val
        self.prov = prov


class _Act:
    """A value that depends on the input: node output, possibly under a pending element-wise
    program ``expr`` of that output (analysed when a non-element-wise operation reads it)."""

    __slots__ = ("node", "expr", "shape", "dtype", "scope", "_done")

    def __init__(self, node: int, shape, dtype, expr: Expr | None = None, scope: str = ""):
        self.node = node
        self.expr = expr
        self.shape = tuple(shape)
        self.dtype = dtype
        self.scope = scope
        self._done: int | None = None


def _path_name(path: tuple) -> str:
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    if parts and parts[0] in ("params", "batch_stats") and len(parts) > 1:
        parts = parts[1:]
    return "/".join(parts)


def _layer_path(leaf_path: str) -> str:
    parts = leaf_path.split("/")
    if len(parts) > 1 and parts[-1] in _KERNEL_NAMES:
        parts = parts[:-1]
    return "/".join(parts)


class _Interpreter(StructuredValues):
    Act = _Act
    Const = _Const
    elementwise_prims = _ELEMENTWISE
    refuse = staticmethod(_refuse)

    def __init__(self, leaf_paths: Sequence[str], batch: int, tol: float):
        self.nodes: list[Node] = []
        self._materialised: dict[tuple[int, int], tuple[Expr, int]] = {}
        self.leaf_paths = list(leaf_paths)
        self.batch = batch
        self.tol = tol
        self.used_paths: dict[str, int] = {}
        self.labels: list[str] = []  # names of the jax functions being interpreted (relu, elu)

    # -- helpers --------------------------------------------------------------------------

    def add_node(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def materialise(self, v: _Act, consumer: str = "") -> int:
        if v.expr is None or v.expr is VAR:
            return v.node
        if v._done is not None:
            return v._done
        same = self._materialised.get((v.node, id(v.expr)))
        if same is not None:  # the same pending program reached by another value
            v._done = same[1]
            return v._done
        if np.dtype(v.dtype) == bool:
            raise _refuse(v.scope, "a comparison of activations is used by a non-element-wise "
                                   "operation")
        shape = tuple(v.shape[1:])
        try:
            records = decompose(v.expr, shape)
        except NotBoundable as e:
            if consumer == "reduction":
                raise _refuse(v.scope, "a reduction of a non-linear function of the activations: "
                                       "a data-dependent normalisation (a variance or norm of "
                                       "the layer's own input, as in LayerNorm, RMSNorm, "
                                       f"GroupNorm) is not Lipschitz-bounded by its weights; {e}"
                              ) from None
            raise _refuse(v.scope, str(e)) from None
        node = v.node
        for kind, val in records:
            if kind == "activation":
                node = self.add_node(Node("activation", (node,), shape, v.scope, val.lipschitz,
                                          activation=val))
            else:
                lip = float(np.max(np.abs(val))) if kind == "scale" else 1.0
                node = self.add_node(Node(kind, (node,), shape, v.scope, lip,
                                          info={"c": np.asarray(val, np.float64)}))
        v._done = node
        self._materialised[(v.node, id(v.expr))] = (v.expr, node)  # the expr kept alive with its id
        return node

    def act_out(self, node: int, aval, scope: str) -> _Act:
        return _Act(node, aval.shape, aval.dtype, scope=scope)

    def per_example(self, val: Any, act_shape: tuple, scope: str) -> np.ndarray:
        arr = np.asarray(val)
        if arr.ndim == len(act_shape):
            if arr.shape[0] != 1:
                raise _refuse(scope, "a constant with a batch axis is combined with activations")
            arr = arr[0]
        try:
            return np.broadcast_to(arr, act_shape[1:]).astype(np.float64)
        except ValueError:
            raise _refuse(scope, f"a constant of shape {arr.shape} does not broadcast to the "
                                 f"activations {act_shape[1:]}") from None

    def shift(self, node: int, c: np.ndarray, aval, scope: str) -> _Act:
        n = self.add_node(Node("shift", (node,), tuple(aval.shape[1:]), scope,
                               info={"c": np.asarray(c, np.float64)}))
        return self.act_out(n, aval, scope)

    def scale(self, node: int, c: np.ndarray, aval, scope: str) -> _Act:
        lip = float(np.max(np.abs(c))) if np.size(c) else 0.0
        n = self.add_node(Node("scale", (node,), tuple(aval.shape[1:]), scope, lip,
                               info={"c": np.asarray(c, np.float64)}))
        return self.act_out(n, aval, scope)

    def const_prov_path(self, c: _Const, shape, scope: str) -> str:
        paths = sorted(c.prov)
        if not paths:
            return scope or "const"
        main = [p for p in paths if p.split("/")[-1] in _KERNEL_NAMES]
        name = _layer_path((main or paths)[0])
        count = self.used_paths.get(name, 0) + 1
        self.used_paths[name] = count
        return name if count == 1 else f"{name}#{count}"

    # -- interpretation -------------------------------------------------------------------

    def run(self, closed, args: Sequence[Any], scope: str = "") -> list[Any]:
        jaxpr = closed.jaxpr if hasattr(closed, "jaxpr") else closed
        consts = closed.consts if hasattr(closed, "consts") else ()
        env: dict = {}
        for var, c in zip(jaxpr.constvars, consts, strict=True):
            env[var] = _Const(c, frozenset())
        for var, a in zip(jaxpr.invars, args, strict=True):
            env[var] = a

        def read(a):
            if isinstance(a, jcore.Literal):
                return _Const(np.asarray(a.val, dtype=a.aval.dtype), frozenset())
            return env[a]

        for eqn in jaxpr.eqns:
            inner = str(eqn.source_info.name_stack)
            sc = "/".join(s for s in (scope, inner) if s)
            ins = [read(a) for a in eqn.invars]
            outs = self.eqn(eqn, ins, sc)
            for var, o in zip(eqn.outvars, outs, strict=True):
                if not isinstance(var, jcore.DropVar):
                    env[var] = o
        return [read(v) for v in jaxpr.outvars]

    def eqn(self, eqn, ins: list, scope: str) -> list:
        name = eqn.primitive.name
        if name in _CALL_PRIMS:
            sub = (eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr")
                   or eqn.params.get("fun_jaxpr"))
            if sub is not None:
                fname = eqn.params.get("name", "")
                if fname in ("log_softmax", "softmax") and len(ins) == 1 \
                        and isinstance(ins[0], _Act):
                    return [self.output_softmax(fname, eqn, ins, scope)]
                generic = not fname or fname.startswith("_") or "lambda" in fname
                if not generic:
                    self.labels.append(fname)
                try:
                    return self.run(sub, ins, scope)
                finally:
                    if not generic:
                        self.labels.pop()
        if all(isinstance(v, _Const) for v in ins):
            if name in _RANDOM_PRIMS:
                prov = frozenset({"__random__"})
            else:
                prov = frozenset().union(*[v.prov for v in ins]) if ins else frozenset()
            with jax.ensure_compile_time_eval():
                out = eqn.primitive.bind(*[v.val for v in ins], **eqn.params)
            outs = out if eqn.primitive.multiple_results else [out]
            return [_Const(o, prov) for o in outs]
        try:
            done, args = self.structured(eqn, ins, scope)
            if done is not None:
                return done
            if name in _ELEMENTWISE:
                return [self.elementwise(eqn, args, scope)]
            handler = getattr(self, "p_" + name, None)
            if handler is None:
                raise _refuse(scope, f"the operation {name!r} on activations is not supported")
            return handler(eqn, args, scope)
        except NotBoundable as e:
            return self.opaque(eqn, ins, scope, e)

    # -- element-wise ---------------------------------------------------------------------

    def elementwise(self, eqn, ins: list, scope: str):
        name = eqn.primitive.name
        aval = eqn.outvars[0].aval
        acts = [v for v in ins if isinstance(v, _Act)]
        consts = [v for v in ins if isinstance(v, _Const)]
        if any("__random__" in c.prov for c in consts):
            raise _refuse(scope, "a random mask multiplies the activations")
        origins = {a.node for a in acts}
        if len(origins) == 1:
            # One element-wise program of one node's output: keep it pending.
            args = []
            for v in ins:
                if isinstance(v, _Act):
                    args.append(v.expr if v.expr is not None else VAR)
                else:
                    try:
                        args.append(constant(v.val, acts[0].shape))
                    except NotBoundable as e:
                        raise _refuse(scope, str(e)) from None
            label = self.labels[-1] if self.labels else None
            expr = apply(eqn.primitive, eqn.params, args, aval.dtype, label)
            return _Act(acts[0].node, aval.shape, aval.dtype, expr=expr, scope=scope)
        if len(acts) == 2 and len(ins) == 2 and name in ("add", "sub"):
            n0, n1 = (self.materialise(a) for a in acts)
            s0, s1 = (tuple(a.shape[1:]) for a in acts)
            if s0 != s1:
                raise _refuse(scope, f"adds activations of shapes {s0} and {s1} (broadcasting)")
            coef = (1.0, 1.0 if name == "add" else -1.0)
            node = self.add_node(Node("add", (n0, n1), tuple(aval.shape[1:]), scope,
                                      info={"coef": coef}))
            return self.act_out(node, aval, scope)
        raise _refuse(scope, f"{name!r} combines two different activations (a product or "
                             "comparison of activations is not Lipschitz-bounded by weights)")

    # -- linear maps ----------------------------------------------------------------------

    def p_dot_general(self, eqn, ins, scope):
        """``x @ W`` over any axes: the contracted axes of ``x`` against the weights, applied
        independently at every position of the other axes of ``x`` (tokens, patches, heads).
        The operator on one example is $I_P \\otimes W$ ($P$ positions, $W$ the kernel as an
        (in, out) matrix), whose norm is $\\|W\\|$ (exact)."""
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        x, w = ins
        aval = eqn.outvars[0].aval
        if not isinstance(x, _Act) or not isinstance(w, _Const):
            if isinstance(x, _Act) and isinstance(w, _Act):
                raise _refuse(scope, "a matrix product of two activations (e.g. attention) is "
                                     "not Lipschitz-bounded by weights")
            raise _refuse(scope, "a matrix product with the weights on the left (W @ x with the "
                                 "batch axis last) is not read as a linear map; write x @ W")
        if lb or rb:
            raise _refuse(scope, "a batched matrix product with weights (one weight matrix per "
                                 "position or head) is not read as a linear map")
        lc, rc = tuple(int(a) for a in lc), tuple(int(a) for a in rc)
        if 0 in lc:
            raise _refuse(scope, "a matrix product that contracts the batch axis")
        node = self.materialise(x)
        kernel = np.asarray(w.val)
        wfree = tuple(i for i in range(kernel.ndim) if i not in rc)
        fan_in = int(np.prod([kernel.shape[i] for i in rc]))
        out_dims = tuple(int(kernel.shape[i]) for i in wfree)
        kernel = np.transpose(kernel, rc + wfree).reshape(fan_in, int(np.prod(out_dims)))
        contract = tuple(a - 1 for a in lc)
        positions = int(np.prod([s for i, s in enumerate(x.shape[1:]) if i not in contract]))
        path = self.const_prov_path(w, kernel.shape, scope)
        layer = Layer(path=path, kind="dense", kernel=analysis_dtype(kernel))
        info = {"dtype": aval.dtype}
        if len(x.shape) != 2 or len(out_dims) != 1:
            info.update(contract=contract, out_dims=out_dims, positions=positions)
        n = self.add_node(Node("linear", (node,), tuple(aval.shape[1:]), scope, layer=layer,
                               info=info))
        return [self.act_out(n, aval, scope)]

    def p_conv_general_dilated(self, eqn, ins, scope):
        x, w = ins
        p = eqn.params
        aval = eqn.outvars[0].aval
        if not isinstance(x, _Act) or not isinstance(w, _Const):
            raise _refuse(scope, "a convolution whose kernel depends on the input")
        if any(d != 1 for d in p["lhs_dilation"]):
            raise _refuse(scope, "a transposed (input-dilated) convolution is not supported")
        if p.get("batch_group_count", 1) != 1:
            raise _refuse(scope, "batch_group_count > 1 is not supported")
        node = self.materialise(x)
        dn = p["dimension_numbers"]
        lhs, rhs, out = dn.lhs_spec, dn.rhs_spec, dn.out_spec
        k = np.asarray(w.val)
        # HWIO: spatial..., in, out
        k = np.transpose(k, tuple(rhs[2:]) + (rhs[1], rhs[0]))
        dil = tuple(int(d) for d in p["rhs_dilation"])
        if any(d != 1 for d in dil):
            window = tuple((s - 1) * d + 1 for s, d in zip(k.shape[:-2], dil, strict=True))
            full = np.zeros(window + k.shape[-2:], k.dtype)
            full[tuple(slice(None, None, d) for d in dil)] = k
            k = full
        groups = int(p["feature_group_count"])
        if groups != 1:
            cin_g, cout = k.shape[-2], k.shape[-1]
            full = np.zeros(k.shape[:-2] + (cin_g * groups, cout), k.dtype)
            og = cout // groups
            for g_ in range(groups):
                full[..., g_ * cin_g:(g_ + 1) * cin_g, g_ * og:(g_ + 1) * og] = \
                    k[..., :, g_ * og:(g_ + 1) * og]
            k = full
        in_perm = (lhs[0],) + tuple(lhs[2:]) + (lhs[1],)
        spatial = tuple(int(x.shape[i]) for i in lhs[2:])
        nsp = len(spatial)
        # output array axis j takes NHWC axis out_perm[j]
        out_perm = [0] * (nsp + 2)
        out_perm[out[0]] = 0
        out_perm[out[1]] = nsp + 1
        for i, d in enumerate(out[2:]):
            out_perm[d] = 1 + i
        padding = tuple((int(lo), int(hi)) for lo, hi in p["padding"])
        strides = tuple(int(s) for s in p["window_strides"])
        spec = ConvSpec(strides=strides, padding=padding, input_shape=spatial)
        path = self.const_prov_path(w, k.shape, scope)
        layer = Layer(path=path, kind="conv", kernel=analysis_dtype(k), conv=spec)
        info = {"in_perm": in_perm, "out_perm": tuple(out_perm), "channel_axis": out[1] - 1,
                "dtype": aval.dtype}
        n = self.add_node(Node("linear", (node,), tuple(aval.shape[1:]), scope, layer=layer,
                               info=info))
        return [self.act_out(n, aval, scope)]

    # -- structure-preserving ops ---------------------------------------------------------

    def _reshape_like(self, eqn, ins, scope, *, perm=None):
        x = ins[0]
        if not isinstance(x, _Act) or any(isinstance(v, _Act) for v in ins[1:]):
            raise _refuse(scope, f"{eqn.primitive.name} with activation-dependent arguments")
        aval = eqn.outvars[0].aval
        if not aval.shape or aval.shape[0] != x.shape[0] or (perm is not None and perm[0] != 0):
            raise _refuse(scope, f"{eqn.primitive.name} moves or merges the batch axis "
                                 f"({x.shape} -> {aval.shape})")
        node = self.materialise(x)
        info = {"target": tuple(aval.shape[1:])}
        if perm is not None:
            info["perm"] = tuple(perm)
        n = self.add_node(Node("reshape", (node,), tuple(aval.shape[1:]), scope, info=info))
        return [self.act_out(n, aval, scope)]

    def p_reshape(self, eqn, ins, scope):
        if eqn.params.get("dimensions") not in (None, ()):
            raise _refuse(scope, "reshape with dimensions is not supported")
        return self._reshape_like(eqn, ins, scope)

    def p_squeeze(self, eqn, ins, scope):
        return self._reshape_like(eqn, ins, scope)

    def p_expand_dims(self, eqn, ins, scope):
        return self._reshape_like(eqn, ins, scope)

    def p_broadcast_in_dim(self, eqn, ins, scope):
        x = ins[0]
        aval = eqn.outvars[0].aval
        if int(np.prod(aval.shape)) != int(np.prod(x.shape)):
            raise _refuse(scope, f"broadcasts activations {x.shape} -> {aval.shape} (copies "
                                 "them; not supported)")
        return self._reshape_like(eqn, ins, scope)

    def p_transpose(self, eqn, ins, scope):
        return self._reshape_like(eqn, ins, scope, perm=eqn.params["permutation"])

    def _window(self, eqn, ins, scope, kind):
        x = ins[0]
        p = eqn.params
        wd = tuple(int(v) for v in p["window_dimensions"])
        ws = tuple(int(v) for v in p["window_strides"])
        bd = tuple(int(v) for v in p["base_dilation"])
        wdil = tuple(int(v) for v in p["window_dilation"])
        aval = eqn.outvars[0].aval
        if wd[0] != 1 or ws[0] != 1:
            raise _refuse(scope, "pooling across the batch axis")
        if any(d != 1 for d in bd):
            raise _refuse(scope, "pooling with base dilation is not supported")
        node = self.materialise(x)
        cover = [min(k, -(-((k - 1) * r + 1) // s)) for k, s, r in zip(wd, ws, wdil, strict=True)]
        c = float(np.prod(cover))
        lip = math.sqrt(c) if kind == "max" else math.sqrt(c * float(np.prod(wd)))
        info = {"kind": kind, "window": wd[1:], "params": dict(p)}
        n = self.add_node(Node("pool", (node,), tuple(aval.shape[1:]), scope, lip, info=info))
        return [self.act_out(n, aval, scope)]

    def p_reduce_window_max(self, eqn, ins, scope):
        return self._window(eqn, ins, scope, "max")

    def p_reduce_window_sum(self, eqn, ins, scope):
        return self._window(eqn, ins, scope, "sum")

    def _reduce(self, eqn, ins, scope, kind):
        x = ins[0]
        axes = tuple(int(a) for a in eqn.params["axes"])
        aval = eqn.outvars[0].aval
        if 0 in axes:
            raise _refuse(scope, f"reduce_{kind} over the batch axis (batch statistics)")
        node = self.materialise(x, consumer="reduction")
        m = int(np.prod([x.shape[a] for a in axes]))
        lip = 1.0 if kind in ("max", "min") else math.sqrt(m)
        info = {"kind": "global_" + kind, "axes": axes, "window": m}
        n = self.add_node(Node("pool", (node,), tuple(aval.shape[1:]), scope, lip, info=info))
        return [self.act_out(n, aval, scope)]

    def p_reduce_max(self, eqn, ins, scope):
        return self._reduce(eqn, ins, scope, "max")

    def p_reduce_min(self, eqn, ins, scope):
        return self._reduce(eqn, ins, scope, "min")

    def p_reduce_sum(self, eqn, ins, scope):
        return self._reduce(eqn, ins, scope, "sum")

    def p_concatenate(self, eqn, ins, scope):
        dim = int(eqn.params["dimension"])
        aval = eqn.outvars[0].aval
        if dim == 0:
            raise _refuse(scope, "concatenation along the batch axis")
        if not all(isinstance(v, _Act) for v in ins):
            raise _refuse(scope, "concatenation of activations with constants is not supported")
        nodes = tuple(self.materialise(v) for v in ins)
        n = self.add_node(Node("concat", nodes, tuple(aval.shape[1:]), scope,
                               info={"dim": dim}))
        return [self.act_out(n, aval, scope)]

    def output_softmax(self, fname, eqn, ins, scope):
        x = ins[0]
        aval = eqn.outvars[0].aval
        if len(ins) != 1 or len(x.shape) != 2:
            raise _refuse(scope, f"{fname} over more than the class axis is not supported")
        node = self.materialise(x)
        k = int(x.shape[1])
        # log_softmax: Jacobian I - 1 p^T, norm <= 1 + sqrt(k); softmax: 1-Lipschitz.
        lip = 1.0 + math.sqrt(k) if fname == "log_softmax" else 1.0
        n = self.add_node(Node(fname, (node,), tuple(aval.shape[1:]), scope, lip))
        return self.act_out(n, aval, scope)


def trace_records(call: Callable[[Any, Any], Any], tree: Any,
                  x: jax.Array) -> tuple[list[Node], int, Any]:
    """The records of ``call(tree, x)``: traced to a jaxpr, interpreted, simplified.

    Returns ``(nodes, output, dtype)``: the records in application order (node 0 the input),
    the index of the output node and the dtype of the outputs. Not verified: `Network.trace`
    compares the records with ``call(tree, x)``.
    """
    leaves_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = [leaf for _, leaf in leaves_paths]
    paths = [_path_name(p) for p, _ in leaves_paths]
    if not leaves:
        raise ValueError("params must be a non-empty tree of arrays, got an empty tree")

    def f(leaves_, x_):
        return call(jax.tree_util.tree_unflatten(treedef, leaves_), x_)

    closed = jax.make_jaxpr(f)(leaves, x)
    out_avals = closed.out_avals
    if len(out_avals) != 1:
        raise TypeError(f"apply_fn must return one array of logits; it returns "
                        f"{len(out_avals)} arrays")
    dtype = out_avals[0].dtype
    interp = _Interpreter(paths, int(x.shape[0]), tol=max(default_tolerance(dtype), 1e-5))
    interp.add_node(Node("input", (), tuple(x.shape[1:]), ""))
    in_vals = [_Const(leaf, frozenset({p})) for leaf, p in zip(leaves, paths, strict=True)]
    outs = interp.run(closed, in_vals + [_Act(0, x.shape, x.dtype)])
    out = outs[0]
    if isinstance(out, _Const):
        raise ValueError("apply_fn's output does not depend on its input x")
    output = interp.leave(out)
    nodes, output = simplify(interp.nodes, output)
    if not any(n.op == "linear" for n in nodes):
        raise ValueError("the network applies no weight matrix to its input")
    return nodes, output, dtype
