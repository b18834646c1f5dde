r"""A sharper Lipschitz bound than the product of layer norms: merged linear maps and blocks.

`tight_bound` composes over the graph as `lipschitz_log_bound` does, with two sound
improvements, each used only where it is smaller:

* **merged linear runs**: consecutive linear records with nothing non-linear between them (a
  convolution, a reshape and a dense layer; a folded scale; a sum or average pool) are one
  linear map, whose norm is at most the product of theirs; where its matrix is small enough
  (``max_entries``) it is materialised in float64 and its exact norm (SVD) used;
* **blocks around one activation**: where a linear run $A$ from a record $s$ is followed by an
  element-wise activation $\sigma$ with slopes in $[m - r, m + r]$ and a linear run $B$, and
  the result is added to $s$ itself or to a linear run $P$ from $s$ (a residual block,
  $t = c_P P s + c_B B \sigma(A s)$), or stands alone (two layers, $P = 0$), then for every
  $x, x'$ the mean-value theorem along the segment gives
  $t(x) - t(x') = (c_P P + c_B B D A)(s(x) - s(x'))$ with $D$ diagonal, entries in
  $[m - r, m + r]$, so writing $D = mI + (D - mI)$, $\|D - mI\| \le r$:
  $\mathrm{Lip}(s \mapsto t) \le \|c_P P + m\, c_B B A\| + r\,\lvert c_B\rvert\,\|B\|\,\|A\|$,
  never more than $|c_P|\|P\| + |c_B|\|B\|\,\max(|m-r|,|m+r|)\,\|A\|$ (the composition). For ReLU
  ($m = r = 1/2$) a residual block $x + W_2\,\mathrm{relu}(W_1 x)$ gets
  $\|I + \tfrac12 W_2W_1\| + \tfrac12\|W_2\|\|W_1\|$ in place of $1 + \|W_2\|\|W_1\|$; the
  merged matrix $c_P P + m\,c_B BA$ is materialised (float64, exact SVD) when small enough.

The slopes of an activation come from the analysis of its program, never from its name: the
exact slope range of a piecewise-linear program ($[0, 1]$ for ReLU, $[\min(1, a), \max(1, a)]$
for leaky ReLU with slope $a$), and $[-L, L]$ (no gain, the composition bound) for any other
program, whose Lipschitz bound $L$ is all that is proved.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._logspace import exp_or_inf

from ._graph import eval_node as _eval_node
from ._opaque import check_no_opaque

if TYPE_CHECKING:
    from ._network import Network

_LINEAR_OPS = ("linear", "reshape", "scale", "shift")



def _is_linear(node) -> bool:
    return node.op in _LINEAR_OPS or (node.op == "pool" and node.info.get("kind") in
                                      ("sum", "global_sum"))


def _consumers(net: Network, last: int) -> dict[int, list[int]]:
    cons: dict[int, list[int]] = {i: [] for i in range(last + 1)}
    for i, n in enumerate(net.nodes[1:last + 1], start=1):
        for j in n.inputs:
            cons[j].append(i)
    return cons


def _segments(net: Network, last: int) -> list[list[int]]:
    """Maximal runs of linear records (linear, reshape, scale, shift, sum pool), each record
    the only consumer of the one before; each run holds at least one linear map."""
    cons = _consumers(net, last)
    seen: set[int] = set()
    out = []
    for i in range(1, last + 1):
        if i in seen or not _is_linear(net.nodes[i]):
            continue
        seg = [i]
        while seg[-1] != last and len(cons[seg[-1]]) == 1:
            c = cons[seg[-1]][0]
            if not _is_linear(net.nodes[c]) or net.nodes[c].inputs != (seg[-1],):
                break
            seg.append(c)
        seen.update(seg)
        if any(net.nodes[j].op == "linear" for j in seg):
            out.append(seg)
    return out


def _segment_matrix(net: Network, seg: list[int], max_entries: int) -> np.ndarray | None:
    """The merged linear map of a run of records, as a float64 matrix (in_dim, out_dim)."""
    src = net.nodes[seg[0]].inputs[0]
    in_shape = net.nodes[src].shape
    first, lastn = net.nodes[seg[0]], net.nodes[seg[-1]]
    if not in_shape or not lastn.shape:  # read from names: shapes known for dense maps only
        if first.op != "linear" or first.layer.kind != "dense" or len(seg) != 1:
            return None
        in_shape = (first.layer.fan_in,)
        d_out = first.layer.fan_out
    else:
        d_out = math.prod(lastn.shape)
    d_in = math.prod(in_shape)
    if d_in * d_out > max_entries:
        return None
    with jax.enable_x64(True):
        basis = jnp.concatenate([jnp.zeros((1, d_in)), jnp.eye(d_in)]).reshape(
            (d_in + 1,) + tuple(in_shape))
        v = basis
        for i in seg:
            node = net.nodes[i]
            if node.op == "linear":
                node = dataclasses.replace(node, info={**node.info, "dtype": jnp.float64})
            v = _eval_node(node, [v])
        v = np.asarray(v, np.float64).reshape(d_in + 1, d_out)
    return v[1:] - v[:1]  # affine: subtract the image of 0 (biases, shifts)


def slopes(activation: Any, lipschitz: float) -> tuple[float, float]:
    """(m, r): the activation's derivative lies in [m - r, m + r] wherever it exists.

    The range comes from the analysis of the activation's program, never from its name: the
    exact slope range of a piecewise-linear program (ReLU: [0, 1], leaky ReLU with slope a:
    [min(1, a), max(1, a)]); for any other program only its Lipschitz bound L is proved, so
    [-L, L] (the block rule then equals the plain composition)."""
    rng = getattr(activation, "slope_range", None)
    if rng is not None:
        lo, hi = float(rng[0]), float(rng[1])
        return 0.5 * (lo + hi), 0.5 * (hi - lo)
    return 0.0, float(lipschitz)


def _log(v: float) -> float:
    return math.log(v) if v > 0 else -math.inf


def tight_bound(net: Network, norms: Any, max_entries: int = 2**21) -> dict:
    """Composition over the graph with merged linear runs and blocks (module docstring).

    Returns a dict: ``log_lipschitz`` (the bound, log), ``segments`` (per merged run: its
    norm, how it was obtained and the product of its layer norms), ``blocks`` (per block:
    the bound used and the composition's), ``last`` (the source record and matrix of the run
    that ends at the logits, or None) and ``logl`` (log bound of every record).
    """
    last = net.logits_node
    check_no_opaque(net.nodes, "lipschitz", last)
    segs = _segments(net, last)
    end_of = {seg[-1]: seg for seg in segs}
    inside = {i for seg in segs for i in seg[:-1]}
    cons = _consumers(net, last)
    seg_norms: dict = {}
    blocks: dict = {}
    run: dict[int, tuple[int, float, np.ndarray | None]] = {}  # end -> (source, log norm, mat)
    last_matrix = None
    logl = [0.0] * (last + 1)

    def two_hop(b_end: int):
        """(s, A run, activation node, B run) when b_end ends B in s -A-> sigma -B->."""
        if b_end not in run:
            return None
        act = run[b_end][0]
        an = net.nodes[act]
        if an.op != "activation" or len(cons[act]) != 1 or an.inputs[0] not in run:
            return None
        u = an.inputs[0]
        if len(cons[u]) != 1:
            return None
        return run[u][0], u, act

    def block_bound(s: int, u: int, act: int, b_end: int, p_end: int | None, coef) -> float:
        """log of ||c_P P + m c_B B A|| + r |c_B| ||B|| ||A|| (inf where not computable)."""
        an = net.nodes[act]
        m, r = slopes(an.activation, an.lipschitz)
        _, log_a, mat_a = run[u]
        _, log_b, mat_b = run[b_end]
        if mat_a is None or mat_b is None:
            return math.inf
        merged = coef[1] * m * (mat_a @ mat_b)
        if p_end is not None:
            if p_end == s:
                if mat_a.shape[0] != merged.shape[1]:
                    return math.inf
                merged = merged + coef[0] * np.eye(merged.shape[0])
            else:
                mat_p = run[p_end][2]
                if mat_p is None:
                    return math.inf
                merged = merged + coef[0] * mat_p
        head = float(np.linalg.norm(merged, 2)) if merged.size else 0.0
        return _log(head + r * abs(coef[1]) * exp_or_inf(log_a + log_b))

    for i in range(1, last + 1):
        node = net.nodes[i]
        if i in inside:
            logl[i] = math.nan  # consumed only by the next record of its run
            continue
        if i in end_of:
            seg = end_of[i]
            src = net.nodes[seg[0]].inputs[0]
            prod = 0.0
            for j in seg:
                n = net.nodes[j]
                if n.op == "linear":
                    prod += _log(float(norms[n.layer.path]))
                elif n.op == "scale" or n.op == "pool":
                    prod += _log(n.lipschitz)
            log_norm = prod
            mat = _segment_matrix(net, seg, max_entries)
            how = "product of layer norms"
            if mat is not None:
                exact = float(np.linalg.norm(mat, 2)) if mat.size else 0.0
                if exact == 0 or math.log(exact) < log_norm:
                    log_norm, how = _log(exact), "exact norm of the merged map (SVD)"
            name = "+".join(net.nodes[j].layer.path for j in seg if net.nodes[j].op == "linear")
            seg_norms[name] = {"norm": exp_or_inf(log_norm), "how": how,
                               "product": exp_or_inf(prod)}
            run[i] = (src, log_norm, mat)
            logl[i] = logl[src] + log_norm
            hop = two_hop(i)
            if hop is not None:  # two layers around one activation (P = 0)
                s, u, act = hop
                cand = logl[s] + block_bound(s, u, act, i, None, (0.0, 1.0))
                if cand < logl[i]:
                    blocks[name] = {"bound": exp_or_inf(cand - logl[s]),
                                    "composition": exp_or_inf(logl[i] - logl[s])}
                    logl[i] = cand
            if i == last:
                last_matrix = (src, mat)
            continue
        ins = [logl[j] for j in node.inputs]
        if node.op == "add":
            logl[i] = float(np.logaddexp(ins[0] + _log(abs(node.info["coef"][0])),
                                         ins[1] + _log(abs(node.info["coef"][1]))))
            for k in (0, 1):  # a residual block: x + B sigma(A x), or P x + B sigma(A x)
                b_end, other = node.inputs[k], node.inputs[1 - k]
                hop = two_hop(b_end)
                if hop is None or len(cons[b_end]) != 1:
                    continue
                s, u, act = hop
                if other == s:
                    p_end = s
                elif other in run and run[other][0] == s and len(cons[other]) == 1:
                    p_end = other
                else:
                    continue
                coef = (node.info["coef"][1 - k], node.info["coef"][k])
                cand = logl[s] + block_bound(s, u, act, b_end, p_end, coef)
                if cand < logl[i]:
                    blocks[node.scope or f"add {i}"] = {
                        "bound": exp_or_inf(cand - logl[s]),
                        "composition": exp_or_inf(logl[i] - logl[s])}
                    logl[i] = cand
        elif node.op == "concat":
            logl[i] = 0.5 * float(np.logaddexp.reduce(2.0 * np.asarray(ins)))
        elif node.op == "shift":
            logl[i] = ins[0]
        else:
            logl[i] = ins[0] + _log(node.lipschitz)
    return {"log_lipschitz": logl[last], "segments": seg_norms, "blocks": blocks,
            "last": last_matrix, "logl": logl}
