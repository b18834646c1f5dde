"""What a bound with data and a reference reads from its inputs.

`data_chain` turns a bound's ``params`` (or `Network`) into a chain verified on the data;
`reference_layers` reads the reference matrices $M_i$ (e.g. the initial parameters) that a
bound measures distances from, matched to the network's layers by path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._chain import Chain, verify_chain
from ._layers import Layer
from ._network import Network, as_network
from ._norms import read_reference


def data_chain(params: Any, *, X: Any, X2: np.ndarray, logits: Any, apply_fn: Any,
               layers: Any, conv: Any, caller: str, homogeneous: bool = False,
               dense_only: bool = False) -> tuple[Network, Chain]:
    """The network of a bound with data, as a verified chain (or an error with the reason)."""
    net = as_network(params, apply_fn=apply_fn, X=X, layers=layers, conv=conv, caller=caller)
    if net.structure_assumed:
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
    elif not net.structure_assumed and net.apply_fn is not None:
        try:
            ref_layers = Network.trace(net.apply_fn, reference, net.example).layers
        except ValueError as e:
            raise ValueError(f"{caller}: the reference parameters do not trace like params: "
                             f"{e}") from e
    else:
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
