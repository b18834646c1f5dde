"""The Lipschitz constant of a whole network, by composition over its graph."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ._opaque import check_no_opaque

if TYPE_CHECKING:
    from ._network import Network


def lipschitz_log_bound(network: Network, norms: Mapping[str, float], *,
                        upto: int | None = None) -> float:
    r"""$\log$ of an upper bound on the network's Lipschitz constant (input to ``upto``, default
    the logits), by composition over the graph: a linear node multiplies by its norm, a fixed map
    by its Lipschitz constant, an add of two paths adds their bounds
    ($\mathrm{Lip}(x + f(x)) \le 1 + \mathrm{Lip}(f)$), a concatenation takes the root of the sum of
    squares. Accumulated in log space (float64). A network with an opaque record (an operation
    no rule reads, e.g. attention) is refused with its reason (`NotBoundable`)."""
    last = network.logits_node if upto is None else upto
    check_no_opaque(network.nodes, "lipschitz", last)
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
