r"""Certified robustness radii from the network's Lipschitz bound, beside attacks.

**Theorem** (Tsuzuku, Sato & Sugiyama 2018, "Lipschitz-Margin Training", arXiv:1802.04034,
Proposition 1). Let $f: \mathbb{R}^d \to \mathbb{R}^K$ be $L$-Lipschitz in the $\ell_2$ norm, and
let the margin of $x$ with label $t$ be $M(x) = f_t(x) - \max_{j \ne t} f_j(x) > 0$. Then every
$x'$ with $\|x' - x\|_2 < M(x) / (\sqrt 2 L)$ is classified $t$ (with a unique argmax).

*Proof sketch.* For every $j \ne t$, $f_t - f_j = (e_t - e_j)^\top f$ and
$\|e_t - e_j\|_2 = \sqrt 2$, so $f_t - f_j$ is $\sqrt 2 L$-Lipschitz and
$f_t(x') - f_j(x') \ge f_t(x) - f_j(x) - \sqrt 2 L \|x' - x\|_2 \ge M(x) - \sqrt 2 L\|x'-x\|_2 > 0$.

The same argument gives sharper radii when more is known of the network:

* **pairwise last layer**: when the logits are an affine map $A^\top h(x) + b$ of features $h$
  with Lipschitz bound $L_h$ (the last linear maps merged, see below),
  $f_t - f_j = (a_t - a_j)^\top h + b_t - b_j$ is $\|a_t - a_j\|_2 L_h$-Lipschitz, so the radius
  is $\min_{j \ne t} (f_t(x) - f_j(x)) / (\|a_t - a_j\|_2 L_h)$; since
  $\|a_t - a_j\|_2 = \|A (e_t - e_j)\|_2 \le \sqrt 2 \|A\|_\sigma$ it is never smaller than the
  radius of the theorem. A linear classifier ($h$ the input, $L_h = 1$) gets the exact distance
  to its decision boundary;
* **merged linear maps**: consecutive linear records with nothing non-linear between them
  (a convolution, the flattening reshape and a dense layer; two dense layers; a folded scale)
  are one linear map, whose operator norm is at most the product of theirs; where the merged
  matrix is small enough (``max_entries``) it is materialised in float64 and its exact norm
  (SVD) used. The composition over the graph (residual adds included) is that of
  `genbounds.lipschitz`.

Every radius here is a valid certificate, so each example gets the largest of them.
An $\ell_\infty$ radius follows from $\|\delta\|_2 \le \sqrt d \|\delta\|_\infty$ ($d$ the input
dimension): $r_\infty = r_2 / \sqrt d$; for a linear classifier, the exact
$\min_j (f_t - f_j) / \|a_t - a_j\|_1$ (Hölder) is used instead.

With certified layer norms (the default) a radius is certified except with probability
``failure_probability`` over the random start vectors of the randomised norm certificates
(0 where all norms are exact); the margins are those of the network as evaluated (float
rounding of the logits is not accounted for).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    check_array,
    check_choice,
    check_delta,
    check_labels,
    check_same_length,
)
from genbounds.losses._margins import margins_core
from genbounds.network._graph import eval_node as _eval_node
from genbounds.network._lipschitz import lipschitz_log_bound
from genbounds.network._network import Network, as_network, require_function
from genbounds.network._norms import spectral_norms

from ._attacks import NORMS, _check_box, _check_eps, fgsm, pgd

_LINEAR_OPS = ("linear", "reshape", "scale", "shift")
METHODS = ("tight", "product")


@dataclasses.dataclass(frozen=True)
class CertifiedRadii:
    """Certified radii of a batch of examples.

    Attributes:
      radius: float64 array (n,): no perturbation of norm < radius (in ``norm``) changes the
        prediction; 0 where the example is misclassified.
      norm: ``"l2"`` or ``"linf"``.
      margins: the logit margins of the examples.
      lipschitz: the product/composition bound $L$ of the logit map (`genbounds.lipschitz`).
      lipschitz_tight: the bound with merged linear maps (None for ``method="product"``).
      method: ``"tight"`` or ``"product"``.
      failure_probability: probability that some layer norm used lies below the true norm.
      terms: how the radii were obtained (per-method radii, segment norms, notes).
    """

    radius: np.ndarray
    norm: str
    margins: np.ndarray
    lipschitz: float
    lipschitz_tight: float | None
    method: str
    failure_probability: float
    terms: dict

    def accuracy(self, eps: Any) -> np.ndarray:
        r"""Certified accuracy at each radius of ``eps``: the fraction with radius $> \varepsilon$."""
        grid = _check_eps(eps)
        return np.asarray([float(np.mean(self.radius > e)) for e in grid], np.float64)


def _consumers(net: Network, last: int) -> dict[int, list[int]]:
    cons: dict[int, list[int]] = {i: [] for i in range(last + 1)}
    for i, n in enumerate(net.nodes[1:last + 1], start=1):
        for j in n.inputs:
            cons[j].append(i)
    return cons


def _segments(net: Network, last: int) -> list[list[int]]:
    """Maximal runs of linear records (linear, reshape, scale, shift), each record the only
    consumer of the one before; each run holds at least one linear map."""
    cons = _consumers(net, last)
    seen: set[int] = set()
    out = []
    for i in range(1, last + 1):
        if i in seen or net.nodes[i].op not in _LINEAR_OPS:
            continue
        seg = [i]
        while seg[-1] != last and len(cons[seg[-1]]) == 1:
            c = cons[seg[-1]][0]
            if net.nodes[c].op not in _LINEAR_OPS or net.nodes[c].inputs != (seg[-1],):
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


def _tight_bound(net: Network, norms: Any, max_entries: int) -> dict:
    """Composition over the graph with merged linear runs; and the last run's matrix."""
    last = net.logits_node
    segs = _segments(net, last)
    end_of = {seg[-1]: seg for seg in segs}
    inside = {i for seg in segs for i in seg[:-1]}
    seg_norms = {}
    last_matrix = None
    logl = [0.0] * (last + 1)
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
                    v = float(norms[n.layer.path])
                    prod += math.log(v) if v > 0 else -math.inf
                elif n.op == "scale":
                    prod += math.log(n.lipschitz) if n.lipschitz > 0 else -math.inf
            log_norm = prod
            mat = _segment_matrix(net, seg, max_entries)
            how = "product of layer norms"
            if mat is not None:
                exact = float(np.linalg.norm(mat, 2)) if mat.size else 0.0
                if exact > 0 and math.log(exact) < log_norm:
                    log_norm, how = math.log(exact), "exact norm of the merged map (SVD)"
                elif exact == 0:
                    log_norm, how = -math.inf, "exact norm of the merged map (SVD)"
            name = "+".join(net.nodes[j].layer.path for j in seg if net.nodes[j].op == "linear")
            seg_norms[name] = {"norm": math.exp(log_norm), "how": how,
                               "product": math.exp(prod)}
            logl[i] = logl[src] + log_norm
            if i == last:
                last_matrix = (src, mat)
            continue
        ins = [logl[j] for j in node.inputs]
        if node.op == "add":
            logl[i] = float(np.logaddexp(*ins))
        elif node.op == "concat":
            logl[i] = 0.5 * float(np.logaddexp.reduce(2.0 * np.asarray(ins)))
        elif node.op == "shift":
            logl[i] = ins[0]
        elif node.op == "linear":  # pragma: no cover - every linear record is in a run
            logl[i] = ins[0] + math.log(float(norms[node.layer.path]))
        else:
            logl[i] = ins[0] + (math.log(node.lipschitz) if node.lipschitz > 0 else -math.inf)
    return {"log_lipschitz": logl[last], "segments": seg_norms, "last": last_matrix,
            "logl": logl}


def _logits(net: Network, X: Any, batch: int = 4096) -> np.ndarray:
    out = []
    for s in range(0, int(X.shape[0]), batch):
        out.append(np.asarray(net(X[s:s + batch]), np.float64))
    return np.concatenate(out)


def _pairwise_radius(logits: np.ndarray, y: np.ndarray, mat: np.ndarray, lip_h: float,
                     dual: str) -> np.ndarray:
    """min_{j != y} (f_y - f_j) / (||a_y - a_j|| L_h) with a_j the columns of the last map."""
    n, k = logits.shape if logits.ndim == 2 else (logits.shape[0], 1)
    ord_ = 1 if dual == "l1" else 2
    if k == 1:  # binary score s = a^T h + b: margin (2y-1) s, Lipschitz ||a|| L_h
        s = logits.reshape(-1)
        m = np.where(y == 1, s, -s)
        a = float(np.linalg.norm(mat[:, 0], ord_)) * lip_h
        return np.where(m > 0, m / a if a > 0 else np.inf, 0.0)
    diff = mat[:, :, None] - mat[:, None, :]  # (d, k, k)
    pair = np.linalg.norm(diff, ord=ord_, axis=0) * lip_h  # (k, k)
    own = logits[np.arange(n), y]
    gaps = own[:, None] - logits  # (n, k)
    p = pair[y]  # (n, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(p > 0, gaps / p, np.where(gaps > 0, np.inf, -np.inf))
    r[np.arange(n), y] = np.inf
    r = np.min(r, axis=1)
    return np.where(margins_core(jnp.asarray(logits), jnp.asarray(y)) > 0,
                    np.maximum(r, 0.0), 0.0)


def certified_radius(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Callable[[Any, Any], Any] | None = None,
    norm: str = "l2",
    method: str = "tight",
    key: jax.Array | None = None,
    failure_probability: float = 1e-6,
    max_entries: int = 2**21,
) -> CertifiedRadii:
    r"""The certified radius of each example: no perturbation within it changes the prediction.

    $r_2(x) = M(x) / (\sqrt 2 L)$ with $M(x)$ the logit margin and $L$ the certified
    $\ell_2$ Lipschitz bound of the logit map (Tsuzuku, Sato & Sugiyama 2018, Proposition 1;
    see the module docstring for the theorem, its proof and the sharper variants used with
    ``method="tight"``); $r_\infty = r_2 / \sqrt d$.

    Args:
      params: a traced `Network`, or parameters with ``apply_fn`` (traced on ``X``); parameters
        alone are refused (the radius depends on the activations and on the model's margins).
      X: inputs (n, ...); y: integer labels (n,).
      apply_fn: ``apply_fn(params, X) -> logits``.
      norm: ``"l2"`` or ``"linf"``.
      method: ``"tight"`` (default: the largest of the radii from the product bound, merged
        linear maps and the pairwise last layer) or ``"product"`` (the theorem with $L$ the
        composition bound of `genbounds.lipschitz` only).
      key, failure_probability: for the certified layer norms (`spectral_norms`).
      max_entries: largest merged matrix (in_dim × out_dim entries) materialised for its
        exact norm.

    Returns:
      A `CertifiedRadii` (``.radius``, ``.accuracy(eps)``).

    Raises:
      ValueError, TypeError: bad arguments; `NotBoundable` for a network with operations
        no Lipschitz bound covers, or without ``apply_fn`` (or with one jax cannot trace).

    Examples:
      >>> import numpy as np
      >>> W = np.array([[1.0, -1.0], [0.0, 0.0]])
      >>> X = np.array([[0.5, 0.0], [-2.0, 1.0]]); y = np.array([0, 1])
      >>> r = certified_radius({"W": W}, X=X, y=y, apply_fn=lambda p, x: x @ p["W"])
      >>> np.round(r.radius, 6).tolist()  # the exact distances |x_0| to the boundary x_0 = 0
      [0.5, 2.0]

    References:
      Tsuzuku, Sato & Sugiyama, "Lipschitz-Margin Training: Scalable Certification of
      Perturbation Invariance for Deep Neural Networks", NeurIPS 2018, arXiv:1802.04034.
    """
    check_choice(norm, "norm", NORMS)
    check_choice(method, "method", METHODS)
    check_delta(failure_probability, "failure_probability")
    if isinstance(max_entries, bool) or not isinstance(max_entries, (int, np.integer)) \
            or max_entries < 1:
        raise ValueError(f"max_entries must be an integer >= 1, got {max_entries!r}")
    X = check_array(X, "X")
    y = check_labels(y, "y")
    n = check_same_length(X, y, "X", "y")
    net = as_network(params, apply_fn=apply_fn, X=X, caller="certified_radius")
    require_function(net, "certified_radius")
    Xn = jnp.asarray(X)
    if net.flat_input and Xn.ndim > 2:
        Xn = Xn.reshape(n, -1)
    logits = _logits(net, Xn)
    if logits.ndim == 1:
        logits = logits[:, None]
    k = logits.shape[1]
    m = np.asarray(margins_core(jnp.asarray(logits), jnp.asarray(y)), np.float64)
    norms = spectral_norms(net, key=key, failure_probability=failure_probability)
    log_l = lipschitz_log_bound(net, norms)
    lip = math.exp(log_l) if log_l < 709 else math.inf
    c = math.sqrt(2.0) if k >= 2 else 1.0
    d = math.prod(tuple(X.shape[1:]))
    r_prod = np.where(m > 0, m / (c * lip), 0.0) if lip > 0 else np.where(m > 0, np.inf, 0.0)
    radius = r_prod.copy()
    terms: dict[str, Any] = {"radius_product_l2": r_prod, "notes": list(net.notes)}
    lip_tight = None
    linear_only = False
    if method == "tight":
        t = _tight_bound(net, norms, max_entries)
        lip_tight = math.exp(t["log_lipschitz"]) if t["log_lipschitz"] < 709 else math.inf
        r_t = np.where(m > 0, m / (c * lip_tight), 0.0) if lip_tight > 0 else \
            np.where(m > 0, np.inf, 0.0)
        terms["radius_merged_l2"] = r_t
        terms["segments"] = t["segments"]
        radius = np.maximum(radius, r_t)
        if t["last"] is not None and t["last"][1] is not None:
            src, mat = t["last"]
            lip_h = math.exp(t["logl"][src]) if src > 0 else 1.0
            r_pair = _pairwise_radius(logits, y, mat, lip_h, "l2")
            terms["radius_pairwise_l2"] = r_pair
            radius = np.maximum(radius, r_pair)
            linear_only = src == 0
            if linear_only and norm == "linf":
                # The whole network is one affine map: the exact l_inf distance (Hoelder).
                exact_inf = _pairwise_radius(logits, y, mat, 1.0, "l1")
                terms["radius_linear_linf"] = exact_inf
    terms["l2_radius"] = radius
    if norm == "linf":
        radius = radius / math.sqrt(d)
        if "radius_linear_linf" in terms:
            radius = np.maximum(radius, terms["radius_linear_linf"])
    return CertifiedRadii(radius=np.asarray(radius, np.float64), norm=norm, margins=m,
                          lipschitz=lip, lipschitz_tight=lip_tight, method=method,
                          failure_probability=norms.failure_probability, terms=terms)


def certified_accuracy(
    params: Any,
    *,
    X: Any,
    y: Any,
    eps: Sequence[float],
    apply_fn: Callable[[Any, Any], Any] | None = None,
    norm: str = "l2",
    **options: Any,
) -> np.ndarray:
    r"""The fraction of examples whose certified radius exceeds $\varepsilon$, at each $\varepsilon$.

    A lower bound on the robust accuracy against every attack of norm $\le \varepsilon$
    (with probability at least $1 -$ the norms' failure probability); see `certified_radius`.
    """
    r = certified_radius(params, X=X, y=y, apply_fn=apply_fn, norm=norm, **options)
    return r.accuracy(eps)


@dataclasses.dataclass(frozen=True)
class RobustnessCurve:
    """Clean, attacked and certified accuracy against the radius.

    Attributes:
      eps: the radii.
      norm: ``"l2"`` or ``"linf"``.
      clean_accuracy: accuracy on the clean inputs.
      pgd_accuracy: PGD robust accuracy at each radius (an upper bound on the robust accuracy).
      fgsm_accuracy: FGSM robust accuracy at each radius (weaker; None if not run).
      certified_accuracy: certified accuracy at each radius (a lower bound).
      violations: examples certified at some radius that PGD broke there (must be 0).
      radii: the `CertifiedRadii`.
      settings: the attack settings.
    """

    eps: np.ndarray
    norm: str
    clean_accuracy: float
    pgd_accuracy: np.ndarray
    fgsm_accuracy: np.ndarray | None
    certified_accuracy: np.ndarray
    violations: int
    radii: CertifiedRadii
    settings: dict

    def eps_at(self, level: float = 0.5) -> float:
        """The smallest grid radius where PGD robust accuracy falls to ``level`` or below
        (linearly interpolated between grid points; NaN if it never does)."""
        a = self.pgd_accuracy
        for i in range(len(a)):
            if a[i] <= level:
                if i == 0 or a[i - 1] == a[i]:
                    return float(self.eps[i])
                f = (a[i - 1] - level) / (a[i - 1] - a[i])
                return float(self.eps[i - 1] + f * (self.eps[i] - self.eps[i - 1]))
        return math.nan

    def to_dict(self) -> dict:
        """Plain Python values (for JSON)."""
        return {
            "norm": self.norm, "eps": self.eps.tolist(), "clean_accuracy": self.clean_accuracy,
            "pgd_accuracy": self.pgd_accuracy.tolist(),
            "fgsm_accuracy": None if self.fgsm_accuracy is None else self.fgsm_accuracy.tolist(),
            "certified_accuracy": self.certified_accuracy.tolist(),
            "violations": self.violations, "lipschitz": self.radii.lipschitz,
            "lipschitz_tight": self.radii.lipschitz_tight,
            "median_certified_radius": float(np.median(self.radii.radius)),
            "failure_probability": self.radii.failure_probability, "settings": self.settings,
        }

    def to_markdown(self) -> str:
        """A Markdown table: one row per radius."""
        head = "| eps | PGD robust acc | FGSM robust acc | certified acc |"
        lines = [f"{self.norm} attacks; clean accuracy {self.clean_accuracy:.4f}", "", head,
                 "|---|---|---|---|"]
        for i, e in enumerate(self.eps):
            fg = "-" if self.fgsm_accuracy is None else f"{self.fgsm_accuracy[i]:.4f}"
            lines.append(f"| {e:.4g} | {self.pgd_accuracy[i]:.4f} | {fg} | "
                         f"{self.certified_accuracy[i]:.4f} |")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Accuracy against the radius: clean, FGSM, PGD and certified."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 4))
        ax.axhline(self.clean_accuracy, color="gray", ls=":", label="clean accuracy")
        if self.fgsm_accuracy is not None:
            ax.plot(self.eps, self.fgsm_accuracy, "o--", color="tab:orange", ms=3,
                    label="FGSM robust accuracy")
        ax.plot(self.eps, self.pgd_accuracy, "s-", color="tab:red", ms=3,
                label="PGD robust accuracy (upper bound)")
        ax.plot(self.eps, self.certified_accuracy, "^-", color="tab:blue", ms=3,
                label="certified accuracy (lower bound)")
        ax.fill_between(self.eps, self.certified_accuracy, self.pgd_accuracy, color="tab:purple",
                        alpha=0.12, label="true robust accuracy lies here")
        ax.set_xlabel(f"perturbation radius ({self.norm})")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
        return ax


def robustness(
    params: Any,
    *,
    apply_fn: Callable[[Any, Any], Any],
    X: Any,
    y: Any,
    eps: Sequence[float],
    norm: str = "l2",
    steps: int = 40,
    restarts: int = 2,
    box: tuple[float, float] | None = None,
    fgsm_too: bool = True,
    key: jax.Array | None = None,
    method: str = "tight",
    failure_probability: float = 1e-6,
) -> RobustnessCurve:
    r"""Clean accuracy, FGSM and PGD robust accuracy, and certified accuracy on a grid of radii.

    For every $\varepsilon$: certified accuracy $\le$ true robust accuracy $\le$ PGD robust
    accuracy (the first with probability at least $1-$ ``failure_probability``). The curve also
    counts *violations*: examples certified at $\varepsilon$ that PGD broke at $\varepsilon$;
    a sound certificate has none.

    Args:
      params, apply_fn: the network (``apply_fn(params, X) -> logits``; traced for the
        certificate).
      X, y: the examples (e.g. the test set).
      eps: the grid of radii.
      norm: ``"l2"`` or ``"linf"``.
      steps, restarts: PGD settings (see `pgd`; step size $2.5\varepsilon$/steps, margin loss,
        random starts).
      box: ``(lo, hi)`` of the inputs (e.g. (0, 1)); attacks stay inside it.
      fgsm_too: also run FGSM.
      key: PRNG key of the attacks' random starts and of the norm certificates.
      method, failure_probability: as in `certified_radius`.

    Returns:
      A `RobustnessCurve` (``.to_markdown()``, ``.plot()``, ``.to_dict()``).
    """
    grid = _check_eps(eps)
    box = _check_box(box)
    key = jax.random.key(0) if key is None else key
    k_attack, k_norm = jax.random.split(key)
    radii = certified_radius(params, X=X, y=y, apply_fn=apply_fn, norm=norm, method=method,
                             key=k_norm, failure_probability=failure_probability)
    pgd_acc, fg_acc, cert_acc = [], [], []
    violations = 0
    clean = None
    for i, e in enumerate(grid):
        r = pgd(params, X=X, y=y, apply_fn=apply_fn, eps=float(e), norm=norm, steps=steps, restarts=restarts,
                box=box, key=jax.random.fold_in(k_attack, i))
        certified = radii.radius > e
        violations += int(np.sum(certified & ~r.robust))
        pgd_acc.append(r.robust_accuracy)
        cert_acc.append(float(np.mean(certified)))
        if fgsm_too:
            fg_acc.append(fgsm(params, X=X, y=y, apply_fn=apply_fn, eps=float(e), norm=norm,
                               box=box).robust_accuracy)
        if clean is None:
            clean = float(np.mean(np.asarray(radii.margins) > 0))
    settings = {"attack": "PGD", "steps": steps, "restarts": restarts,
                "step_size": "2.5 eps / steps", "loss": "margin (Carlini-Wagner)",
                "random_start": True, "box": None if box is None else list(box),
                "certificate": method}
    return RobustnessCurve(eps=grid, norm=norm, clean_accuracy=clean,
                           pgd_accuracy=np.asarray(pgd_acc),
                           fgsm_accuracy=np.asarray(fg_acc) if fgsm_too else None,
                           certified_accuracy=np.asarray(cert_acc), violations=violations,
                           radii=radii, settings=settings)


def robustness_measure(params: Any, *, apply_fn: Callable, X: Any, y: Any,
                       **options: Any) -> Bound:
    """`robustness` as a `Bound` entry of a report (a measure: ``value=None``).

    ``complexity`` is the median certified radius; ``terms`` hold the whole curve
    (`RobustnessCurve.to_dict`).
    """
    curve = robustness(params, apply_fn=apply_fn, X=X, y=y, **options)
    d = curve.to_dict()
    notes = (f"{curve.norm} radii; certified accuracy <= PGD robust accuracy at every eps "
             f"({curve.violations} violations)",)
    return Bound(name="robustness", value=None, complexity=d["median_certified_radius"],
                 terms=d, n=int(np.shape(X)[0]), estimated=False,
                 reference="Tsuzuku, Sato & Sugiyama 2018 (arXiv:1802.04034), Madry et al. "
                           "2018 (arXiv:1706.06083)", notes=notes)
