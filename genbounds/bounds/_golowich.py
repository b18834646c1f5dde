"""Golowich, Rakhlin & Shamir (2018): size-independent Rademacher bounds for ReLU networks, and the
margin bounds built on them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    check_array,
    check_choice,
    check_delta,
    check_margin,
    check_n,
    check_positive,
    check_unit_interval,
    checked_result,
    refuse_margin_inputs_without_y,
)
from genbounds.core._grid import grid_ratio, union_grid
from genbounds.losses._margins import ramp_loss, training_margins
from genbounds.network._chain import verify_chain
from genbounds.network._layers import augment_biases, has_biases
from genbounds.network._network import as_network

GOLOWICH_REFERENCE = (
    "Golowich, Rakhlin & Shamir, 'Size-Independent Sample Complexity of Neural Networks', "
    "COLT 2018, arXiv:1712.06541"
)
MOHRI_REFERENCE = (
    "Mohri, Rostamizadeh & Talwalkar, 'Foundations of Machine Learning', 2nd ed., MIT Press 2018, "
    "Theorem 5.8 eq. (5.40) (binary) and Theorem 9.2 (multiclass, after Kuznetsov, Mohri & Syed, "
    "'Rademacher Complexity Margin Bounds for Learning with a Large Number of Classes', ICML 2015)"
)
_NORMS = ("frobenius", "l1inf")
_THEOREM = {"frobenius": "Theorem 1", "l1inf": "Theorem 2"}


def _exp(log_x: float) -> float:
    """exp that returns inf instead of raising on overflow."""
    return math.exp(log_x) if log_x < 709.0 else math.inf


def _check_norms(norms: Any, name: str = "norms") -> list[float]:
    if isinstance(norms, (str, bytes)) or not isinstance(norms, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of per-layer norm bounds, got {norms!r}")
    vals = [check_positive(v, f"{name}[{i}]", allow_zero=True) for i, v in enumerate(norms)]
    if not vals:
        raise ValueError(f"{name} must hold one norm bound per layer (depth >= 1), got none")
    return vals


def _log_product(vals: Sequence[float]) -> float:
    return -math.inf if any(v == 0.0 for v in vals) else sum(math.log(v) for v in vals)


def golowich_frobenius(norms: Sequence[float], *, x_norm: float, n: int) -> float:
    r"""Golowich, Rakhlin & Shamir (2018), Theorem 1: the Frobenius-norm Rademacher bound.

    For the class $H_d$ of real-valued depth-$d$ networks
    $x \mapsto W_d\,\sigma(W_{d-1}\,\sigma(\cdots\sigma(W_1 x)))$ with a 1-Lipschitz,
    positive-homogeneous activation $\sigma$ (ReLU), no biases, and $\|W_j\|_F \le M_F(j)$, the
    empirical Rademacher complexity on $x_1, \dots, x_n$ satisfies

    $$\hat{\mathfrak R}_S(H_d) \le \frac1n \prod_{j=1}^d M_F(j)\,
      \big(\sqrt{2\ln(2)\, d} + 1\big) \sqrt{\sum_{i=1}^n \|x_i\|_2^2}.$$

    Symbols: $M_F(j)$ = ``norms[j-1]``, $d$ = ``len(norms)``, $\sqrt{\sum_i\|x_i\|^2}$ =
    `x_norm` (the Frobenius norm of the data matrix), $n$ (the paper's $m$) = `n`. The product is
    accumulated in log space; an overflowing result is ``inf``.

    Args:
      norms: per-layer upper bounds $M_F(j) \ge 0$, first layer first.
      x_norm: $\sqrt{\sum_i \|x_i\|_2^2} \ge 0$.
      n: number of examples, >= 1.

    Returns:
      The bound on $\hat{\mathfrak R}_S(H_d)$, a float.

    Raises:
      TypeError, ValueError: negative or non-finite norms, an empty list, n < 1.

    Examples:
      >>> round(golowich_frobenius([1.0, 1.0, 1.0], x_norm=1.0, n=1), 7)  # sqrt(6 ln 2) + 1
      3.039334

    References:
      Golowich, Rakhlin & Shamir, "Size-Independent Sample Complexity of Neural Networks",
      COLT 2018, arXiv:1712.06541, Theorem 1.
    """
    vals = _check_norms(norms)
    x_norm = check_positive(x_norm, "x_norm", allow_zero=True)
    n = check_n(n)
    if x_norm == 0.0:
        return 0.0
    return _exp(_log_frobenius(vals, x_norm, n))


def _log_frobenius(vals: Sequence[float], x_norm: float, n: int) -> float:
    """ln of Theorem 1's bound (-inf when it is 0); finite where the bound overflows."""
    if x_norm == 0.0:
        return -math.inf
    d = len(vals)
    # Theorem 1: (1/m) prod_j M_F(j) (sqrt(2 log(2) d) + 1) sqrt(sum_i ||x_i||^2)
    return (_log_product(vals) + math.log(math.sqrt(2.0 * math.log(2.0) * d) + 1.0)
            + math.log(x_norm) - math.log(n))


def golowich_l1inf(
    norms: Sequence[float], *, x_col_norm: float, n: int, input_dim: int
) -> float:
    r"""Golowich, Rakhlin & Shamir (2018), Theorem 2: the $\ell_1 \to \ell_\infty$ Rademacher bound.

    For the class $H_d$ of Theorem 1 (`golowich_frobenius`) with $\|W_j\|_{1,\infty} \le M(j)$
    instead, where $\|W\|_{1,\infty}$ is the largest $\ell_1$ norm of a row of $W$ (the incoming
    weights of one unit: a *column* of a Flax (in, out) kernel),

    $$\hat{\mathfrak R}_S(H_d) \le \frac2n \prod_{j=1}^d M(j)\,\sqrt{d + 1 + \ln n_{in}}\;
      \sqrt{\max_{k \in [n_{in}]} \sum_{i=1}^n x_{i,k}^2}.$$

    Symbols: $M(j)$ = ``norms[j-1]``, $n_{in}$ = `input_dim`, the last root = `x_col_norm` (the
    largest column norm of the data matrix). The factor $2\sqrt{d+1+\ln n_{in}}$ is the paper's
    as implemented by Graf et al. (2022); the exact data term could not be read in the paper, so
    docs/bounds/golowich.md derives this inequality from the proof's peeling argument (the
    derivation gives the smaller $\sqrt{2(d\ln 2 + \ln n_{in})}$ in place of
    $2\sqrt{d+1+\ln n_{in}}$, so the value returned is a valid bound either way).

    Args:
      norms: per-layer upper bounds $M(j) \ge 0$, first layer first.
      x_col_norm: $\sqrt{\max_k \sum_i x_{i,k}^2} \ge 0$.
      n: number of examples, >= 1.
      input_dim: $n_{in} \ge 1$, the input dimension.

    Returns:
      The bound on $\hat{\mathfrak R}_S(H_d)$, a float.

    Raises:
      TypeError, ValueError: negative or non-finite norms, an empty list, n < 1, input_dim < 1.

    Examples:
      >>> round(golowich_l1inf([1.0, 1.0], x_col_norm=1.0, n=1, input_dim=1), 7)  # 2 sqrt(3)
      3.4641016

    References:
      Golowich, Rakhlin & Shamir, COLT 2018, arXiv:1712.06541, Theorem 2.
    """
    vals = _check_norms(norms)
    x_col_norm = check_positive(x_col_norm, "x_col_norm", allow_zero=True)
    n = check_n(n)
    input_dim = check_n(input_dim, "input_dim")
    if x_col_norm == 0.0:
        return 0.0
    return _exp(_log_l1inf(vals, x_col_norm, n, input_dim))


def _log_l1inf(vals: Sequence[float], x_col_norm: float, n: int, input_dim: int) -> float:
    """ln of Theorem 2's bound (-inf when it is 0); finite where the bound overflows."""
    if x_col_norm == 0.0:
        return -math.inf
    d = len(vals)
    # Theorem 2: (2/m) prod_j M(j) sqrt(d + 1 + log n_in) sqrt(max_k sum_i x_ik^2)
    return (math.log(2.0) + _log_product(vals) + 0.5 * math.log(d + 1.0 + math.log(input_dim))
            + math.log(x_col_norm) - math.log(n))


def _log_sum(*logs: float) -> float:
    """ln(sum_i exp(l_i)) without overflow."""
    top = max(logs)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in logs))


def golowich_margin_bound(
    *,
    ramp_loss: float,
    margin: float,
    rademacher: float,
    n: int,
    delta: float,
    num_classes: int,
    log_prior: float = 0.0,
) -> float:
    r"""The Rademacher margin bound on the 0-1 error for a margin and norms fixed in advance.

    With probability at least $1-\delta$ over $n$ i.i.d. examples, for every $h$ in the class:

    * binary (`num_classes` $\le 2$; $h$ a real-valued score, margin $\tilde y\, h(x)$ with
      $\tilde y \in \{\pm1\}$), Mohri et al. (2018) Theorem 5.8, eq. (5.40):

        $$\Pr[\tilde y\, h(x) \le 0] \le \hat R_{S,\gamma}(h) + \frac2\gamma
        \hat{\mathfrak R}_S(H) + 3\sqrt{\frac{\ln(2/\delta)}{2n}};$$

    * $k \ge 3$ classes (score $h(x, y)$, margin $h(x,y) - \max_{y'\ne y} h(x,y')$), Mohri et al.
      (2018) Theorem 9.2 (Kuznetsov, Mohri & Syed 2015) in its empirical-complexity form:

        $$\Pr[\text{margin} \le 0] \le \hat R_{S,\gamma}(h) + \frac{4k}\gamma
        \hat{\mathfrak R}_S(\Pi_1(H)) + 3\sqrt{\frac{\ln(2/\delta)}{2n}},\qquad
        \Pi_1(H) = \{x \mapsto h(x, y) : y, h\}.$$

    $\hat R_{S,\gamma}$ is the empirical ramp (margin) loss $\frac1n\sum_i \min(1, \max(0,
    1 - \mathrm{margin}_i/\gamma))$ (`ramp_loss`), $\hat{\mathfrak R}_S$ = `rademacher`.
    `log_prior` $= \ln(1/\pi)$ is the price of a union bound in which this configuration is used
    with confidence $\pi\delta$: it is added to $\ln(2/\delta)$ under the root (computed in log
    space, so tiny $\pi\delta$ cannot underflow). The value is never clipped.

    Args:
      ramp_loss: empirical ramp loss at `margin`, in [0, 1].
      margin: $\gamma > 0$.
      rademacher: the bound on $\hat{\mathfrak R}_S(H)$ (binary) or $\hat{\mathfrak R}_S(\Pi_1(H))$.
      n: number of training examples, >= 1.
      delta: failure probability in (0, 1).
      num_classes: $k \ge 1$ (1 for a single binary score).
      log_prior: $\ln(1/\pi) \ge 0$, default 0.

    Returns:
      The bound on the 0-1 test error, a float (inf if `rademacher` is inf).

    Raises:
      TypeError, ValueError: any argument outside its range.

    Examples:
      >>> round(golowich_margin_bound(ramp_loss=0.0, margin=1.0, rademacher=0.0, n=100,
      ...                             delta=0.05, num_classes=10), 6)
      0.40743

    References:
      Mohri, Rostamizadeh & Talwalkar, "Foundations of Machine Learning", 2nd ed., 2018,
      Theorems 5.8, 9.2 and 3.3. Kuznetsov, Mohri & Syed, "Rademacher Complexity Margin Bounds
      for Learning with a Large Number of Classes", ICML 2015.
    """
    ramp = check_unit_interval(ramp_loss, "ramp_loss")
    gamma = check_margin(margin)
    rad = rademacher if rademacher == math.inf else check_positive(rademacher, "rademacher",
                                                                    allow_zero=True)
    n = check_n(n)
    delta = check_delta(delta)
    k = check_n(num_classes, "num_classes")
    log_prior = check_positive(log_prior, "log_prior", allow_zero=True)
    # 2/gamma: Talagrand's contraction of the 1/gamma-Lipschitz ramp (Thm 5.8); 4k/gamma: Thm 9.2.
    factor = 2.0 if k <= 2 else 4.0 * k
    confidence = 3.0 * math.sqrt((math.log(2.0 / delta) + log_prior) / (2.0 * n))
    return ramp + factor * rad / gamma + confidence


def _kernels64(layers: Sequence[Any]) -> list[np.ndarray]:
    return [np.asarray(layer.kernel, dtype=np.float64) for layer in layers]


def _matrix_norm(kernel: np.ndarray, norm: str) -> float:
    """||W||_F, or ||W||_{1,inf} = max over units of the l1 norm of the incoming weights."""
    if norm == "frobenius":
        return float(np.sqrt(np.sum(kernel * kernel)))
    return float(np.max(np.sum(np.abs(kernel), axis=0)))  # Flax (in, out): a unit is a column


def _vector_norm(v: np.ndarray, norm: str) -> float:
    return float(np.sqrt(np.sum(v * v))) if norm == "frobenius" else float(np.sum(np.abs(v)))


@checked_result
def golowich(
    params: Any,
    *,
    X: Any,
    y: Any = None,
    apply_fn: Callable[[Any, Any], Any] | None = None,
    logits: Any = None,
    margin: float | None = None,
    margin_quantile: float | None = None,
    delta: float = 0.05,
    norm: str = "frobenius",
    grid_loss: float = 0.05,
    layers: Sequence[str] | None = None,
) -> Bound:
    r"""Golowich, Rakhlin & Shamir (2018): Rademacher complexity and margin bound of a ReLU net.

    **Complexity** (always): ``.complexity`` is the paper's bound on the empirical Rademacher
    complexity on the sample `X`, for ``norm="frobenius"`` Theorem 1,

    $$\hat{\mathfrak R}_S \le \frac1n \prod_{j=1}^d \|W_j\|_F\,\big(\sqrt{2\ln(2)\,d}+1\big)
      \sqrt{\textstyle\sum_{i=1}^n \|x_i\|_2^2},$$

    and for ``norm="l1inf"`` Theorem 2,
    $\frac2n \prod_j \|W_j\|_{1,\infty}\sqrt{d+1+\ln n_{in}}\sqrt{\max_k\sum_i x_{i,k}^2}$
    (see `golowich_frobenius`, `golowich_l1inf`). $d$ is the number of weight layers, $n$ (the
    paper's $m$) = ``len(X)``. The theorems are for bias-free networks; a network with biases is
    read as the bias-free network on $[x; 1]$ (`augment_biases`: hidden $\tilde W_j = [[W_j,
    b_j], [0, 1]]$, last $[W_d\ b_d]$), so the norms include the biases and the data term is that
    of $[x_i; 1]$ ($\sum_i\|x_i\|^2 + n$). For a network with $k > 1$ outputs the full last layer
    enters, which bounds the complexity of each output $x \mapsto f(x)_y$. A network whose
    biases are all zero (or absent) is bias-free and is bounded without the augmentation.

    **Bound** (with `y` and `apply_fn` or `logits`): ``.value`` is an upper bound on the 0-1 test
    error (ties counted as errors), with probability at least $1-\delta$:

    $$\Pr[\text{error}] \le \hat R_{S,\bar\gamma} + \frac{c_k}{\bar\gamma}\,
      \mathfrak C(\bar M_1, \dots, \bar M_d) + 3\sqrt{\frac{\ln(2/\delta)
      + \sum_j \ln(1/p(k_j)) + \ln(1/p(k_\gamma))}{2n}}.$$

    * $c_k = 2$ for binary networks (one score, or two logits read as the score
      $f_1 - f_0$), Mohri et al. (2018) Theorem 5.8; $c_k = 4k$ for $k \ge 3$ classes, their
      Theorem 9.2 (Kuznetsov, Mohri & Syed 2015), applied to $\Pi_1(H) = \{x \mapsto f(x)_y\}$.
    * $\mathfrak C$ is the Theorem 1 (or 2) bound with the last layer's norm replaced by that of
      the scalar network the theorem sees: $\|w_{:,1} - w_{:,0}\|$ (two logits), the single
      column (one score), or $\max_y \|w_{:,y}\|$ ($k \ge 3$; the $\ell_2$ norm for Theorem 1,
      $\ell_1$ for Theorem 2), biases included as above.
    * Union bound (as for `genbounds.spectral`, docs/bounds/spectral.md): every norm is rounded
      **up** and $\gamma$ **down** to the grid $(1+r)^k$, $k\in\mathbb Z$, with prior
      $p(k) = 2/(3(|k|+1)(|k|+2))$; $r = (1+\text{grid\_loss})^{1/(d+1)} - 1$ so rounding costs at
      most a factor $1+$ `grid_loss` in $\mathfrak C/\gamma$. $\hat R_{S,\bar\gamma}$ is the
      empirical ramp loss at $\bar\gamma \le \gamma$.

    Derivation, and which constant is verified where: docs/bounds/golowich.md.

    Args:
      params: the network's parameters (dense ReLU layers; Flax linen, nnx, or a plain pytree).
      X: training inputs, shape (n, ...), flattened per example; the flattened size must be the
        first layer's fan-in.
      y: integer training labels, shape (n,) (in {0, 1} for a single score).
      apply_fn: ``apply_fn(params, X) -> logits``; or give `logits` (not both).
      logits: training logits, shape (n, k), or (n,) / (n, 1) for one binary score.
      margin: $\gamma > 0$; or `margin_quantile` in (0, 1), $\gamma$ being that quantile of the
        training margins; default: the 10% quantile.
      delta: failure probability, in (0, 1).
      norm: ``"frobenius"`` (Theorem 1) or ``"l1inf"`` (Theorem 2).
      grid_loss: how much the union-bound grid may inflate $\mathfrak C/\gamma$ (default 5%).
      layers: explicit layer order (see `read_layers`).

    Returns:
      A `Bound`. Without `y` a measure (``value=None``). Terms: ``norms`` (per layer, of the
      bias-augmented network when it has biases), ``depth``, ``x_norm`` (the data term),
      ``theorem``; with data also ``margin``, ``margin_grid``, ``ramp_loss``, ``num_classes``,
      ``last_layer_norm``, ``norms_grid``, ``rademacher`` ($\mathfrak C$ at the grid),
      ``complexity_term``, ``confidence_term``, ``log_prior``, ``grid_ratio``, ``k_norms``,
      ``k_margin``.

    Raises:
      ValueError, TypeError: bad parameters or data; convolution layers; delta outside (0, 1);
        margin <= 0; NaN logits; X, y, logits of different lengths; logits whose width is not
        the last layer's; `apply_fn`/`logits`/`margin` without `y`.

    Examples:
      >>> import numpy as np
      >>> eye = {"kernel": np.eye(2)}
      >>> params = {"Dense_0": eye, "Dense_1": eye, "Dense_2": eye}
      >>> X = np.array([[1.0, 0.0]])
      >>> b = golowich(params, X=X)
      >>> round(b.complexity, 6)  # 2^{3/2} (sqrt(6 ln 2) + 1): three ||I_2||_F = sqrt(2)
      8.596535
      >>> X = np.array([[1.0, 0.0], [0.0, 1.0]] * 50); y = np.array([0, 1] * 50)
      >>> golowich(params, X=X, y=y, logits=X, margin=0.5).vacuous
      True

    References:
      Golowich, Rakhlin & Shamir, "Size-Independent Sample Complexity of Neural Networks",
      COLT 2018, arXiv:1712.06541, Theorems 1 and 2.
      Mohri, Rostamizadeh & Talwalkar, "Foundations of Machine Learning", 2nd ed., MIT Press
      2018, Theorems 3.3, 5.8 and 9.2.
      Kuznetsov, Mohri & Syed, "Rademacher Complexity Margin Bounds for Learning with a Large
      Number of Classes", ICML 2015.
    """
    check_choice(norm, "norm", _NORMS)
    X = check_array(X, "X")
    n = int(np.shape(X)[0])
    X2 = np.asarray(X, dtype=np.float64).reshape(n, -1)

    caller = "golowich (Golowich et al. 2018)"
    if apply_fn is not None and logits is not None:
        raise ValueError("golowich: give apply_fn or logits, not both")
    net = as_network(params, apply_fn=apply_fn, X=X, layers=layers, caller=caller)
    if net.structure_assumed and logits is not None:
        verify_chain(net, X2, logits, caller)
    chain = net.chain(caller, homogeneous=True, dense_only=True)
    read = chain.layers
    if X2.shape[1] != read[0].fan_in:
        raise ValueError(
            f"X has {X2.shape[1]} features per example (flattened shape {tuple(np.shape(X))[1:]}) "
            f"but the first layer {read[0].path!r} has fan-in {read[0].fan_in}"
        )
    has_bias = has_biases(read)  # zero biases are no biases: no augmentation
    net = augment_biases(read) if has_bias else read
    Xa = np.concatenate([X2, np.ones((n, 1))], axis=1) if has_bias else X2
    kernels = _kernels64(net)
    d = len(kernels)
    norms = [_matrix_norm(k, norm) for k in kernels]
    input_dim = Xa.shape[1]
    if norm == "frobenius":
        x_term = float(np.sqrt(np.sum(Xa * Xa)))

        def bound(ms: Sequence[float]) -> float:
            return golowich_frobenius(ms, x_norm=x_term, n=n)

        def log_bound(ms: Sequence[float]) -> float:
            return _log_frobenius(ms, x_term, n)
    else:
        x_term = float(np.sqrt(np.max(np.sum(Xa * Xa, axis=0))))

        def bound(ms: Sequence[float]) -> float:
            return golowich_l1inf(ms, x_col_norm=x_term, n=n, input_dim=input_dim)

        def log_bound(ms: Sequence[float]) -> float:
            return _log_l1inf(ms, x_term, n, input_dim)

    complexity = bound(norms)
    theorem = _THEOREM[norm]
    terms: dict[str, Any] = {
        "norms": {layer.path: v for layer, v in zip(net, norms, strict=True)},
        "depth": d,
        "x_norm": x_term,
        "input_dim": input_dim,
        "theorem": theorem,
    }
    notes = [f"{theorem} ({'Frobenius' if norm == 'frobenius' else 'l1->inf'} norms)"]
    log_complexity = log_bound(norms)
    terms["log_complexity"] = log_complexity
    if complexity == math.inf:
        notes.append(f"the complexity overflows to inf; its logarithm ln C = {log_complexity:.6g} "
                     "is finite (terms['log_complexity'])")
    if has_bias:
        notes.append("biases by augmentation x -> [x; 1]: norms and data term of the augmented "
                     "bias-free network")
    reference = GOLOWICH_REFERENCE + f", {theorem}"

    if y is None:
        refuse_margin_inputs_without_y("golowich", apply_fn=apply_fn, logits=logits,
                                       margin=margin, margin_quantile=margin_quantile)
        return Bound(name="golowich", value=None, complexity=complexity, terms=terms, n=n,
                     reference=reference, notes=tuple(notes))

    # ---- the margin bound ---------------------------------------------------------------------
    delta = check_delta(delta)
    check_positive(grid_loss, "grid_loss")
    _, logits, m, gamma, margin_note = training_margins(
        params, X=X, y=y, apply_fn=apply_fn, logits=logits, margin=margin,
        margin_quantile=margin_quantile, caller="golowich")
    k = 1 if np.ndim(logits) == 1 else int(np.shape(logits)[-1])
    if k != kernels[-1].shape[1]:
        raise ValueError(
            f"logits have {k} columns but the last layer {net[-1].path!r} has "
            f"{kernels[-1].shape[1]} outputs; pass the logits of this network"
        )

    # The scalar network(s) the Rademacher theorem is applied to: last layer = one column.
    last = kernels[-1]
    if k == 1:
        last_norm = _vector_norm(last[:, 0], norm)
        last_note = "single score: the last layer's column"
    elif k == 2:
        last_norm = _vector_norm(last[:, 1] - last[:, 0], norm)
        last_note = "two logits read as the binary score f_1 - f_0: column difference"
    else:
        last_norm = max(_vector_norm(last[:, j], norm) for j in range(k))
        last_note = "k >= 3: Pi_1(H), largest column norm of the last layer"
    scalar_norms = norms[:-1] + [last_norm]

    # Union bound over the grid (1+r)^k: C is of degree 1 in each of the d norms, and 1/gamma.
    r = grid_ratio(grid_loss, d + 1)
    # A zero norm is rounded up to the grid point k = 0 (value 1): still an upper bound.
    grid = union_grid(("up", scalar_norms, r), ("down", [gamma], r))
    ks, norms_bar = list(grid.k[0]), list(grid.values[0])
    (k_gamma,), (gamma_bar,) = grid.k[1], grid.values[1]
    log_prior = grid.log_prior

    rad = bound(norms_bar)
    ramp = float(ramp_loss(m, margin=gamma_bar))
    value = golowich_margin_bound(ramp_loss=ramp, margin=gamma_bar, rademacher=rad, n=n,
                                  delta=delta, num_classes=k, log_prior=log_prior)
    factor = 2.0 if k <= 2 else 4.0 * k
    confidence = 3.0 * math.sqrt((math.log(2.0 / delta) + log_prior) / (2.0 * n))
    log_rad = log_bound(norms_bar)
    log_value = _log_sum(math.log(ramp) if ramp > 0 else -math.inf,
                         math.log(factor) + log_rad - math.log(gamma_bar), math.log(confidence))
    if value == math.inf:
        notes.append(f"the bound overflows to inf (vacuous); its logarithm ln value = "
                     f"{log_value:.6g} is finite (terms['log_value'])")
    terms.update(log_rademacher=log_rad, log_value=log_value)
    terms.update(
        margin=gamma, margin_grid=gamma_bar, ramp_loss=ramp, num_classes=k,
        last_layer_norm=last_norm, norms_grid=norms_bar, rademacher=rad,
        complexity_term=factor * rad / gamma_bar, confidence_term=confidence,
        log_prior=log_prior, grid_ratio=r, k_norms=ks, k_margin=k_gamma,
    )
    margin_theorem = ("Mohri et al. 2018 Thm 5.8 (binary, 2/gamma)" if k <= 2
                      else f"Mohri et al. 2018 Thm 9.2 (k = {k} classes, 4k/gamma)")
    notes += [margin_note, last_note, margin_theorem,
              "norms rounded up and gamma down to a grid, union bound: docs/bounds/golowich.md"]
    return Bound(name="golowich", value=value, complexity=complexity, terms=terms, n=n,
                 delta=delta, reference=reference + "; " + MOHRI_REFERENCE, notes=tuple(notes))
