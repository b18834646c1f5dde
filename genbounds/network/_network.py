"""The `Network` type, and `as_network`, the one place where public functions turn their
input into one.

A `Network` is read from the network's function by `Network.trace` (the jaxpr interpreter of
`_trace.py` in this package) or from a parameter tree alone by `Network.from_params` (the
name-based reader of `_layers.py`, for plain chains whose order the names tell).

**Verification.** `Network.trace` re-evaluates the records (canonical layouts, the analysed
element-wise programs, folded kernels) on ``x`` and compares with ``apply_fn(params, x)``, and
`as_network` does so on every example of the ``X`` a bound uses (`Network.verify`); a mismatch
beyond float tolerance is an error, so a network is never bounded as something it is not. A
network read from parameter names only *assumes* its structure (a chain with ReLU between the
layers: `Network.structure_assumed`); a bound with data checks it against the logits
(`verify_chain`) before using it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import NotBoundable
from genbounds.core._dtypes import default_tolerance

from ._chain import Chain, chain_of
from ._elementwise import relu as _relu
from ._graph import Node, eval_node
from ._layers import Layer, read_layers
from ._trace import trace_records


class Network:
    """A network as the bounds read it: ordered records of linear maps, activations and structure.

    Build one with `Network.trace` (from the network's function: the source of truth) or
    `Network.from_params` (from a parameter tree alone, for plain chains whose order the names
    tell). Every bound and measure accepts a `Network` in place of ``params``.

    Attributes:
      nodes: the records, in application order (node 0 is the input).
      output: index of the output node.
      source: ``"trace"`` (read from ``apply_fn``, verified) or ``"params"`` (read from names);
        code that uses a network asks `structure_assumed` or `flat_input` rather than this.
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
        self.output_dtype: Any = None
        self.rtol = 0.0
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
          TypeError: ``apply_fn`` is not callable, returns something other than one array, or
            fails on ``x`` (e.g. an input width other than the network's).
          NotBoundable: ``apply_fn`` branches in Python on the values of ``params`` or ``x``
            (``if z.sum() > 0``) or converts them to numpy: tracing sees no values, so it
            cannot read the network (use ``jnp.where`` / ``jax.lax.cond``).
          ValueError: ``x`` has no batch axis or is not finite; the network holds an operation
            no bound covers (the message names the layer); the records do not reproduce
            ``apply_fn`` (a mismatch is never silently bounded).

        Examples:
          >>> import jax, jax.numpy as jnp, flax.linen as nn
          >>> class MLP(nn.Module):
          ...     @nn.compact
          ...     def __call__(self, x):
          ...         return nn.Dense(3)(nn.relu(nn.Dense(8)(x)))
          >>> x = jnp.ones((2, 4), jnp.float32)  # the dtype of the parameters
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
        _check_traceable(call, tree, x)
        nodes, output, dtype = trace_records(call, tree, x)
        tol = default_tolerance(dtype)
        notes = ["read from apply_fn by tracing (jaxpr), verified against apply_fn on x"]
        net = cls(nodes, output, source="trace", input_shape=tuple(x.shape[1:]), notes=notes,
                  params=params, apply_fn=apply_fn)
        net.example = x
        net.output_dtype = dtype
        net.rtol = rtol if rtol is not None else tol
        if check:
            net.max_error = net._error(call, tree, x, "x")
        return net

    def _error(self, call: Callable, tree: Any, x: Any, what: str) -> float:
        """The relative error of the records against ``call(tree, x)``, or an error."""
        dtype = self.output_dtype
        want = np.asarray(call(tree, x), np.float64)
        if not np.all(np.isfinite(want)):
            small = np.dtype(dtype).itemsize < 8
            nan, inf = int(np.isnan(want).sum()), int(np.isinf(want).sum())
            raise ValueError(
                f"apply_fn(params, {what}) is not finite on finite inputs ({nan} NaN and {inf} "
                f"infinite entries): "
                + (f"the network's outputs overflowed {np.dtype(dtype).name} (a deep or "
                   "large-weight net); evaluate it in float64 (jax_enable_x64 and float64 "
                   "params and x)" if small else "it returned NaN or inf"))
        got = np.asarray(self.evaluate(x), np.float64)
        if want.shape != got.shape:
            raise ValueError(f"the traced network's records give outputs of shape "
                             f"{got.shape}, apply_fn gives {want.shape}")
        scale = max(1.0, float(np.max(np.abs(want))))
        err = float(np.max(np.abs(want - got))) / scale
        if not err <= self.rtol:
            raise ValueError(
                f"the traced network does not reproduce apply_fn(params, {what}): relative "
                f"error {err:.3g} > {self.rtol:g}; it is not bounded as something it is not. "
                f"Records: {self.describe()}")
        return err

    def verify(self, X: Any, *, batch: int = 1024) -> float:
        """Checks the records against ``apply_fn`` on every example of ``X``, in batches.

        Returns:
          The largest relative error (also kept in ``max_error``).

        Raises:
          ValueError: the records do not reproduce ``apply_fn`` on some batch (named), or the
            network was not traced.
        """
        if self.apply_fn is None:
            raise ValueError("verify needs a network read from its function (Network.trace)")
        call, tree = _callable(self.apply_fn, self.params)
        X = jnp.asarray(X)
        if not jnp.issubdtype(X.dtype, jnp.floating):
            X = X.astype(jnp.float32)
        worst = 0.0
        for s in range(0, int(X.shape[0]), batch):
            e = min(int(X.shape[0]), s + batch)
            worst = max(worst, self._error(call, tree, X[s:e], f"X[{s}:{e}]"))
        self.max_error = max(worst, self.max_error or 0.0)
        self.notes = tuple(n.replace("verified against apply_fn on x", "verified against "
                                     f"apply_fn on all {int(X.shape[0])} examples of X")
                           for n in self.notes)
        return worst

    @classmethod
    def from_params(cls, params: Any, *, layers: Sequence[str] | None = None,
                    conv: Any = None) -> Network:
        """Reads a chain of layers from a parameter tree by its names (see `read_layers`).

        The structure cannot be seen in parameters: the result *assumes* a chain with ReLU
        between layers, says so in ``notes``, and is verified only where logits are given to
        a bound. Use `Network.trace` for anything else.
        """
        read = read_layers(params, layers=layers, conv=conv)
        nodes = [Node("input", (), (read[0].fan_in,) if read[0].kind == "dense" else (), "")]
        relu = _relu()
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

    @property
    def structure_assumed(self) -> bool:
        """True when the records are an assumption, not a reading: a chain with ReLU between
        the layers, read from parameter names (`from_params`). Such a network must reproduce
        the logits a bound is given (`verify_chain`) before the bound uses it, and only its
        chain of layers is known (no skip connections, pooling or reshapes). False for a
        network read from its function (`trace`), whose records are its real graph."""
        return self.source == "params"

    @property
    def flat_input(self) -> bool:
        """True when the network reads each example as one flat vector (a chain read from
        parameter names: its first layer's fan-in is the size of a flattened example); a traced
        network reads examples in their own shape, ``input_shape``."""
        return self.source == "params"

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
        if self.flat_input and self.nodes[0].shape and x.ndim > 2:
            x = x.reshape(x.shape[0], -1)
        vals: list = [x]
        last = self.output if upto is None else upto
        for node in self.nodes[1:last + 1]:
            vals.append(eval_node(node, [vals[i] for i in node.inputs]))
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
        return chain_of(self, caller, homogeneous=homogeneous, dense_only=dense_only,
                        allowed=allowed)


def _check_traceable(call: Callable, tree: Any, x: jax.Array) -> None:
    """``call(tree, x)`` evaluated abstractly (no computation): Python control flow over values
    raises `NotBoundable` naming apply_fn, any other failure a `TypeError` naming x's shape."""
    try:
        jax.eval_shape(call, tree, x)
    except _UNTRACEABLE as e:
        first = str(e).strip().splitlines()[0][:160]
        raise NotBoundable(
            "Network.trace: apply_fn could not be traced by jax: it uses the values of params "
            "or x in Python (an `if` or `bool()` on an array, a numpy call, an int() of an "
            f"array), which tracing does not see ({type(e).__name__}: {first}); write it with "
            "jax.numpy (jnp.where or jax.lax.cond for branches). A number for a function that "
            "was not read is not certified"
        ) from e
    except Exception as e:  # noqa: BLE001 - re-raised naming the arguments
        raise TypeError(
            f"Network.trace: apply_fn(params, x) failed on x of shape {tuple(x.shape)} and dtype "
            f"{x.dtype} (an input of another width or layout than the network's?): "
            f"{str(e).strip().splitlines()[0][:300]}"
        ) from e


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

    A `Network` is returned as it is; ``apply_fn`` with ``X`` traces one (on the first 16
    examples: the jaxpr does not depend on the batch size) and verifies its records on every
    example of ``X``, in batches (`Network.verify`); an ``apply_fn`` jax cannot trace is refused
    (`NotBoundable`); parameters alone are read by their names (`Network.from_params`).
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
        X = jnp.asarray(X)
        x = X[: min(int(X.shape[0]), 16)]  # the jaxpr is the same for every batch size
        try:
            net = Network.trace(apply_fn, params, x)
        except NotBoundable as e:  # named for the function the user called
            raise NotBoundable(f"{caller}: {str(e).removeprefix('Network.trace: ')}") from None
        net.verify(X)  # the records, on every example a bound will use
        return net
    return Network.from_params(params, layers=layers, conv=conv)


_UNTRACEABLE = (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError,
                jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError)


def require_function(net: Network, caller: str) -> None:
    """Refuses a network whose structure was assumed, not read from its function.

    A Lipschitz constant, and anything certified from one, depends on the activation
    functions, which parameters alone do not show: a chain read from parameter names assumes
    ReLU, and a number for a function that was not read is not certified.

    Raises:
      NotBoundable: ``net`` was read from parameter names (no ``apply_fn``, or an ``apply_fn``
        jax could not trace).
    """
    if not net.structure_assumed:
        return
    raise NotBoundable(
        f"{caller} needs the network's function: pass apply_fn=... (e.g. model.apply) with X, "
        "or a Network from genbounds.Network.trace. The constant depends on the activation "
        "functions, which parameters alone do not show (read from parameter names, the network "
        "would be assumed to be a ReLU chain, and a number for an assumed function is not "
        "certified)")

