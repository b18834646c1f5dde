"""A network as a chain of layers, the form the chain theorems are stated for.

`chain_of` (behind `Network.chain`) reads a `Network` as linear maps with fixed maps between
them, and the Lipschitz constants $\\rho_i$ of those maps, or refuses with the reason (a residual
or branched network, an operation a theorem does not cover). `verify_chain` checks a chain read
from parameter names against the logits a caller gave: the structure of such a chain is assumed,
not read, so it is bounded only once it reproduces the network's outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import NotBoundable

from ._graph import Node
from ._layers import Layer

if TYPE_CHECKING:
    from ._network import Network


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


def chain_of(net: Network, caller: str, *, homogeneous: bool = False, dense_only: bool = False,
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
    if net.structure != "chain":
        adds = [n.scope or f"node {i}" for i, n in enumerate(net.nodes)
                if n.op in ("add", "concat")]
        raise NotBoundable(
            f"{caller}: the network is {net.structure} (merges at {adds}); the theorem is "
            "stated for a chain of layers, so it gives no bound here. Residual networks "
            "get a certified Lipschitz bound by composition (genbounds.lipschitz)")
    seq = net.nodes[1:net.logits_node + 1]
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
    for n in seq:
        if n.op == "linear" and n.info.get("positions", 1) > 1:
            raise NotBoundable(
                f"{caller}: the dense map {n.layer.path!r} is applied at each of "
                f"{n.info['positions']} positions (tokens, patches) of its input: its operator "
                "is the block-diagonal I (x) W, whose (2,1) norm and width are not those of W; "
                "the chain theorems here read a dense layer as one matrix")
    if dense_only and any(layer.kind != "dense" for layer in layers):
        convs = [layer.path for layer in layers if layer.kind != "dense"]
        raise NotBoundable(f"{caller}: the theorem is stated for fully connected layers; "
                           f"{convs} are convolutions")
    return Chain(tuple(layers), tuple(rho), tuple(names))



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
