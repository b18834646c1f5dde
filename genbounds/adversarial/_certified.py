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

from genbounds.core._checks import (
    check_choice,
    check_delta,
    check_finite_output,
    check_float_array,
    check_key,
    check_labels,
    check_same_length,
)
from genbounds.core._logspace import LOG_FLOAT64_MAX as _LOG_MAX
from genbounds.core._logspace import exp_or_inf as _exp
from genbounds.losses._margins import margins_core
from genbounds.network._lipschitz import lipschitz_log_bound
from genbounds.network._merged import tight_bound as _tight_bound
from genbounds.network._network import Network, as_network, require_function
from genbounds.network._norms import spectral_norms

from ._attacks import NORMS, _check_eps

METHODS = ("tight", "product")
PROPAGATION = ("crown", "alpha-crown", "ibp")  # bound propagation (genbounds.verify)


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


def _logits(net: Network, X: Any, batch: int = 4096) -> np.ndarray:
    out = []
    for s in range(0, int(X.shape[0]), batch):
        out.append(np.asarray(net(X[s:s + batch]), np.float64))
    return np.concatenate(out)


def log_radius(m: np.ndarray, log_l: float) -> np.ndarray:
    """``m / exp(log_l)`` where ``m > 0`` (0 elsewhere), in log space: a Lipschitz bound beyond
    float64 (log_l > 709) gives the exact radius, or 0.0 where that underflows float64."""
    m = np.asarray(m, np.float64)
    if log_l == -math.inf:
        return np.where(m > 0, np.inf, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(m > 0, np.exp(np.log(np.maximum(m, 0.0)) - log_l), 0.0)


def _pairwise_radius(logits: np.ndarray, y: np.ndarray, mat: np.ndarray, log_h: float,
                     dual: str) -> np.ndarray:
    """min_{j != y} (f_y - f_j) / (||a_y - a_j|| L_h) with a_j the columns of the last map;
    ``log_h`` = ln L_h (the division by L_h in log space)."""
    n, k = logits.shape if logits.ndim == 2 else (logits.shape[0], 1)
    ord_ = 1 if dual == "l1" else 2
    if k == 1:  # binary score s = a^T h + b: margin (2y-1) s, Lipschitz ||a|| L_h
        s = logits.reshape(-1)
        m = np.where(y == 1, s, -s)
        a = float(np.linalg.norm(mat[:, 0], ord_))
        return log_radius(m / a, log_h) if a > 0 else np.where(m > 0, np.inf, 0.0)
    diff = mat[:, :, None] - mat[:, None, :]  # (d, k, k)
    pair = np.linalg.norm(diff, ord=ord_, axis=0)  # (k, k); L_h applied below
    own = logits[np.arange(n), y]
    gaps = own[:, None] - logits  # (n, k)
    p = pair[y]  # (n, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(p > 0, gaps / p, np.where(gaps > 0, np.inf, -np.inf))
    r[np.arange(n), y] = np.inf
    r = np.min(r, axis=1)
    r = np.where(margins_core(jnp.asarray(logits), jnp.asarray(y)) > 0, np.maximum(r, 0.0), 0.0)
    return np.where(np.isinf(r), r, log_radius(r, log_h))


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
        composition bound of `genbounds.lipschitz` only); or bound propagation over the ball,
        ``"crown"``, ``"alpha-crown"`` or ``"ibp"`` (`genbounds.verify.crown_radius`, with its
        defaults; ``key``, ``failure_probability`` and ``max_entries`` do not apply).
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
    check_choice(method, "method", METHODS + PROPAGATION)
    if method in PROPAGATION:  # the bound-propagation radius (genbounds.verify.crown_radius)
        from genbounds.verify._radius import crown_radius

        return crown_radius(params, X=X, y=y, apply_fn=apply_fn, norm=norm, method=method)
    check_delta(failure_probability, "failure_probability")
    if isinstance(max_entries, bool) or not isinstance(max_entries, (int, np.integer)) \
            or max_entries < 1:
        raise ValueError(f"max_entries must be an integer >= 1, got {max_entries!r}")
    X = check_float_array(X, "X")
    y = check_labels(y, "y")
    n = check_same_length(X, y, "X", "y")
    if key is not None:
        key = check_key(key)
    net = as_network(params, apply_fn=apply_fn, X=X, caller="certified_radius")
    require_function(net, "certified_radius")
    Xn = jnp.asarray(X)
    if net.flat_input and Xn.ndim > 2:
        Xn = Xn.reshape(n, -1)
    logits = _logits(net, Xn)
    check_finite_output(logits, "the network's logits on X",
                        hint="a certified radius needs a margin; check the network")
    if logits.ndim == 1:
        logits = logits[:, None]
    k = logits.shape[1]
    if int(np.max(y)) >= max(k, 2):
        raise ValueError(f"y must hold labels in [0, {max(k, 2)}) for the network's {k} "
                         f"logit(s), got labels up to {int(np.max(y))}")
    m = np.asarray(margins_core(jnp.asarray(logits), jnp.asarray(y)), np.float64)
    norms = spectral_norms(net, key=key, failure_probability=failure_probability)
    log_l = lipschitz_log_bound(net, norms)
    lip = _exp(log_l)
    c = math.sqrt(2.0) if k >= 2 else 1.0
    d = math.prod(tuple(X.shape[1:]))
    r_prod = log_radius(m / c, log_l)
    radius = r_prod.copy()
    terms: dict[str, Any] = {"radius_product_l2": r_prod, "notes": list(net.notes),
                             "log_lipschitz": log_l}
    lip_tight = None
    linear_only = False
    if method == "tight":
        t = _tight_bound(net, norms, max_entries)
        lip_tight = _exp(t["log_lipschitz"])
        terms["log_lipschitz_tight"] = t["log_lipschitz"]
        r_t = log_radius(m / c, t["log_lipschitz"])
        terms["radius_merged_l2"] = r_t
        terms["segments"] = t["segments"]
        radius = np.maximum(radius, r_t)
        if t["last"] is not None and t["last"][1] is not None:
            src, mat = t["last"]
            log_h = t["logl"][src] if src > 0 else 0.0
            r_pair = _pairwise_radius(logits, y, mat, log_h, "l2")
            terms["radius_pairwise_l2"] = r_pair
            radius = np.maximum(radius, r_pair)
            linear_only = src == 0
            if linear_only and norm == "linf":
                # The whole network is one affine map: the exact l_inf distance (Hoelder).
                exact_inf = _pairwise_radius(logits, y, mat, 0.0, "l1")
                terms["radius_linear_linf"] = exact_inf
    terms["l2_radius"] = radius
    if max(log_l, t["log_lipschitz"] if method == "tight" else log_l) >= _LOG_MAX:
        terms["notes"].append(
            "the Lipschitz bound exceeds float64 (lipschitz = inf; its logarithm is in "
            "log_lipschitz): the radii were computed in log space, exact where representable "
            "and 0.0 where they underflow float64")
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
