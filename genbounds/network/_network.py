r"""A network read from its function: ``Network.trace(apply_fn, params, x)``.

The network is traced to a jaxpr (``jax.make_jaxpr`` of ``x -> apply_fn(params, x)`` with the
parameters as inputs, so every constant knows which parameters it came from) and the jaxpr is
interpreted once into a graph of *records*, in application order:

* ``linear``: a ``dot_general`` or ``conv_general_dilated`` whose second operand is computed from
  the parameters alone: a `Layer` with the kernel in Flax layout ((in, out) for dense,
  (*window, in, out) for conv, dilation and feature groups materialised into a full kernel), the
  real strides, explicit padding and input shape, its bias, and the ``params`` path of its kernel;
* ``activation``: an element-wise function identified by its values (ReLU, leaky ReLU, ELU,
  tanh, sigmoid, GELU, SiLU, softplus, ...), with its Lipschitz constant (derivations in
  docs/networks.md);
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

**Verification.** `Network.trace` re-evaluates the records (canonical layouts, recognised
activations, folded kernels) on ``x`` and compares with ``apply_fn(params, x)``; a mismatch
beyond float tolerance is an error, so a network is never bounded as something it is not.

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

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from genbounds.core._checks import NotBoundable

from ._activations import Activation, identify
from ._activations import grid as _activation_grid
from ._layers import _KERNEL_NAMES, ConvSpec, Layer

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


@dataclasses.dataclass
class Node:
    r"""One record of a traced network.

    Attributes:
      op: ``"input"``, ``"linear"``, ``"activation"``, ``"pool"``, ``"reshape"``, ``"scale"``,
        ``"shift"``, ``"add"``, ``"concat"`` or ``"log_softmax"``.
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
        return self.op


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
    function ``g`` of that output (not yet identified)."""

    __slots__ = ("node", "g", "shape", "dtype", "scope", "_done")

    def __init__(self, node: int, shape, dtype, g: Callable | None = None, scope: str = ""):
        self.node = node
        self.g = g
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


class _Interpreter:
    def __init__(self, leaf_paths: Sequence[str], batch: int, tol: float):
        self.nodes: list[Node] = []
        self.leaf_paths = list(leaf_paths)
        self.batch = batch
        self.tol = tol
        self.used_paths: dict[str, int] = {}

    # -- helpers --------------------------------------------------------------------------

    def add_node(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def materialise(self, v: _Act, consumer: str = "") -> int:
        if v.g is None:
            return v.node
        if v._done is not None:
            return v._done
        src = self.nodes[v.node]
        t = _activation_grid()
        dt = np.dtype(v.dtype) if np.issubdtype(np.dtype(v.dtype), np.floating) else np.float32
        with jax.ensure_compile_time_eval():
            vals = np.asarray(v.g(jnp.asarray(t, dt)), dtype=np.float64)
        ident = identify(vals, tol=self.tol)
        if ident is None:
            if consumer == "reduction":
                raise _refuse(v.scope, "a reduction of a non-linear function of the activations: "
                                       "a data-dependent normalisation (a variance or norm of "
                                       "the layer's own input, as in LayerNorm, RMSNorm, "
                                       "GroupNorm) is not Lipschitz-bounded by its weights")
            raise _refuse(v.scope, "an element-wise function that is not a recognised activation "
                                   f"(values at -1, 0, 1: {vals[70]:.4g}, {vals[80]:.4g}, "
                                   f"{vals[90]:.4g})")
        node = v.node
        if isinstance(ident, tuple):
            a, c = ident
            if a != 1.0:
                node = self.add_node(Node("scale", (node,), src.shape if node == v.node else
                                          self.nodes[node].shape, v.scope, abs(a),
                                          info={"c": np.asarray(a, np.float64)}))
            if c != 0.0:
                node = self.add_node(Node("shift", (node,), self.nodes[node].shape, v.scope,
                                          info={"c": np.asarray(c, np.float64)}))
        else:
            node = self.add_node(Node("activation", (node,), self.nodes[v.node].shape, v.scope,
                                      ident.lipschitz, activation=ident))
        v._done = node
        return node

    def act_out(self, node: int, aval, scope: str) -> _Act:
        return _Act(node, aval.shape, aval.dtype, scope=scope)

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
                if fname in ("log_softmax", "softmax") and any(isinstance(v, _Act) for v in ins):
                    return [self.output_softmax(fname, eqn, ins, scope)]
                return self.run(sub, ins, scope)
        if all(isinstance(v, _Const) for v in ins):
            if name in _RANDOM_PRIMS:
                prov = frozenset({"__random__"})
            else:
                prov = frozenset().union(*[v.prov for v in ins]) if ins else frozenset()
            with jax.ensure_compile_time_eval():
                out = eqn.primitive.bind(*[v.val for v in ins], **eqn.params)
            outs = out if eqn.primitive.multiple_results else [out]
            return [_Const(o, prov) for o in outs]
        if name in _ELEMENTWISE:
            return [self.elementwise(eqn, ins, scope)]
        handler = getattr(self, "p_" + name, None)
        if handler is None:
            raise _refuse(scope, f"the operation {name!r} on activations is not supported")
        return handler(eqn, ins, scope)

    # -- element-wise ---------------------------------------------------------------------

    def elementwise(self, eqn, ins: list, scope: str):
        name = eqn.primitive.name
        aval = eqn.outvars[0].aval
        acts = [v for v in ins if isinstance(v, _Act)]
        consts = [v for v in ins if isinstance(v, _Const)]
        if any("__random__" in c.prov for c in consts):
            raise _refuse(scope, "a random mask multiplies the activations")
        origins = {a.node for a in acts}
        scalar_consts = all(np.size(c.val) == 1 for c in consts)
        if len(origins) == 1 and scalar_consts:
            # One element-wise function of one node's output: keep it pending.
            prim, params = eqn.primitive, eqn.params
            gs = [(a.g or (lambda t: t)) if isinstance(a, _Act) else None for a in ins]
            vals = [None if isinstance(a, _Act) else jnp.asarray(np.reshape(a.val, ()))
                    for a in ins]

            def g(t, gs=gs, vals=vals, prim=prim, params=params):
                args = [gi(t) if gi is not None else vi for gi, vi in zip(gs, vals, strict=True)]
                return prim.bind(*args, **params)

            return _Act(acts[0].node, aval.shape, aval.dtype, g=g, scope=scope)
        if len(acts) == 1 and len(ins) == 2 and name in ("add", "sub", "mul", "div"):
            a = acts[0]
            c = consts[0]
            node = self.materialise(a)
            per = self.per_example(c.val, a.shape, scope)
            if name == "add":
                return self.shift(node, per, aval, scope)
            if name == "sub":
                if isinstance(ins[0], _Act):
                    return self.shift(node, -per, aval, scope)
                neg = self.scale(node, -np.ones_like(per), aval, scope)
                return self.shift(neg.node, per, aval, scope)
            if name == "mul":
                return self.scale(node, per, aval, scope)
            if isinstance(ins[0], _Act):  # x / c
                return self.scale(node, 1.0 / per, aval, scope)
        if len(acts) == 2 and len(ins) == 2 and name in ("add", "sub") and len(origins) == 2:
            n0, n1 = (self.materialise(a) for a in acts)
            s0, s1 = (tuple(a.shape[1:]) for a in acts)
            if s0 != s1:
                raise _refuse(scope, f"adds activations of shapes {s0} and {s1} (broadcasting)")
            coef = (1.0, 1.0 if name == "add" else -1.0)
            node = self.add_node(Node("add", (n0, n1), tuple(aval.shape[1:]), scope,
                                      info={"coef": coef}))
            return self.act_out(node, aval, scope)
        if len(origins) >= 2:
            raise _refuse(scope, f"{name!r} combines two different activations (a product or "
                                 "comparison of activations is not Lipschitz-bounded by weights)")
        raise _refuse(scope, f"{name!r} of activations with a constant that varies per element "
                             "is not an affine map the bounds can read")

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
        n = self.add_node(Node("shift", (node,), tuple(aval.shape[1:]), scope, info={"c": c}))
        return self.act_out(n, aval, scope)

    def scale(self, node: int, c: np.ndarray, aval, scope: str) -> _Act:
        lip = float(np.max(np.abs(c))) if np.size(c) else 0.0
        n = self.add_node(Node("scale", (node,), tuple(aval.shape[1:]), scope, lip,
                               info={"c": c}))
        return self.act_out(n, aval, scope)

    # -- linear maps ----------------------------------------------------------------------

    def p_dot_general(self, eqn, ins, scope):
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        x, w = ins
        aval = eqn.outvars[0].aval
        if not isinstance(x, _Act) or not isinstance(w, _Const):
            if isinstance(x, _Act) and isinstance(w, _Act):
                raise _refuse(scope, "a matrix product of two activations (e.g. attention) is "
                                     "not Lipschitz-bounded by weights")
            raise _refuse(scope, "a matrix product with the weights on the left (W @ x with the "
                                 "batch axis last) is not supported; write x @ W")
        if lb or rb:
            raise _refuse(scope, "a batched matrix product is not supported")
        node = self.materialise(x)
        kernel = np.asarray(w.val)
        if len(x.shape) != 2 or tuple(lc) != (1,) or kernel.ndim != 2 or len(rc) != 1:
            raise _refuse(scope, f"a dense map must take (batch, features) inputs and a 2-D "
                                 f"kernel; got inputs {x.shape}, kernel {kernel.shape}, "
                                 f"contracting {tuple(lc)}/{tuple(rc)}")
        if rc[0] == 1:
            kernel = kernel.T
        path = self.const_prov_path(w, kernel.shape, scope)
        layer = Layer(path=path, kind="dense", kernel=jnp.asarray(kernel))
        n = self.add_node(Node("linear", (node,), tuple(aval.shape[1:]), scope, layer=layer,
                               info={"dtype": aval.dtype}))
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
        layer = Layer(path=path, kind="conv", kernel=jnp.asarray(k), conv=spec)
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


# ----------------------------------------------------------------------------------------------
# Re-evaluation of the records.


def _eval_node(node: Node, args: list[jax.Array]) -> jax.Array:
    op = node.op
    x = args[0] if args else None
    if op == "linear":
        lay = node.layer
        dtype = node.info.get("dtype", x.dtype)
        k = lay.kernel.astype(dtype)
        if lay.kind == "dense":
            y = jnp.matmul(x, k, precision=lax.Precision.HIGHEST)
            if lay.bias is not None:
                y = y + lay.bias.astype(dtype)
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
        y = lax.reduce_window(x, jnp.asarray(init, x.dtype), comp, p["window_dimensions"],
                              p["window_strides"], p["padding"], p["base_dilation"],
                              p["window_dilation"])
        return y * jnp.asarray(node.info.get("factor", 1.0), x.dtype)
    if op == "add":
        c0, c1 = node.info["coef"]
        return c0 * args[0] + c1 * args[1]
    if op == "concat":
        return jnp.concatenate(args, axis=node.info["dim"])
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


def _simplify(nodes: list[Node], output: int) -> tuple[list[Node], int]:
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


# ----------------------------------------------------------------------------------------------
# The public type.


class Network:
    """A network as the bounds read it: ordered records of linear maps, activations and structure.

    Build one with `Network.trace` (from the network's function: the source of truth) or
    `Network.from_params` (from a parameter tree alone, for plain chains whose order the names
    tell). Every bound and measure accepts a `Network` in place of ``params``.

    Attributes:
      nodes: the records, in application order (node 0 is the input).
      output: index of the output node.
      source: ``"trace"`` (read from ``apply_fn``, verified) or ``"params"`` (read from names).
      notes: what the reader assumed or found.
      params, apply_fn: what the network was traced from (``None`` for ``from_params``).
      input_shape: shape of one example.
    """

    def __init__(self, nodes: Sequence[Node], output: int, *, source: str,
                 input_shape: tuple[int, ...], notes: Sequence[str] = (),
                 params: Any = None, apply_fn: Callable | None = None,
                 max_error: float | None = None):
        self.nodes = tuple(nodes)
        self.output = int(output)
        self.source = source
        self.input_shape = tuple(input_shape)
        self.notes = tuple(notes)
        self.params = params
        self.apply_fn = apply_fn
        self.max_error = max_error
        self.example: jax.Array | None = None
        # spectral norms already computed for this network, by their options (`spectral_norms`)
        self.norm_cache: dict = {}

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def trace(cls, apply_fn: Callable[[Any, Any], Any], params: Any, x: Any, *,
              rtol: float | None = None, check: bool = True) -> Network:
        r"""Reads a network from its function by tracing ``apply_fn(params, x)`` to a jaxpr.

        Args:
          apply_fn: ``apply_fn(params, x) -> logits``, e.g. ``model.apply`` of a linen Module,
            or ``lambda m, x: m(x)`` for an nnx Module passed as ``params``.
          params: what ``apply_fn`` takes first: linen variables, an nnx Module, or any pytree.
          x: an example input batch, shape (b, ...) with the batch axis first (a few training
            examples; the records are verified on it).
          rtol: tolerance of the verification, relative to the largest output magnitude
            (default 1e-4 in float32, 1e-9 in float64).
          check: verify the records against ``apply_fn`` (default True; turn off only to inspect
            a network that fails verification).

        Returns:
          A `Network` whose records reproduce ``apply_fn(params, x)``.

        Raises:
          TypeError: ``apply_fn`` is not callable, or returns something other than one array.
          ValueError: ``x`` has no batch axis or is not finite; the network holds an operation
            no bound covers (the message names the layer); the records do not reproduce
            ``apply_fn`` (a mismatch is never silently bounded).

        Examples:
          >>> import jax, jax.numpy as jnp, flax.linen as nn
          >>> class MLP(nn.Module):
          ...     @nn.compact
          ...     def __call__(self, x):
          ...         return nn.Dense(3)(nn.relu(nn.Dense(8)(x)))
          >>> x = jnp.ones((2, 4))
          >>> v = MLP().init(jax.random.key(0), x)
          >>> net = Network.trace(MLP().apply, v, x)
          >>> [layer.path for layer in net.layers], net.structure  # Dense(3) is created first
          (['Dense_1', 'Dense_0'], 'chain')
        """
        if not callable(apply_fn):
            raise TypeError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
        call, tree = _callable(apply_fn, params)
        x = jnp.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"x must be a batch of examples with the batch axis first, shape "
                             f"(b, ...); got shape {tuple(x.shape)}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        if not bool(jnp.all(jnp.isfinite(x))):
            raise ValueError("x holds NaN or inf values; pass finite example inputs")
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
        tol = 1e-4 if np.dtype(dtype).itemsize <= 4 else 1e-9
        interp = _Interpreter(paths, int(x.shape[0]), tol=max(tol, 1e-5))
        interp.add_node(Node("input", (), tuple(x.shape[1:]), ""))
        in_vals = [_Const(leaf, frozenset({p})) for leaf, p in zip(leaves, paths, strict=True)]
        outs = interp.run(closed, in_vals + [_Act(0, x.shape, x.dtype)])
        out = outs[0]
        if isinstance(out, _Const):
            raise ValueError("apply_fn's output does not depend on its input x")
        output = interp.materialise(out)
        nodes, output = _simplify(interp.nodes, output)
        if not any(n.op == "linear" for n in nodes):
            raise ValueError("the network applies no weight matrix to its input")
        notes = ["read from apply_fn by tracing (jaxpr), verified against apply_fn on x"]
        net = cls(nodes, output, source="trace", input_shape=tuple(x.shape[1:]), notes=notes,
                  params=params, apply_fn=apply_fn)
        net.example = x
        if check:
            want = np.asarray(call(tree, x), np.float64)
            if not np.all(np.isfinite(want)):
                small = np.dtype(dtype).itemsize < 8
                raise ValueError(
                    "apply_fn(params, x) is not finite on finite inputs: "
                    + (f"the network's outputs overflowed {np.dtype(dtype).name} (a deep or "
                       "large-weight net); evaluate it in float64 (jax_enable_x64 and float64 "
                       "params and x)" if small else "it returned NaN or inf"))
            got = np.asarray(net.evaluate(x), np.float64)
            if want.shape != got.shape:
                raise ValueError(f"the traced network's records give outputs of shape "
                                 f"{got.shape}, apply_fn gives {want.shape}")
            scale = max(1.0, float(np.max(np.abs(want))))
            err = float(np.max(np.abs(want - got))) / scale
            limit = rtol if rtol is not None else tol
            if not err <= limit:
                raise ValueError(
                    f"the traced network does not reproduce apply_fn(params, x): relative "
                    f"error {err:.3g} > {limit:g}; it is not bounded as something it is not. "
                    f"Records: {net.describe()}")
            net.max_error = err
        return net

    @classmethod
    def from_params(cls, params: Any, *, layers: Sequence[str] | None = None,
                    conv: Any = None) -> Network:
        """Reads a chain of layers from a parameter tree by its names (see `read_layers`).

        The structure cannot be seen in parameters: the result *assumes* a chain with ReLU
        between layers, says so in ``notes``, and is verified only where logits are given to
        a bound. Use `Network.trace` for anything else.
        """
        from ._layers import read_layers

        read = read_layers(params, layers=layers, conv=conv)
        nodes = [Node("input", (), (read[0].fan_in,) if read[0].kind == "dense" else (), "")]
        relu = identify(np.maximum(_activation_grid(), 0.0), tol=1e-9)
        for i, layer in enumerate(read):
            if i:
                nodes.append(Node("activation", (len(nodes) - 1,), (), "", 1.0, activation=relu))
            nodes.append(Node("linear", (len(nodes) - 1,), (layer.fan_out,)
                              if layer.kind == "dense" else (), layer.path, layer=layer))
        notes = ["read from parameter names: a chain with ReLU between layers is assumed "
                 "(a residual or branched network needs Network.trace(apply_fn, params, x))"]
        if any(layer.kind == "conv" and layer.conv.input_shape is None for layer in read):
            notes.append("conv layers read without their geometry: their norms are bounds valid "
                         "for every stride, padding and input size (Network.trace gives the "
                         "real operator)")
        return cls(nodes, len(nodes) - 1, source="params",
                   input_shape=(read[0].fan_in,) if read[0].kind == "dense" else (),
                   notes=notes)

    # -- reading --------------------------------------------------------------------------

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The linear maps, in application order."""
        return tuple(n.layer for n in self.nodes if n.op == "linear")

    @property
    def structure(self) -> str:
        """``"chain"``, ``"residual"`` (an add of two paths) or ``"branched"`` (a concat)."""
        ops = {n.op for n in self.nodes}
        if "add" in ops:
            return "residual"
        if "concat" in ops:
            return "branched"
        return "chain"

    @property
    def logits_node(self) -> int:
        """The node whose output the margins are read from (before a final log_softmax)."""
        n = self.nodes[self.output]
        return n.inputs[0] if n.op == "log_softmax" else self.output

    def __call__(self, x: Any) -> jax.Array:
        """The network's outputs: ``apply_fn(params, x)`` when traced, else the records."""
        if self.apply_fn is not None:
            call, tree = _callable(self.apply_fn, self.params)
            return call(tree, x)
        return self.evaluate(x)

    def evaluate(self, x: Any, *, upto: int | None = None) -> jax.Array:
        """Re-evaluates the records on a batch ``x`` (the check made by `trace`)."""
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        if self.source == "params" and self.nodes[0].shape and x.ndim > 2:
            x = x.reshape(x.shape[0], -1)
        vals: list = [x]
        last = self.output if upto is None else upto
        for node in self.nodes[1:last + 1]:
            vals.append(_eval_node(node, [vals[i] for i in node.inputs]))
        return vals[last]

    def describe(self) -> str:
        lines = [f"Network ({self.structure}, {len(self.layers)} linear maps, from "
                 f"{self.source}):"]
        for i, n in enumerate(self.nodes):
            src = "" if not n.inputs else f" <- {list(n.inputs)}"
            lines.append(f"  [{i}] {n.describe()}{src}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe()

    def chain(self, caller: str, *, homogeneous: bool = False, dense_only: bool = False,
              allowed: Sequence[str] = ("activation", "pool", "reshape", "scale")) -> Chain:
        """The network as a chain of linear maps with fixed maps between them, or an error.

        Args:
          caller: the bound asking (named in the error).
          homogeneous: require positively homogeneous, 1-Lipschitz activations (ReLU) between
            the layers and no pooling (Neyshabur et al. 2018, Golowich et al. 2018).
          dense_only: require dense layers.

        Raises:
          NotBoundable: a residual or branched network, a layer kind or operation the theorem
            does not cover, with the reason.
        """
        if self.structure != "chain":
            adds = [n.scope or f"node {i}" for i, n in enumerate(self.nodes)
                    if n.op in ("add", "concat")]
            raise NotBoundable(
                f"{caller}: the network is {self.structure} (merges at {adds}); the theorem is "
                "stated for a chain of layers, so it gives no bound here. Residual networks "
                "get a certified Lipschitz bound by composition (genbounds.lipschitz)")
        seq = self.nodes[1:self.logits_node + 1]
        layers: list[Layer] = []
        between: list[list[Node]] = [[]]
        for n in seq:
            if n.op == "linear":
                layers.append(n.layer)
                between.append([])
            else:
                between[-1].append(n)
        pre, gaps, post = between[0], between[1:-1], between[-1]
        for n in pre:
            if n.op != "reshape":
                raise NotBoundable(f"{caller}: {n.describe()} before the first layer is not "
                                   "covered by the theorem")
        if post:
            raise NotBoundable(f"{caller}: {post[0].describe()} after the last layer; the bound "
                               "is stated for networks whose last layer is linear")
        rho = []
        names = []
        for gap in gaps:
            r = 1.0
            names.append(tuple(n.activation.name if n.op == "activation" else n.op
                               for n in gap))
            for n in gap:
                if n.op not in allowed:
                    raise NotBoundable(f"{caller}: {n.describe()} between layers is not covered")
                if n.op == "shift":
                    raise NotBoundable(f"{caller}: a shift that is not a per-channel bias")
                if n.op == "activation" and not n.activation.zero_at_zero:
                    raise NotBoundable(
                        f"{caller}: the activation {n.activation.name} does not map 0 to 0, "
                        "which the theorem's covering argument needs")
                if homogeneous:
                    ok = ((n.op == "activation" and n.activation.homogeneous
                           and n.lipschitz <= 1.0) or n.op == "reshape")
                    if not ok:
                        raise NotBoundable(
                            f"{caller}: {n.describe()} between layers; the theorem needs "
                            "element-wise positively homogeneous 1-Lipschitz activations (ReLU)")
                r *= n.lipschitz
            rho.append(r)
        if dense_only and any(layer.kind != "dense" for layer in layers):
            convs = [layer.path for layer in layers if layer.kind != "dense"]
            raise NotBoundable(f"{caller}: the theorem is stated for fully connected layers; "
                               f"{convs} are convolutions")
        return Chain(tuple(layers), tuple(rho), tuple(names))


@dataclasses.dataclass(frozen=True)
class Chain:
    """A chain network: its linear maps, the Lipschitz constants rho_i of what follows each
    hidden layer (activation, pooling, reshapes), and the names of those maps."""

    layers: tuple[Layer, ...]
    rho: tuple[float, ...]
    between: tuple[tuple[str, ...], ...] = ()

    @property
    def lipschitz(self) -> tuple[float, ...]:
        """rho_i per layer (the last layer, followed by nothing, gets 1)."""
        return self.rho + (1.0,)


def _callable(apply_fn: Callable, params: Any) -> tuple[Callable, Any]:
    """(call, tree): call(tree, x) evaluates the network with its parameters as a pytree."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        nnx = None
    if nnx is not None and isinstance(params, nnx.Module):
        graphdef, state = nnx.split(params)
        pure = nnx.to_pure_dict(state)

        def call(tree, x):
            st = nnx.split(params)[1]
            nnx.replace_by_pure_dict(st, tree)
            return apply_fn(nnx.merge(graphdef, st), x)

        return call, pure
    return apply_fn, params


def as_network(params: Any, *, apply_fn: Callable | None = None, X: Any = None,
               layers: Sequence[str] | None = None, conv: Any = None,
               caller: str = "genbounds") -> Network:
    """The one place where public functions turn their input into a `Network`.

    A `Network` is returned as it is; ``apply_fn`` with ``X`` traces one (verified on a few
    examples of ``X``); parameters alone are read by their names (`Network.from_params`).
    """
    if isinstance(params, Network):
        if layers is not None or conv is not None:
            raise ValueError(f"{caller}: layers= and conv= describe a parameter tree; a Network "
                             "already knows its layers and geometry")
        return params
    if apply_fn is not None and X is not None:
        if layers is not None or conv is not None:
            raise ValueError(f"{caller}: layers= and conv= order and describe a parameter tree "
                             "read by names; with apply_fn the network is traced, which gives "
                             "both. Pass one or the other")
        x = jnp.asarray(X)
        x = x[: min(int(x.shape[0]), 16)]
        try:
            return Network.trace(apply_fn, params, x)
        except _UNTRACEABLE as e:
            # apply_fn is not a jax function (numpy inside): read the names, check the logits.
            net = Network.from_params(params)
            first = str(e).strip().splitlines()[0][:120]
            net.notes += (f"apply_fn could not be traced by jax ({type(e).__name__}: {first}); "
                          "read from parameter names and verified against apply_fn's outputs",)
            x2 = np.asarray(x, np.float64).reshape(x.shape[0], -1)
            verify_chain(net, x2, apply_fn(params, x), caller)
            return net
    return Network.from_params(params, layers=layers, conv=conv)


_UNTRACEABLE = (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError,
                jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError)


def lipschitz_log_bound(network: Network, norms: Mapping[str, float], *,
                        upto: int | None = None) -> float:
    r"""$\log$ of an upper bound on the network's Lipschitz constant (input to ``upto``, default
    the logits), by composition over the graph: a linear node multiplies by its norm, a fixed map
    by its Lipschitz constant, an add of two paths adds their bounds
    ($\mathrm{Lip}(x + f(x)) \le 1 + \mathrm{Lip}(f)$), a concatenation takes the root of the sum of
    squares. Accumulated in log space (float64)."""
    last = network.logits_node if upto is None else upto
    logl = [0.0]
    for node in network.nodes[1:last + 1]:
        ins = [logl[i] for i in node.inputs]
        if node.op == "linear":
            v = float(norms[node.layer.path])
            logl.append(ins[0] + (math.log(v) if v > 0 else -math.inf))
        elif node.op == "add":
            logl.append(float(np.logaddexp(*ins)))
        elif node.op == "concat":
            logl.append(0.5 * float(np.logaddexp.reduce(2.0 * np.asarray(ins))))
        elif node.op == "shift":
            logl.append(ins[0])
        else:
            lip = node.lipschitz
            logl.append(ins[0] + (math.log(lip) if lip > 0 else -math.inf))
    return logl[last]


def verify_chain(net: Network, X2: np.ndarray, logits: Any, caller: str) -> None:
    """A chain read from parameter names must reproduce the logits the caller gave."""
    if any(layer.kind != "dense" for layer in net.layers):
        raise NotBoundable(
            f"{caller}: convolution layers read from parameters alone have no geometry (strides, "
            "padding, input size); pass apply_fn with X (the network is traced) or a Network "
            "from genbounds.Network.trace")
    want = np.asarray(logits, np.float64)
    if want.ndim == 0 or want.shape[0] != X2.shape[0]:
        raise ValueError(f"{caller}: X and logits must have the same number of examples; X has "
                         f"{X2.shape[0]}, logits have shape {want.shape}")
    if not np.all(np.isfinite(want)):
        raise ValueError(f"{caller}: logits hold NaN or inf values; they must be finite")
    want = want.reshape(X2.shape[0], -1)
    if X2.shape[1] != net.layers[0].fan_in:
        raise ValueError(
            f"{caller}: X has {X2.shape[1]} features per example (flattened) but the first "
            f"layer {net.layers[0].path!r} has fan-in {net.layers[0].fan_in}; pass the inputs "
            "the network reads")
    if want.shape[1] != net.layers[-1].fan_out:
        raise ValueError(
            f"{caller}: logits have {want.shape[1]} columns but the last layer "
            f"{net.layers[-1].path!r} has {net.layers[-1].fan_out} outputs; pass the logits of "
            "this network")
    got = np.asarray(net.evaluate(jnp.asarray(X2, net.layers[0].kernel.dtype)), np.float64)
    got = got.reshape(want.shape)
    scale = max(1.0, float(np.max(np.abs(want))))
    err = float(np.max(np.abs(got - want))) / scale
    if not err <= 1e-3:
        raise ValueError(
            f"{caller}: the parameters, read as a ReLU chain in the order "
            f"{[layer.path for layer in net.layers]}, do not reproduce the given logits "
            f"(relative error {err:.3g}): the network is not that chain (a residual connection, "
            "another activation or another order). Pass apply_fn instead of logits (the "
            "network is then traced from its function) or a Network")


def data_chain(params: Any, *, X: Any, X2: np.ndarray, logits: Any, apply_fn: Any,
               layers: Any, conv: Any, caller: str, homogeneous: bool = False,
               dense_only: bool = False) -> tuple[Network, Chain]:
    """The network of a bound with data, as a verified chain (or an error with the reason)."""
    net = as_network(params, apply_fn=apply_fn, X=X, layers=layers, conv=conv, caller=caller)
    if net.source == "params":
        verify_chain(net, X2, logits, caller)
    return net, net.chain(caller, homogeneous=homogeneous, dense_only=dense_only)


def reference_layers(reference: Any, net: Network, layers: Sequence[Layer],
                     caller: str = "reference") -> tuple[Layer, ...]:
    """The reference matrices M_i (e.g. the initial parameters) matching `layers` by path.

    A traced network's reference is traced with the same function (so it is read exactly as
    the network is, BatchNorm folded alike); otherwise it is read by names in the order of
    `layers`.
    """
    if isinstance(reference, Network):
        ref_layers = reference.layers
    elif net.source == "trace" and net.apply_fn is not None:
        try:
            ref_layers = Network.trace(net.apply_fn, reference, net.example).layers
        except ValueError as e:
            raise ValueError(f"{caller}: the reference parameters do not trace like params: "
                             f"{e}") from e
    else:
        from ._norms import read_reference

        return read_reference(reference, layers)
    by_path = {layer.path: layer for layer in ref_layers}
    out = []
    for layer in layers:
        m = by_path.get(layer.path)
        if m is None:
            raise ValueError(f"{caller}: the reference has no layer at {layer.path!r}; its "
                             f"layers are {list(by_path)}")
        if tuple(m.kernel.shape) != tuple(layer.kernel.shape):
            raise ValueError(
                f"{caller}: the reference kernel at {layer.path!r} has shape "
                f"{tuple(m.kernel.shape)}, expected {tuple(layer.kernel.shape)} as in params")
        out.append(m)
    return tuple(out)
