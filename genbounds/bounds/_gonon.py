r"""Gonon, Brisebarre, Riccietti & Gribonval (2024): the $L^1$ path-norm bound for DAG ReLU
networks (biases, skip connections, concatenations, max and average pooling, frozen BatchNorm),
and the margin bound on the 0-1 error built on it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    NotBoundable,
    check_array,
    check_delta,
    check_n,
    check_positive,
    check_unit_interval,
    checked_result,
    refuse_margin_inputs_without_y,
)
from genbounds.core._grid import grid_ratio, union_grid
from genbounds.losses._margins import ramp_loss, training_margins
from genbounds.network._chain import verify_chain
from genbounds.network._network import as_network
from genbounds.network._path_lifting import lifted_path_sum, lifting_structure

GONON_REFERENCE = (
    "Gonon, Brisebarre, Riccietti & Gribonval, 'A path-norm toolkit for modern networks: "
    "consequences, promises and challenges', ICLR 2024, arXiv:2310.01225, Theorem 3.1"
)
_MARGIN_REFERENCE = (
    "Mohri, Rostamizadeh & Talwalkar, 'Foundations of Machine Learning', 2nd ed., 2018, "
    "Theorem 3.3 and Lemma 5.7 (Talagrand); Maurer, 'A vector-contraction inequality for "
    "Rademacher complexities', ALT 2016, Corollary 1"
)


def gonon_log_term(*, depth: int, pool_types: int, kernel: int, d_in: int, d_out: int) -> float:
    r"""The logarithmic factor of Gonon et al. (2024), Theorem 3.1:

    $$\mathcal L = D \ln\big((3 + 2P) K\big)
      + \ln\Big(\frac{3 + 2P}{1 + P}\,(d_{in} + 1)\, d_{out}\Big).$$

    Symbols: $D$ = `depth` (the longest path, in edges), $P$ = `pool_types` (distinct kinds of
    max-pooling neurons; 0 without), $K$ = `kernel` (the largest max-pooling window; 1 without),
    $d_{in}$, $d_{out}$ the input and output dimensions. The formula is the one of the authors'
    code for their Table 2 (``compute_1st_part_bound_resnets.py``, repository
    agonon/pathnorm_toolkit), which the tests reproduce.

    Examples:
      >>> round(gonon_log_term(depth=1, pool_types=0, kernel=1, d_in=1, d_out=1), 10)  # ln 3 + ln 6
      2.8903717579
    """
    depth = check_n(depth, "depth")
    pool_types = int(check_positive(pool_types, "pool_types", allow_zero=True))
    kernel = check_n(kernel, "kernel")
    d_in, d_out = check_n(d_in, "d_in"), check_n(d_out, "d_out")
    c = 3.0 + 2.0 * pool_types
    return depth * math.log(c * kernel) + math.log(c / (1.0 + pool_types) * (d_in + 1.0) * d_out)


def gonon_rademacher(path_norm: float, *, log_term: float, sigma: float, n: int) -> float:
    r"""The bound on the empirical Rademacher complexity of the network's outputs used by `gonon`:

    $$\frac1n\,\mathbb E_\varepsilon \sup_{\|\Phi(\theta)\|_1 \le r}
      \sum_{i=1}^n \sum_{v=1}^{d_{out}} \varepsilon_{i,v}\, R_\theta(x_i)_v
      \;\le\; \frac{2\, r\, \sigma\, \sqrt{\mathcal L}}{\sqrt n},$$

    $r$ = `path_norm`, $\mathcal L$ = `log_term` (`gonon_log_term`), $\sigma$ = `sigma` $\ge
    \max(1, \max_{i,u} |x_{i,u}|)$. This is Gonon et al. (2024)'s Theorem 3.1, whose expected
    generalisation gap is $\frac{4}{\sqrt n} C r \sigma \sqrt{\mathcal L}$ for a
    $C$-Lipschitz loss, divided by the symmetrisation factor 2 and read with a contraction
    constant of at least $C$: the largest complexity any reading of the theorem's constant 4
    allows (the peeling proof's exponential-moment step gives $\sqrt 2\,r\sigma\sqrt{\mathcal
    L/n}$); see docs/bounds/gonon.md. Checked against the paper's Theorem 3.1 statement as
    recalled and against the authors' code, not against the printed proof.

    Examples:
      >>> gonon_rademacher(1.0, log_term=4.0, sigma=1.0, n=16)
      1.0
    """
    r = check_positive(path_norm, "path_norm", allow_zero=True) if path_norm != math.inf \
        else math.inf
    log_term = check_positive(log_term, "log_term")
    sigma = check_positive(sigma, "sigma")
    n = check_n(n)
    if r == 0.0:
        return 0.0
    return 2.0 * r * sigma * math.sqrt(log_term / n)


def gonon_margin_bound(*, ramp_loss: float, margin: float, rademacher: float, n: int,
                       delta: float, num_outputs: int, log_prior: float = 0.0) -> float:
    r"""The margin bound on the 0-1 error for a path norm and margin fixed in advance.

    With probability at least $1 - \delta$, for every network of the class,

    $$\Pr[\text{margin} \le 0] \le \hat R_{S,\gamma} + 2\,\frac{c}{\gamma}\,\mathfrak R
      + 3\sqrt{\frac{\ln(2/\delta) + \text{log\_prior}}{2n}}$$

    (Mohri et al. 2018, Theorem 3.3, for the ramp loss of the margin, which bounds the 0-1 loss
    from above), where $\mathfrak R$ = `rademacher` bounds the Rademacher complexity of the
    outputs (`gonon_rademacher`) and $c/\gamma$ is the contraction of the ramp of the margin:
    $c = 1$ for one score (margin $\pm f(x)$, $1/\gamma$-Lipschitz: Talagrand's lemma),
    $c = 2$ for $k \ge 2$ outputs (the margin $f_y - \max_{j\ne y} f_j$ is $\sqrt 2$-Lipschitz in
    $\ell_2$, and Maurer's vector contraction adds $\sqrt 2$).

    Examples:
      >>> round(gonon_margin_bound(ramp_loss=0.0, margin=1.0, rademacher=0.0, n=100,
      ...                          delta=0.05, num_outputs=10), 6)
      0.40743
    """
    ramp = check_unit_interval(ramp_loss, "ramp_loss")
    gamma = check_positive(margin, "margin")
    rad = rademacher if rademacher == math.inf else check_positive(rademacher, "rademacher",
                                                                    allow_zero=True)
    n, delta = check_n(n), check_delta(delta)
    k = check_n(num_outputs, "num_outputs")
    log_prior = check_positive(log_prior, "log_prior", allow_zero=True)
    c = 1.0 if k == 1 else 2.0
    confidence = 3.0 * math.sqrt((math.log(2.0 / delta) + log_prior) / (2.0 * n))
    return ramp + 2.0 * c * rad / gamma + confidence


@checked_result
def gonon(
    params: Any,
    *,
    X: Any,
    y: Any = None,
    apply_fn: Callable[[Any, Any], Any] | None = None,
    logits: Any = None,
    margin: float | None = None,
    margin_quantile: float | None = None,
    delta: float = 0.05,
    grid_loss: float = 0.05,
) -> Bound:
    r"""Gonon et al. (2024): the $L^1$ path-norm margin bound of a DAG ReLU network.

    Applies to ReLU networks of any DAG structure: dense and convolution layers with biases,
    residual adds and concatenations, max pooling (windows and global), average pooling, frozen
    BatchNorm, reshapes; positively homogeneous activations (leaky ReLU, $|t|$) as the ReLU
    networks they are. Anything else (a non-homogeneous activation, LayerNorm, attention,
    softmax inside the network) raises `NotBoundable` naming the operation.

    **Complexity** (always): the path norm $r = \|\Phi(\theta)\|_1$ (every input-to-output path
    and every path from a bias, max pools summed over their windows: `path_norm` with
    ``convention="gonon"``, computed by one forward pass of the $|w|$ network on an all-ones
    input), and ``.complexity`` = the Rademacher bound $\mathfrak R = 2 r \sigma
    \sqrt{\mathcal L / n}$ (`gonon_rademacher`), with

    $$\mathcal L = D\ln((3+2P)K) + \ln\Big(\frac{3+2P}{1+P}(d_{in}+1)\,d_{out}\Big),\qquad
      \sigma = \max\big(1, \max_{i,u} |x_{i,u}|\big),$$

    $D$ the depth of the network's DAG, $P$ the number of kinds of max pooling and $K$ the
    largest window (`lifting_structure`), $n$ = ``len(X)``.

    **Bound** (with `y` and `apply_fn` or `logits`): ``.value`` bounds the 0-1 test error
    (ties counted as errors) with probability at least $1-\delta$:

    $$\Pr[\text{error}] \le \hat R_{S,\bar\gamma} + \frac{2c}{\bar\gamma}\,
      \mathfrak R(\bar r) + 3\sqrt{\frac{\ln(2/\delta) + \ln\frac1{p(k_r)} +
      \ln\frac1{p(k_\gamma)}}{2n}},$$

    $c = 1$ for one output score, $2$ for $k \ge 2$ logits (`gonon_margin_bound`); $\bar r \ge r$
    and $\bar\gamma \le \gamma$ are $r$ and $\gamma$ rounded to the grid $(1+\rho)^k$ with prior
    $p(k) = 2/(3(|k|+1)(|k|+2))$ (the union bound of docs/bounds/spectral.md),
    $\rho = (1 + \text{grid\_loss})^{1/2} - 1$.

    The constants: $\mathcal L$, the factor 4 of the theorem and $\sigma$ as in Gonon et al.'s
    Theorem 3.1 and their code, checked against the paper's Theorem 3.1 statement as recalled
    (the Rademacher lemma is used in its weakest reading, docs/bounds/gonon.md).

    Args:
      params: the network's parameters, or a `Network` (from `Network.trace`); with `apply_fn`
        the network is traced.
      X: training inputs, shape (n, ...), as the network takes them.
      y: integer training labels, shape (n,) (in {0, 1} for one score).
      apply_fn: ``apply_fn(params, X) -> logits``; or give `logits` (not both).
      logits: training logits, shape (n, k), or (n,) for one score.
      margin: $\gamma > 0$; or `margin_quantile` in (0, 1); default: the 10% quantile of the
        training margins.
      delta: failure probability, in (0, 1).
      grid_loss: how much the grid may inflate $\bar r / \bar\gamma$ (default 5%).

    Returns:
      A `Bound`. Without `y`, a measure (``value=None``). Terms: ``path_norm``, ``depth``,
      ``pool_types``, ``kernel``, ``d_in``, ``d_out``, ``sigma``, ``log_term``,
      ``first_part`` ($4\sigma\sqrt{\mathcal L/n}$, the authors' Table 2 quantity); with data
      also ``margin``, ``margin_grid``, ``path_norm_grid``, ``ramp_loss``, ``rademacher``,
      ``complexity_term``, ``confidence_term``, ``log_prior``, ``grid_ratio``, ``k_path_norm``,
      ``k_margin``.

    Raises:
      NotBoundable: an operation outside DAG ReLU networks (named); a convolution read from
        parameter names (its geometry is unknown: trace the network).
      ValueError, TypeError: bad data or arguments.

    Examples:
      >>> import numpy as np
      >>> params = {"Dense_0": {"kernel": np.eye(2)}, "Dense_1": {"kernel": np.eye(2)}}
      >>> X = np.array([[1.0, 0.0], [0.0, 1.0]] * 50); y = np.array([0, 1] * 50)
      >>> b = gonon(params, X=X)
      >>> b.terms["path_norm"], b.terms["depth"]  # two paths of weight 1
      (2.0, 2)
      >>> gonon(params, X=X, y=y, logits=X, margin=1.0).vacuous
      True

    References:
      Gonon, Brisebarre, Riccietti & Gribonval, "A path-norm toolkit for modern networks:
      consequences, promises and challenges", ICLR 2024, arXiv:2310.01225, Theorem 3.1 and
      Theorem A.1 (the forward pass). Mohri, Rostamizadeh & Talwalkar, "Foundations of Machine
      Learning", 2nd ed., 2018, Theorem 3.3. Maurer, "A vector-contraction inequality for
      Rademacher complexities", ALT 2016.
    """
    caller = "gonon (Gonon et al. 2024)"
    X = check_array(X, "X")
    n = int(np.shape(X)[0])
    X2 = np.asarray(X, dtype=np.float64).reshape(n, -1)
    if apply_fn is not None and logits is not None:
        raise ValueError("gonon: give apply_fn or logits, not both")
    net = as_network(params, apply_fn=apply_fn, X=X, caller=caller)
    if net.structure_assumed:
        if any(layer.kind == "conv" for layer in net.layers):
            raise NotBoundable(f"{caller}: a convolution read from parameter names has no known "
                               "geometry (strides, padding, input size), so its paths cannot be "
                               "counted; pass Network.trace(apply_fn, params, x) or apply_fn")
        if logits is not None:
            verify_chain(net, X2, logits, caller)
    st = lifting_structure(net, caller=caller)
    if X2.shape[1] != st.d_in:
        raise ValueError(f"X has {X2.shape[1]} values per example (shape "
                         f"{tuple(np.shape(X))[1:]}) but the network takes {st.d_in}")
    mant, exp = lifted_path_sum(net, 1.0, convention="gonon", caller=caller)
    r = math.ldexp(mant, exp) if exp < 1024 else math.inf
    log_term = gonon_log_term(depth=st.depth, pool_types=st.pool_types, kernel=st.kernel,
                              d_in=st.d_in, d_out=st.d_out)
    sigma = max(1.0, float(np.max(np.abs(X2))) if X2.size else 1.0)
    rad = gonon_rademacher(r, log_term=log_term, sigma=sigma, n=n)
    terms: dict[str, Any] = {
        "path_norm": r, "depth": st.depth, "pool_types": st.pool_types, "kernel": st.kernel,
        "d_in": st.d_in, "d_out": st.d_out, "sigma": sigma, "log_term": log_term,
        "first_part": 4.0 * sigma * math.sqrt(log_term / n),
    }
    notes = ["L1 path norm of the path lifting (max pools summed over their windows, biases as "
             "paths from a constant input), one forward pass of the |w| network",
             f"DAG: depth D = {st.depth}, P = {st.pool_types} kind(s) of max pooling, largest "
             f"window K = {st.kernel}",
             "sigma = max(1, largest |x| of the training inputs)"]
    if y is None:
        refuse_margin_inputs_without_y("gonon", apply_fn=apply_fn, logits=logits,
                                       margin=margin, margin_quantile=margin_quantile)
        return Bound(name="gonon", value=None, complexity=rad, terms=terms, n=n,
                     reference=GONON_REFERENCE, notes=tuple(notes))

    delta = check_delta(delta)
    check_positive(grid_loss, "grid_loss")
    _, logits, m, gamma, margin_note = training_margins(
        net if apply_fn is None else params, X=X, y=y, apply_fn=apply_fn, logits=logits,
        margin=margin, margin_quantile=margin_quantile, caller="gonon")
    k = 1 if np.ndim(logits) == 1 else int(np.shape(logits)[-1])
    if k != st.d_out:
        raise ValueError(f"logits have {k} columns but the network has {st.d_out} outputs; "
                         "pass the logits of this network")
    # Union bound over the grid (1+rho)^k: the term is of degree 1 in r and in 1/gamma.
    ratio = grid_ratio(grid_loss, 2)
    grid = union_grid(("up", [r] if math.isfinite(r) else [1.0], ratio), ("down", [gamma], ratio))
    (k_r,), (r_bar,) = grid.k[0], grid.values[0]
    (k_gamma,), (gamma_bar,) = grid.k[1], grid.values[1]
    if not math.isfinite(r):
        r_bar = math.inf
    rad_bar = gonon_rademacher(r_bar, log_term=log_term, sigma=sigma, n=n)
    ramp = float(ramp_loss(m, margin=gamma_bar))
    value = gonon_margin_bound(ramp_loss=ramp, margin=gamma_bar, rademacher=rad_bar, n=n,
                               delta=delta, num_outputs=k, log_prior=grid.log_prior)
    c = 1.0 if k == 1 else 2.0
    terms.update(
        margin=gamma, margin_grid=gamma_bar, path_norm_grid=r_bar, ramp_loss=ramp,
        num_outputs=k, rademacher=rad_bar, complexity_term=2.0 * c * rad_bar / gamma_bar,
        confidence_term=3.0 * math.sqrt((math.log(2.0 / delta) + grid.log_prior) / (2.0 * n)),
        log_prior=grid.log_prior, grid_ratio=ratio, k_path_norm=k_r, k_margin=k_gamma)
    notes += [margin_note,
              "one score: Talagrand contraction 1/gamma" if k == 1 else
              f"{k} outputs: margin sqrt(2)-Lipschitz, Maurer's vector contraction sqrt(2)",
              "path norm rounded up and gamma down to a grid, union bound"]
    return Bound(name="gonon", value=value, complexity=rad, terms=terms, n=n, delta=delta,
                 reference=GONON_REFERENCE + "; " + _MARGIN_REFERENCE, notes=tuple(notes))
