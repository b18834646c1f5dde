r"""Path norms of a traced network by one forward pass, and the DAG numbers of its path lifting.

A network's records (`Node`) are a DAG of neurons: every linear map, pooling, residual add,
concatenation and activation of `_graph.py` is a set of neurons with weighted edges. A *path*
runs from an input coordinate, or from the bias of a hidden neuron (a path from a constant input
1), along edges to an output; its weight is the product of the edge weights (times the bias).
The $\ell_q$ path norm is $\|\Phi(\theta)\|_q = (\sum_{\text{paths}} |\text{weight}|^q)^{1/q}$.

**One forward pass** (Gonon, Brisebarre, Riccietti & Gribonval 2024, Theorem A.1 of
arXiv:2310.01225): replace every edge weight and bias $w$ by $|w|^q$ and feed an all-ones input;
every value is then a sum of non-negative path weights, ReLU is the identity on them, and the sum
of the outputs is $\|\Phi\|_q^q$. Two conventions differ only in the operations that are not
linear maps:

* ``"gonon"``, Gonon et al.'s path lifting: a max-pooling neuron has an edge of weight 1 from
  each input of its window, so every one of them starts a path and the max pool becomes a *sum*
  pool (padding is no neuron: it starts no path); a global max or min becomes a global sum.
  A positively homogeneous activation $g$ is the ReLU network
  $g(t) = g(1)\,\mathrm{relu}(t) + g(-1)\,\mathrm{relu}(-t)$ (two ReLU neurons with edges
  $g(1)$ and $g(-1)$ out of them), so it scales the sums by $|g(1)|^q + |g(-1)|^q$ (1 for ReLU,
  2 for $|t|$, $1 + \alpha^q$ for a leaky ReLU of slope $\alpha$). Average pooling is a sum pool
  with edges $1/k$; frozen BatchNorm is folded into the linear map before it by `simplify`, or
  stays a per-neuron scale and shift (edges and biases); residual adds have edges of weight
  ``coef``. Any other operation (softmax inside the network, a non-homogeneous activation,
  normalisation by statistics of the input, products of activations) is refused by name.
* ``"jiang"``, Jiang et al. (2020)'s code, which runs the model itself on the squared weights:
  a max pool stays a max and an activation is applied as it is (the identity on the
  non-negative values that flow).

**Depth** (`lifting_structure`): the longest input-to-output path, in edges, of the neuron DAG in
which consecutive affine maps (linear maps, scales, shifts, adds, sum pools) are composed into one
layer of edges; a ReLU neuron holds the ReLU of an affine combination, a max-pool neuron the max
of neurons. For $q = 1$ composing affine maps never increases the path norm (the weight of a
composed edge is a sum of path weights, triangle inequality), so the path norm of the records is
an upper bound on that of the composed DAG, whose depth is the one returned.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import NotBoundable

from ._graph import Node

CONVENTIONS = ("gonon", "jiang")
_AFFINE = ("linear", "scale", "shift", "add")


def _where(node: Node, i: int) -> str:
    return f"node {i} ({node.describe()}{', in ' + repr(node.scope) if node.scope else ''})"


def _homogeneous_split(node: Node, caller: str, i: int) -> tuple[float, float]:
    """(g(1), g(-1)) of a positively homogeneous activation: g = g(1) relu(t) + g(-1) relu(-t)."""
    act = node.activation
    if not act.homogeneous:
        raise NotBoundable(
            f"{caller}: {_where(node, i)} is not positively homogeneous; the path-norm theorem "
            "covers ReLU networks (and activations that are ReLU networks: g(at) = a g(t) for "
            "a >= 0), not this activation")
    with jax.enable_x64(True):
        vals = np.asarray(act.fn(jnp.asarray([1.0, -1.0], jnp.float64)), np.float64)
    if not np.all(np.isfinite(vals)):
        raise NotBoundable(f"{caller}: {_where(node, i)} is not finite at +-1")
    return float(vals[0]), float(vals[1])


def lifted_network(net: Any, q: float, *, convention: str = "gonon",
                   caller: str = "path_norm") -> list[Node]:
    """The records with every weight $w$ replaced by $|w|^q$ (biases included), for the forward
    pass of the module docstring; refuses, by name, what the convention does not cover."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    nodes = []
    last = net.logits_node
    for i, n in enumerate(net.nodes):
        if i > last:
            break
        if n.op == "linear":
            lay = n.layer
            k = jnp.abs(jnp.asarray(lay.kernel, jnp.float64)) ** q
            b = None if lay.bias is None else jnp.abs(jnp.asarray(lay.bias, jnp.float64)) ** q
            n = dataclasses.replace(n, layer=dataclasses.replace(lay, kernel=k, bias=b),
                                    info={**n.info, "dtype": jnp.float64})
        elif n.op == "activation":
            if convention == "jiang":
                if not n.activation.homogeneous:
                    raise ValueError(f"path_norm is defined for ReLU-like (positively "
                                     f"homogeneous) activations; the network has "
                                     f"{n.activation.name}")
            else:
                up, down = _homogeneous_split(n, caller, i)
                c = abs(up) ** q + abs(down) ** q
                n = Node("scale", n.inputs, n.shape, n.scope, info={"c": np.asarray(c)})
        elif n.op == "scale":
            n = dataclasses.replace(n, info={**n.info, "c": np.abs(n.info["c"]) ** q})
        elif n.op == "shift":
            n = dataclasses.replace(n, info={**n.info, "c": np.abs(n.info["c"]) ** q})
        elif n.op == "add":
            n = dataclasses.replace(n, info={**n.info,
                                             "coef": tuple(abs(c) ** q for c in n.info["coef"])})
        elif n.op == "pool":
            kind = n.info["kind"]
            info = dict(n.info)
            if "factor" in info:
                info["factor"] = abs(info["factor"]) ** q
            if convention == "gonon":
                if kind == "max":
                    info["kind"] = "sum"  # an edge of weight 1 from every input of the window
                elif kind in ("global_max", "global_min"):
                    info["kind"] = "global_sum"
                elif kind not in ("sum", "global_sum"):
                    raise NotBoundable(f"{caller}: {_where(n, i)}: a {kind} pool is not an "
                                       "operation of the path-norm theorem")
            n = dataclasses.replace(n, info=info)
        elif n.op in ("input", "reshape", "concat"):
            pass
        elif convention == "gonon":
            raise NotBoundable(
                f"{caller}: {_where(n, i)}: {n.op!r} is not an operation of a DAG ReLU network "
                "(linear maps, ReLU, max and average pooling, residual adds, concatenations, "
                "frozen BatchNorm), so the path-norm theorem does not cover it")
        nodes.append(n)
    return nodes


def lifted_path_sum(net: Any, q: float, *, biases: bool = True, convention: str = "gonon",
                    caller: str = "path_norm") -> tuple[float, int]:
    r"""$(s, e)$ with $\sum_{\text{paths}} \prod |w|^q = s\,2^e$, by one float64 forward pass.

    Args:
      net: a `Network` (traced, or a chain read from parameter names).
      q: the exponent, > 0.
      biases: count the paths that start at a bias (Gonon et al.'s $\Phi$ always does).
      convention: ``"gonon"`` or ``"jiang"`` (module docstring).
      caller: named in refusals.

    Raises:
      NotBoundable: an operation the convention does not cover (named).
    """
    with jax.enable_x64(True):  # float64 whatever the caller's jax_enable_x64 setting
        nodes = lifted_network(net, q, convention=convention, caller=caller)
        if not biases:
            nodes = [_without_biases(n) for n in nodes]
        view = type(net)(nodes, len(nodes) - 1, source="trace", input_shape=net.input_shape)
        ones = jnp.ones((1, *net.input_shape), jnp.float64)
        total = float(jnp.sum(view.evaluate(ones)))
    if total == 0.0:
        return 0.0, 0
    mant, exp = math.frexp(total)
    return mant, exp


def _without_biases(n: Node) -> Node:
    if n.op == "linear" and n.layer.bias is not None:
        return dataclasses.replace(n, layer=dataclasses.replace(n.layer, bias=None))
    if n.op == "shift":
        return dataclasses.replace(n, info={**n.info, "c": np.zeros_like(n.info["c"])})
    return n


class LiftingStructure(NamedTuple):
    r"""The numbers of a network's DAG that Gonon et al. (2024)'s Theorem 3.1 depends on.

    Attributes:
      depth: $D$, the longest input-to-output path in edges (module docstring: affine maps
        composed).
      pool_types: $P$, the number of distinct kinds of order-statistic pooling neurons
        ($k$-max pooling for distinct $k$: a max pool is $k = 1$, a global min over $m$
        inputs is $k = m$); 0 without max pooling.
      kernel: $K$, the largest number of inputs of a max-pooling neuron (its window size; the
        number of positions of a global max); 1 without max pooling.
      d_in: the number of input coordinates of one example.
      d_out: the number of outputs (logits).
    """

    depth: int
    pool_types: int
    kernel: int
    d_in: int
    d_out: int


def lifting_structure(net: Any, *, caller: str = "gonon") -> LiftingStructure:
    """`LiftingStructure` of a network's records (refusing, by name, what
    `lifted_network` refuses under the ``"gonon"`` convention)."""
    with jax.enable_x64(True):
        lifted_network(net, 1.0, convention="gonon", caller=caller)  # the refusals
    # state per node: ("M", m): materialised neurons of depth m; ("A", a): an affine combination
    # of neurons of depth <= a, not yet materialised (composed into the next layer of edges).
    state: list[tuple[str, int]] = []
    ks: set[int] = set()
    kernel = 1

    def ante(s: tuple[str, int]) -> int:
        return s[1]

    def neurons(s: tuple[str, int]) -> int:  # depth once materialised
        return s[1] if s[0] == "M" else s[1] + 1

    last = net.logits_node
    for i, n in enumerate(net.nodes[:last + 1]):
        ins = [state[j] for j in n.inputs]
        if n.op == "input":
            s = ("M", 0)
        elif n.op in _AFFINE:
            s = ("A", max(ante(v) for v in ins))
        elif n.op in ("reshape", "concat"):
            s = ("M", max(v[1] for v in ins)) if all(v[0] == "M" for v in ins) else \
                ("A", max(ante(v) for v in ins))
        elif n.op == "activation":
            up, down = _homogeneous_split(n, caller, i)
            d = ins[0][1] + 1  # ReLU of an affine combination, or of a neuron (edge of weight 1)
            s = ("M", d) if (up == 1.0 and down == 0.0) else ("A", d)
        elif n.op == "pool":
            kind = n.info["kind"]
            if kind in ("sum", "global_sum"):
                s = ("A", ante(ins[0]))
            else:  # an order statistic: materialise the inputs, then one layer of pool neurons
                s = ("M", neurons(ins[0]) + 1)
                window = int(np.prod(n.info["window"]))  # its number of inputs
                ks.add(window if kind == "global_min" else 1)  # the min is the m-th largest
                kernel = max(kernel, window)
        else:  # pragma: no cover - lifted_network refused it above
            raise NotBoundable(f"{caller}: {_where(n, i)} is not covered")
        state.append(s)
    depth = neurons(state[last])
    if state[last][0] == "M":  # output neurons are identity neurons fed by edges of weight 1
        depth += 1
    d_in = int(np.prod(net.input_shape))
    d_out = int(np.prod(net.nodes[last].shape)) if net.nodes[last].shape else 1
    return LiftingStructure(depth=int(depth), pool_types=len(ks), kernel=int(kernel) if ks else 1,
                            d_in=d_in, d_out=d_out)
