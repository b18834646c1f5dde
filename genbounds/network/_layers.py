"""Reading a network's weight layers from its parameters, in the order the network applies them.

Accepted inputs:

* Flax linen variables: ``model.init(...)`` (``{'params': ..., 'batch_stats': ...}``) or the inner
  ``params`` dict, as dict or FrozenDict;
* ``flax.nnx``: a Module (attribute definition order is used) or a State from ``nnx.state``;
* plain pytrees: nested dicts, lists and tuples of arrays (a list ``[W1, W2]``, a list of
  ``(W, b)`` pairs, dicts with ``kernel``/``bias``, ``w``/``b`` or ``weight``/``bias`` entries).

Dense kernels are (in, out), Flax's layout; convolution kernels are (*window, in, out) (HWIO). A
module holding BatchNorm statistics (``scale``, ``bias``, ``mean``, ``var``) is folded into the
layer before it, which leaves the network's function unchanged (tested).

**Order.** ``jax.tree_util`` flattening sorts dict keys, so ``Dense_10`` comes before ``Dense_2``
and every ``jax.tree.map`` or optax update returns dicts in that sorted order. The rule, at each
dict level: if the keys are *not* in lexicographic order, their insertion order is deliberate
(Flax linen's module-creation order, an nnx Module's attribute order) and is used; otherwise the
keys are ordered naturally (``Dense_2`` < ``Dense_10``, integer list indices numerically). The
result is then checked: consecutive dense layers must chain (out of one = in of the next). When
the order could only come from the alphabet (names without numbers; an nnx ``State``, whose keys
come sorted) and exactly one order of the kernels chains, that order is used; when more than one
does, the order is ambiguous and an error asks for the explicit ``layers=`` order (or a trace).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import check_finite_tree, check_no_none_leaves
from genbounds.core._dtypes import promoted

_KERNEL_NAMES = ("kernel", "w", "weight", "W")
_BIAS_NAMES = ("bias", "b")
_BN_KEYS = {"scale", "bias", "mean", "var"}
_PAD_NAMES = ("SAME", "VALID", "CIRCULAR")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """Geometry of a convolution that its kernel cannot tell.

    Attributes:
      strides: int or one int per spatial axis.
      padding: ``"SAME"``, ``"VALID"``, ``"CIRCULAR"`` (wrap-around) or explicit
        ``((lo, hi), ...)`` pairs, as in ``flax.linen.Conv``.
      input_shape: spatial shape of the layer's input, e.g. ``(28, 28)``; None when unknown (the
        operator-norm kernels then return a bound valid for every input size).
    """

    strides: int | tuple[int, ...] = 1
    padding: str | tuple[tuple[int, int], ...] = "SAME"
    input_shape: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Layer:
    """One weight layer of a network.

    Attributes:
      path: where the layer sits in the parameter tree, e.g. ``"Dense_0"`` or ``"layers/3"``.
      kind: ``"dense"`` or ``"conv"``.
      kernel: (in, out) for dense, (*window, in, out) for conv.
      bias: (out,) or None.
      conv: the convolution's geometry (conv layers only).
      folded: True when a BatchNorm was folded into this layer.
    """

    path: str
    kind: str
    kernel: jax.Array
    bias: jax.Array | None = None
    conv: ConvSpec | None = None
    folded: bool = False

    @property
    def fan_in(self) -> int:
        return int(self.kernel.shape[-2])

    @property
    def fan_out(self) -> int:
        return int(self.kernel.shape[-1])

    @property
    def window(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.kernel.shape[:-2])

    @property
    def matrix(self) -> jax.Array:
        """The kernel as a 2-D (in·prod(window), out) matrix (the kernel itself for dense)."""
        return self.kernel.reshape(-1, self.kernel.shape[-1])

    @property
    def num_weights(self) -> int:
        return int(np.prod(self.kernel.shape))

    @property
    def num_params(self) -> int:
        return self.num_weights + (0 if self.bias is None else int(np.prod(self.bias.shape)))


# ----------------------------------------------------------------------------------------------
# Turning every accepted input into nested Python dicts/lists of arrays, order preserved.


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray)) or (
        hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, Mapping)
    )


def _from_nnx(obj: Any) -> Any:
    from flax import nnx  # flax is an accepted input type, imported only when one comes

    if isinstance(obj, nnx.Variable):
        return obj.get_value() if hasattr(obj, "get_value") else obj.value
    if isinstance(obj, nnx.Module):
        out = {}
        for name, val in vars(obj).items():  # attribute definition order
            if name.startswith("_"):
                continue
            conv = _from_nnx(val)
            if conv is not None:
                out[name] = conv
        # nnx BatchNorm/LayerNorm keep their epsilon on the module.
        if {"scale", "mean", "var"} <= set(out) and hasattr(obj, "epsilon"):
            out["__epsilon__"] = float(obj.epsilon)
        return out or None
    if isinstance(obj, nnx.State):
        return _from_nnx(nnx.to_pure_dict(obj))
    if isinstance(obj, Mapping):
        out = {k: _from_nnx(v) for k, v in obj.items()}
        return {k: v for k, v in out.items() if v is not None} or None
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "List":
        items = [_from_nnx(v) for v in obj]
        return [v for v in items if v is not None] or None
    if _is_array(obj):
        return obj
    return None


def _normalise(params: Any) -> Any:
    """Nested dict/list form with the linen collections merged (batch_stats into params)."""
    # An nnx object exists only once flax.nnx is imported: importing it here (0.5 s) for a
    # plain dict would dominate a first call.
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, (nnx.Module, nnx.State)):
        return _from_nnx(params)
    if isinstance(params, Mapping) and "params" in params:
        merged = _unfreeze(params["params"])
        stats = params.get("batch_stats")
        if stats is not None:
            merged = _merge(merged, _unfreeze(stats))
        other = set(params) - {"params", "batch_stats"}
        if other:
            raise ValueError(
                f"params holds collections {sorted(other)} besides 'params' and 'batch_stats'; "
                "pass only the weights (and batch_stats for BatchNorm folding)"
            )
        return merged
    return _unfreeze(params)


def _unfreeze(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _unfreeze(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_unfreeze(v) for v in tree]
    return tree


def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _merge(out[k], v) if k in out else v
        return out
    return b


# ----------------------------------------------------------------------------------------------
# Ordering.


def _natural_key(key: Any) -> tuple:
    parts = re.split(r"(\d+)", str(key))
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p != "")


def _auto_numbered(keys: Sequence[Any]) -> bool:
    """Keys that carry their own order: integers, or names ending in distinct numbers."""
    nums = []
    for k in keys:
        m = re.search(r"(\d+)$", str(k))
        if m is None:
            return False
        nums.append(int(m.group(1)))
    return len(set(nums)) == len(nums)


def _ordered_keys(node: dict, ambiguous: list) -> list:
    keys = list(node)
    if keys != sorted(keys, key=str):
        return keys  # deliberate insertion order (linen creation order, nnx attribute order)
    ordered = sorted(keys, key=_natural_key)
    if not _auto_numbered(keys):
        ambiguous.append(ordered)
    return ordered


# ----------------------------------------------------------------------------------------------
# Collecting layers.


def _path_str(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def _collect(node: Any, path: tuple, out: list, ambiguous: list) -> None:
    """Appends (path, module-dict) for every node that holds a weight kernel."""
    if isinstance(node, dict):
        kernel_key = next((k for k in _KERNEL_NAMES if k in node and _is_array(node[k])), None)
        if kernel_key is not None and np.ndim(node[kernel_key]) >= 2:
            out.append((path, node, kernel_key))
            return
        if _BN_KEYS <= set(node) or {"scale", "bias"} == {k for k in node if k != "__epsilon__"}:
            out.append((path, node, None))  # a normalisation module, folded later
            return
        weight_children = []
        for k in _ordered_keys(node, ambiguous):
            v = node[k]
            if _is_array(v):
                if np.ndim(v) >= 2:
                    out.append((path + (k,), {"kernel": v}, "kernel"))
                    weight_children.append(k)
                elif str(k) not in _BIAS_NAMES:
                    raise ValueError(
                        f"params has a 1-D leaf at {_path_str(path + (k,))!r} that is neither a "
                        "bias nor part of a Dense/Conv/BatchNorm module (an RMSNorm or LayerNorm "
                        "scale is read by tracing: pass apply_fn and X); pass the layers "
                        "explicitly as a list of (kernel, bias) pairs"
                    )
                else:
                    # a bias beside a bare 2-D array: attach it to the preceding kernel
                    if not weight_children:
                        raise ValueError(
                            f"params has a bias at {_path_str(path + (k,))!r} with no kernel"
                        )
                    last_path, last, kk = out[-1]
                    out[-1] = (last_path, {**last, "bias": v}, kk)
            else:
                _collect(v, path + (k,), out, ambiguous)
        return
    if isinstance(node, (list, tuple)):
        arrays = [v for v in node if _is_array(v)]
        if len(node) == 2 and len(arrays) == 2 and np.ndim(node[0]) >= 2 and np.ndim(node[1]) == 1:
            out.append((path, {"kernel": node[0], "bias": node[1]}, "kernel"))  # a (W, b) pair
            return
        for i, v in enumerate(node):
            if _is_array(v):
                if np.ndim(v) < 2:
                    raise ValueError(
                        f"params has a {np.ndim(v)}-D array at {_path_str(path + (i,))!r} in a "
                        "list of layers; expected 2-D kernels or (kernel, bias) pairs"
                    )
                out.append((path + (i,), {"kernel": v}, "kernel"))
            else:
                _collect(v, path + (i,), out, ambiguous)
        return
    if node is None:
        return
    if not _is_array(node):
        raise TypeError(
            f"params must be a tree of arrays (dict, list, tuple, Flax variables or nnx "
            f"State/Module); found a {type(node).__name__} at {_path_str(path)!r}"
        )


def _fold_batchnorm(layer: Layer, bn: dict, bn_path: str, eps_default: float) -> Layer:
    """Folds y = scale·(x − mean)/sqrt(var + eps) + bias into the preceding layer."""
    if not {"mean", "var"} <= set(bn):
        low = bn_path.lower().replace("_", "")
        if "batchnorm" in low or "bn" in low.split("/")[-1]:
            raise ValueError(
                f"params has a BatchNorm module at {bn_path!r} without running statistics; "
                "pass the full variables {'params': ..., 'batch_stats': ...} so BatchNorm can "
                "be folded into the layer before it")
        kind = ("RMSNorm" if "rms" in low else "GroupNorm" if "groupnorm" in low
                else "LayerNorm" if "layernorm" in low or set(bn) - {"__epsilon__"} == {
                    "scale", "bias"} else "RMSNorm")
        raise ValueError(
            f"params has a {kind} module at {bn_path!r} (a scale"
            f"{' and a bias' if 'bias' in bn else ''}, no running statistics): it divides by "
            "statistics of its own input, so it is not an affine map a chain read from names "
            "can fold. Pass apply_fn and X (the network is then traced and the normalisation "
            "read with its Lipschitz constant max|scale|/sqrt(eps)); if it is a BatchNorm, "
            "pass the full variables with 'batch_stats'")
    eps = float(bn.get("__epsilon__", eps_default))
    factor = promoted(jnp.divide, bn["scale"], jnp.sqrt(jnp.asarray(bn["var"]) + eps))
    bias = jnp.zeros(layer.fan_out, factor.dtype) if layer.bias is None else layer.bias
    shift = promoted(jnp.multiply, promoted(jnp.subtract, bias, bn["mean"]), factor)
    return dataclasses.replace(layer, kernel=promoted(jnp.multiply, layer.kernel, factor),
                               bias=promoted(jnp.add, shift, bn["bias"]), folded=True)


def _conv_spec(path: str, conv: Any) -> ConvSpec:
    if conv is None:
        return ConvSpec()
    if isinstance(conv, ConvSpec):
        return conv
    if isinstance(conv, Mapping):
        spec = conv.get(path, ConvSpec())
        if not isinstance(spec, ConvSpec):
            raise TypeError(f"conv[{path!r}] must be a ConvSpec, got {type(spec).__name__}")
        return spec
    raise TypeError(
        f"conv must be a ConvSpec or a mapping from layer path to ConvSpec, got {type(conv).__name__}"
    )


def _check_chain(layers: Sequence[Layer]) -> None:
    for a, b in zip(layers[:-1], layers[1:], strict=True):
        if b.kind == "dense" and a.kind == "dense":
            ok = a.fan_out == b.fan_in
        elif b.kind == "conv" and a.kind == "conv":
            ok = a.fan_out == b.fan_in
        elif a.kind == "conv" and b.kind == "dense":
            ok = b.fan_in % a.fan_out == 0  # flattening (spatial positions x channels)
        else:
            ok = True  # dense -> conv (a reshape): nothing checkable from the kernels
        if not ok:
            raise ValueError(
                f"params: the layer shapes do not chain in the order read: {a.path!r} has "
                f"kernel {tuple(a.kernel.shape)} but the next layer {b.path!r} has kernel "
                f"{tuple(b.kernel.shape)}; pass the order the network applies its layers "
                f"with layers=[...] (paths: {[layer.path for layer in layers]})"
            )


def _reorder(found: list, layers: Sequence[str]) -> list:
    """Puts the collected modules in the explicit order; BatchNorm paths may be listed too."""
    if isinstance(layers, str):
        raise TypeError(f"layers must be a sequence of layer paths, got the string {layers!r}")
    by_path = {_path_str(f[0]): f for f in found}
    weights = [p for p, f in by_path.items() if f[2] is not None]
    norms = [p for p, f in by_path.items() if f[2] is None]
    names = list(layers)
    unknown = [n for n in names if n not in by_path]
    missing = [p for p in weights if p not in names]
    if norms and any(n in names for n in norms):
        missing += [p for p in norms if p not in names]
    if unknown or missing or len(set(names)) != len(names):
        raise ValueError(
            f"layers must name every weight layer exactly once (and every BatchNorm module if "
            f"any is named); unknown {unknown}, missing {missing}; found {list(by_path)}"
        )
    if norms and not any(n in names for n in norms):
        raise ValueError(
            f"layers must also place the normalisation modules {norms} between the layers"
        )
    return [by_path[n] for n in names]


def _check_real_leaves(tree: Any) -> None:
    """Every leaf must be a real numeric array: an object, string or complex array (a kernel
    loaded from a pickle, a misread file) is named by its path, not left to fail inside jax."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        try:  # a leaf without a dtype is read as an array (an object array if it is none)
            dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        except Exception:  # noqa: BLE001 - reported below as not an array
            dtype = np.dtype(object)
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            bad = "a PRNG key array"
        elif np.dtype(dtype).kind in "OUSVcMm":
            bad = f"dtype {dtype}"
        else:
            continue
        raise TypeError(f"params{jax.tree_util.keystr(path)} must be a real numeric array (params "
                        f"a tree of arrays), got {bad}")


def read_layers(
    params: Any,
    *,
    layers: Sequence[str] | None = None,
    conv: ConvSpec | Mapping[str, ConvSpec] | None = None,
    batchnorm_epsilon: float = 1e-5,
) -> tuple[Layer, ...]:
    """Reads the weight layers of a network, in the order it applies them.

    Args:
      params: the network's parameters (see the module docstring for accepted forms).
      layers: optional explicit order, a sequence of layer paths as they appear in the result
        (e.g. ``["Dense_0", "Dense_1"]``); it must name every weight layer exactly once.
      conv: geometry of the convolution layers: one `ConvSpec` for all, or a mapping from path
        to `ConvSpec`. Conv layers without one get ``ConvSpec()`` (stride 1, 'SAME', unknown
        input shape).
      batchnorm_epsilon: epsilon of BatchNorm layers stored as linen variables (Flax's default
        1e-5); nnx modules carry their own.

    Returns:
      A tuple of `Layer`, first applied first, with BatchNorm folded in.

    Raises:
      TypeError: a leaf is not an array, or an argument has the wrong type.
      ValueError: an empty tree, a None leaf, no weight matrix, NaN/inf weights, shapes that do not chain,
        an ambiguous order, or a `layers` list that does not match the tree.
    """
    tree = _normalise(params)
    if tree is None or not jax.tree_util.tree_leaves(tree):
        raise ValueError("params must be a non-empty tree of arrays, got an empty tree")
    check_no_none_leaves(tree, "params")  # a None leaf would drop its layer silently
    _check_real_leaves(tree)
    check_finite_tree(tree, "params")

    found: list = []
    ambiguous: list = []
    _collect(tree, (), found, ambiguous)

    has_norm = any(kernel_key is None for _, _, kernel_key in found)
    if layers is not None:
        found = _reorder(found, layers)
    elif has_norm and ambiguous:
        raise ValueError(
            "params: where the normalisation (BatchNorm) modules sit between the layers is "
            "ambiguous (the dict keys are in sorted order, as after jax.tree.map, so the "
            "creation order is lost); pass layers=[...] naming every layer and BatchNorm module "
            f"in the order the network applies them (paths: {[_path_str(f[0]) for f in found]})"
        )

    result: list[Layer] = []
    for path, node, kernel_key in found:
        p = _path_str(path)
        if kernel_key is None:  # normalisation module: fold into the previous layer
            if not result:
                raise ValueError(f"params has a normalisation module at {p!r} before any layer")
            result[-1] = _fold_batchnorm(result[-1], node, p, batchnorm_epsilon)
            continue
        kernel = jnp.asarray(node[kernel_key])
        bias_key = next((k for k in _BIAS_NAMES if k in node), None)
        bias = None if bias_key is None else jnp.asarray(node[bias_key])
        kind = "dense" if kernel.ndim == 2 else "conv"
        if bias is not None and bias.shape != (kernel.shape[-1],):
            raise ValueError(
                f"params: the bias at {p!r} has shape {tuple(bias.shape)}, expected "
                f"({kernel.shape[-1]},) for its kernel of shape {tuple(kernel.shape)}"
            )
        spec = _conv_spec(p, conv) if kind == "conv" else None
        result.append(Layer(path=p, kind=kind, kernel=kernel, bias=bias, conv=spec))

    if not result:
        raise ValueError("params holds no weight matrix (no array of rank >= 2)")

    if layers is None and ambiguous and len(result) > 1:
        # The order rests on the alphabet: the one order of the kernels that chains is
        # accepted; more than one is an error (below), none an error of _check_chain.
        orders = _chaining_orders(result)
        if len(orders) == 1:
            result = [result[i] for i in orders[0]]
    _check_chain(result)
    if layers is None and ambiguous and len(result) > 1 and _chain_orders(result) > 1:
        raise ValueError(
            "params: the order of the layers is ambiguous: it rests on the alphabetical order "
            "of names without numbers (jax.jit, jax.tree.map and optax return dicts with sorted "
            "keys), and more than one order of these kernels chains. Trace the network from "
            "its function, genbounds.Network.trace(apply_fn, params, x) (or pass apply_fn and X "
            "to the bound), or pass layers=[...] in the order the network applies them "
            f"(paths: {[layer.path for layer in result]})"
        )
    if isinstance(conv, Mapping):
        conv_paths = {layer.path for layer in result if layer.kind == "conv"}
        stray = [k for k in conv if k not in conv_paths]
        if stray:
            raise ValueError(f"conv names layers that are not convolutions: {stray}")
    return tuple(result)


def _chains(a: Layer, b: Layer) -> bool:
    if a.kind == b.kind:
        return a.fan_out == b.fan_in
    if a.kind == "conv" and b.kind == "dense":
        return b.fan_in % a.fan_out == 0
    return False  # dense -> conv: classifiers put their convolutions first


def _chain_orders(layers: Sequence[Layer], cap: int = 2) -> int:
    """How many orders of `layers` chain by their shapes (counted up to `cap`; up to 12
    layers, more are reported as `cap`)."""
    return cap if len(layers) > 12 else len(_chaining_orders(layers, cap))


def _chaining_orders(layers: Sequence[Layer], cap: int = 2) -> list[list[int]]:
    """Up to `cap` orders of `layers` that chain by their shapes, honouring the numbers of
    Flax names within one parent and type (as `_chain_orders`, which counts them); up to 12
    layers (more: none found, so the order read stands and is checked)."""
    n = len(layers)
    if n > 12:
        return []
    numbered = []
    for layer in layers:
        parent, _, last = layer.path.rpartition("/")
        m = re.fullmatch(r"(.*?)_?(\d+)", last)
        numbered.append((parent, m.group(1), int(m.group(2))) if m else None)
    pred = [{j for j, b in enumerate(numbered) if a and b and a[:2] == b[:2] and b[2] < a[2]}
            for a in numbered]
    found: list[list[int]] = []

    def extend(order: list[int], used: set[int]) -> None:
        if len(found) >= cap:
            return
        if len(order) == n:
            found.append(list(order))
            return
        for k in range(n):
            if k in used or not pred[k] <= used:
                continue
            if order and not _chains(layers[order[-1]], layers[k]):
                continue
            order.append(k)
            used.add(k)
            extend(order, used)
            order.pop()
            used.discard(k)

    extend([], set())
    return found


def num_weights(layers: Sequence[Layer]) -> int:
    """Total number of weights (kernels only, biases excluded)."""
    return sum(layer.num_weights for layer in layers)


def max_width(layers: Sequence[Layer]) -> int:
    """The largest of the input dimension and every layer's output dimension."""
    return max([layers[0].fan_in] + [layer.fan_out for layer in layers])


def has_biases(layers: Sequence[Layer]) -> bool:
    """Whether some layer has a nonzero bias: zero or absent biases are no biases.

    A bound that accounts for biases by `augment_biases` should augment only then; a network
    whose biases are all zero computes the bias-free function, and augmenting it would only
    loosen the bound (an extra constant input and unit, norms of at least 1).
    """
    return any(layer.bias is not None and bool(np.any(np.asarray(layer.bias) != 0))
               for layer in layers)


def augment_biases(layers: Sequence[Layer]) -> tuple[Layer, ...]:
    """The same ReLU network without biases, acting on $[x; 1]$.

    Hidden layer $i$ becomes $\\tilde A_i = [[A_i, b_i], [0, 1]]$: the bias is the weight on an
    extra constant input, and an extra unit passes the constant 1 on (ReLU(1) = 1, ReLU(0) = 0).
    The last layer becomes $[A_L, b_L]$. Every network bound stated for bias-free ReLU networks
    applies to the result, with the input norm $\\|[x; 1]\\|_2 = \\sqrt{\\|x\\|_2^2 + 1}$. In Flax's
    (in, out) layout the kernel grows a row (the bias) and, for hidden layers, a column.
    Dense layers only.
    """
    out = []
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        if layer.kind != "dense":
            raise ValueError(f"augment_biases handles dense layers; {layer.path!r} is a conv")
        k = jnp.asarray(layer.kernel)
        b = jnp.zeros(k.shape[1], k.dtype) if layer.bias is None else jnp.asarray(layer.bias)
        aug = jnp.concatenate([k, b.astype(k.dtype)[None, :]], axis=0)
        if i != last:
            const = jnp.zeros((k.shape[0] + 1, 1), k.dtype).at[-1, 0].set(1.0)
            aug = jnp.concatenate([aug, const], axis=1)
        out.append(dataclasses.replace(layer, kernel=aug, bias=None))
    return tuple(out)


def check_fits(layers: Sequence[Layer], X2: Any, logits: Any, caller: str) -> None:
    """The data must be what the network reads and the logits what it outputs.

    `X2` is the (n, d) flattened input matrix; for a dense first layer d must equal its fan-in,
    and the logits (n, k) or (n,) must have as many columns as the last layer has outputs.
    """
    first, last = layers[0], layers[-1]
    if first.kind == "dense" and int(np.shape(X2)[1]) != first.fan_in:
        raise ValueError(
            f"{caller}: X has {np.shape(X2)[1]} features per example (flattened) but the first "
            f"layer {first.path!r} has fan-in {first.fan_in}; pass the inputs the network reads"
        )
    k = 1 if np.ndim(logits) == 1 else int(np.shape(logits)[-1])
    if k != last.fan_out:
        raise ValueError(
            f"{caller}: logits have {k} columns but the last layer {last.path!r} has "
            f"{last.fan_out} outputs; pass the logits of this network"
        )
