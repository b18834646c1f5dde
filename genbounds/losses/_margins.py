"""Margins of a classifier's outputs, margin losses, and the choice of the margin gamma.

The multiclass margin of Bartlett, Foster & Telgarsky (2017) is the margin operator
$\\mathcal M(v, y) = v_y - \\max_{j \\ne y} v_j$ applied to the network's output (logits) $v$; a
point is classified correctly (argmax, ties counted as errors) exactly when its margin is > 0.

**Binary convention.** Logits of shape (n,) or (n, 1) hold one score $s$ per example and labels
$y \\in \\{0, 1\\}$; they are read as the two-class logits $(0, s)$ (equivalently $(-s/2, s/2)$),
so the prediction is 1 when $s > 0$ and the margin is $(2y - 1)\\,s$: $s$ for $y = 1$ and $-s$ for
$y = 0$. Scores for labels in {-1, +1} should be mapped to {0, 1} first.

The array functions are jittable: their shape checks are static, and the value checks (NaN,
label range, margin > 0) run only on concrete (non-traced) inputs. See docs/bounds/margins.md.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import NotBoundable, check_array, check_labels, check_margin, check_n

_BFT = (
    "Bartlett, Foster & Telgarsky, Spectrally-normalized margin bounds for neural networks, "
    "NeurIPS 2017, arXiv:1706.08498"
)


def _is_traced(*xs: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


def _as_float(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.result_type(float))


# ----------------------------------------------------------------------------------------------
# Jittable cores.


def margins_core(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Margins without argument checks; logits (n, k) with k >= 1, integer labels (n,)."""
    logits = _as_float(logits)
    y = jnp.asarray(y).astype(jnp.int32)
    if logits.ndim == 1:
        logits = logits[:, None]
    k = logits.shape[1]
    if k == 1:  # binary scores read as logits (0, s): margin (2y - 1) s
        s = logits[:, 0]
        return jnp.where(y == 1, s, -s)
    own = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    is_own = jnp.arange(k, dtype=y.dtype)[None, :] == y[:, None]
    other = jnp.max(jnp.where(is_own, -jnp.inf, logits), axis=1)  # max_{j != y} f(x)_j
    return own - other


def _per_margin(m: jax.Array, margin: jax.Array, fn) -> jax.Array:
    g = _as_float(margin)
    cols = m.reshape((-1,) + (1,) * g.ndim)
    return jnp.mean(fn(cols, g), axis=0)


def margin_loss_core(m: jax.Array, margin: Any) -> jax.Array:
    """Fraction of margins <= margin (broadcast over an array of margins)."""
    return _per_margin(_as_float(m), margin, lambda mm, g: (mm <= g).astype(mm.dtype))


def ramp_loss_core(m: jax.Array, margin: Any) -> jax.Array:
    """Mean of the ramp loss l_gamma(-M) = clip(1 - M/gamma, 0, 1)."""
    return _per_margin(_as_float(m), margin, lambda mm, g: jnp.clip(1.0 - mm / g, 0.0, 1.0))


# ----------------------------------------------------------------------------------------------
# Checks.


def _check_logits_labels(logits: Any, y: Any) -> tuple[Any, Any]:
    traced = _is_traced(logits, y)
    if traced:
        logits, y = jnp.asarray(logits), jnp.asarray(y)
        if logits.ndim not in (1, 2):
            raise ValueError(f"logits must have rank 1 or 2, got shape {tuple(logits.shape)}")
        if y.ndim != 1:
            raise ValueError(f"y must have rank 1, got shape {tuple(y.shape)}")
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    else:
        logits = check_array(logits, "logits", ndim=(1, 2))
        if not (np.issubdtype(logits.dtype, np.number)) or np.issubdtype(logits.dtype, np.bool_):
            raise TypeError(f"logits must be a numeric array, got dtype {logits.dtype}")
        k = 1 if logits.ndim == 1 else int(logits.shape[1])
        if k < 1:
            raise ValueError(f"logits must have at least one column, got shape {logits.shape}")
        y = check_labels(y, "y", num_classes=2 if k == 1 else k)
    if logits.shape[0] != y.shape[0]:
        raise ValueError(
            f"logits and y must have the same number of examples, got {logits.shape[0]} and "
            f"{y.shape[0]}"
        )
    return logits, y


def _check_margins(m: Any, name: str = "margins") -> Any:
    if _is_traced(m):
        m = jnp.asarray(m)
        if m.ndim != 1:
            raise ValueError(f"{name} must have rank 1, got shape {tuple(m.shape)}")
        return m
    m = check_array(m, name, ndim=1)
    if not np.issubdtype(m.dtype, np.number) or np.issubdtype(m.dtype, np.bool_):
        raise TypeError(f"{name} must be a numeric array, got dtype {m.dtype}")
    return m


def _check_margin_values(margin: Any) -> Any:
    if _is_traced(margin):
        return margin
    if np.ndim(margin) == 0:
        return check_margin(margin)
    arr = check_array(margin, "margin")
    if np.any(arr <= 0):
        raise ValueError(
            f"margin must be > 0 everywhere, got {np.asarray(arr)[arr <= 0].ravel()[0]!r}"
        )
    return margin


def _margins_from(values: Any, y: Any) -> Any:
    if y is None:
        return _check_margins(values)
    logits, y = _check_logits_labels(values, y)
    return margins_core(logits, y)


# ----------------------------------------------------------------------------------------------
# Public functions.


def margins(logits: Any, y: Any) -> jax.Array:
    r"""Multiclass margins $f(x)_y - \max_{j \ne y} f(x)_j$ of a batch of outputs.

    Binary scores (shape (n,) or (n, 1)) follow the module's convention: they are read as the
    logits $(0, s)$, so the margin is $(2y-1)s$ for labels $y \in \{0, 1\}$.

    Args:
      logits: network outputs, shape (n, k) with k >= 2 classes, or (n,) / (n, 1) binary scores.
      y: integer labels, shape (n,), in [0, k) (in {0, 1} for binary scores).

    Returns:
      A float `jax.Array` of shape (n,); > 0 exactly where the argmax is the label and unique.

    Raises:
      TypeError: non-numeric logits or non-integer labels.
      ValueError: wrong ranks, mismatched lengths, labels out of range, NaN or inf logits.

    Examples:
      >>> import jax.numpy as jnp
      >>> margins(jnp.array([[2.0, 1.0, 0.5], [0.0, 3.0, 1.0]]), jnp.array([0, 0])).tolist()
      [1.0, -3.0]
      >>> margins(jnp.array([1.5, 1.5]), jnp.array([1, 0])).tolist()
      [1.5, -1.5]

    References:
      Bartlett, Foster & Telgarsky, Spectrally-normalized margin bounds for neural networks,
      NeurIPS 2017, arXiv:1706.08498 (the margin operator).
    """
    logits, y = _check_logits_labels(logits, y)
    return margins_core(logits, y)


def margin_loss(values: Any, margin: Any, *, y: Any = None) -> jax.Array:
    r"""Empirical margin loss: the fraction of examples with margin at most $\gamma$.

    $\hat R_\gamma^{0/1} = \frac1n \sum_i \mathbf 1[\mathcal M(f(x_i), y_i) \le \gamma]$. It upper
    bounds the ramp loss and the training 0-1 error (ties counted as errors), and is
    non-decreasing in $\gamma$.

    Args:
      values: the margins, shape (n,) (see `margins`); or logits when `y` is given.
      margin: $\gamma > 0$; a scalar or an array of margins (the result then has its shape).
      y: labels when `values` are logits; None when they are margins.

    Returns:
      A float `jax.Array` of the shape of `margin`.

    Raises:
      TypeError, ValueError: as `margins`; a margin <= 0, NaN or inf.

    Examples:
      >>> import jax.numpy as jnp
      >>> float(margin_loss(jnp.array([-1.0, 0.5, 1.0, 3.0]), 1.0))
      0.75
      >>> float(margin_loss(jnp.array([[2.0, 0.0], [0.0, 0.5]]), 1.0, y=jnp.array([0, 1])))
      0.5
    """
    m = _margins_from(values, y)
    margin = _check_margin_values(margin)
    return margin_loss_core(m, margin)


def ramp_loss(values: Any, margin: Any, *, y: Any = None) -> jax.Array:
    r"""Empirical ramp loss $\hat R_\gamma(f) = \frac1n\sum_i \ell_\gamma(-\mathcal M(f(x_i), y_i))$.

    $\ell_\gamma(r) = 0$ for $r < -\gamma$, $1 + r/\gamma$ on $[-\gamma, 0]$, and 1 for $r > 0$
    (BFT 2017, Section 3); in terms of the margin, $\ell_\gamma(-M) = \min(1, \max(0, 1 - M/\gamma))$.
    It lies between the 0-1 training error and `margin_loss`, is $1/\gamma$-Lipschitz in the margin,
    and is non-decreasing in $\gamma$.

    Args:
      values: the margins, shape (n,) (see `margins`); or logits when `y` is given.
      margin: $\gamma > 0$; a scalar or an array of margins.
      y: labels when `values` are logits; None when they are margins.

    Returns:
      A float `jax.Array` of the shape of `margin`.

    Raises:
      TypeError, ValueError: as `margins`; a margin <= 0, NaN or inf.

    Examples:
      >>> import jax.numpy as jnp
      >>> float(ramp_loss(jnp.array([-1.0, 0.5, 1.0, 3.0]), 1.0))
      0.375

    References:
      Bartlett, Foster & Telgarsky, Spectrally-normalized margin bounds for neural networks,
      NeurIPS 2017, arXiv:1706.08498.
    """
    m = _margins_from(values, y)
    margin = _check_margin_values(margin)
    return ramp_loss_core(m, margin)


def _quantile_rank(q: float, n: int) -> int:
    # k = floor(q n), computed exactly for decimal q (0.1 * 1000 is 100, not 99.999...).
    return math.floor(Fraction(q).limit_denominator(10**12) * n)


def margin_quantile(margins: Any, q: float = 0.1) -> jax.Array:
    r"""The margin $\gamma$ at the $q$-quantile of the training margins.

    Convention (Jiang et al. 2020's code, ``margins.kthvalue(m // 10)`` for $q = 0.1$):
    $\gamma$ is the $k$-th smallest margin with $k = \lfloor q n \rfloor$ (1-based), i.e. at
    least a fraction $\lfloor qn\rfloor/n \le q$ of the training examples have margin
    $\le \gamma$; when $qn < 1$ the smallest margin ($k = 1$) is used. The papers use $q = 0.05$ or $0.10$.

    A $\gamma \le 0$ (the network misclassifies, or ties, more than about a fraction $q$ of the
    training set) is an error: margin bounds need $\gamma > 0$, and Jiang et al.'s code silently
    takes ``abs()`` of it, which we do not.

    Choosing $\gamma$ from the data is only licensed by a bound that holds uniformly over
    $\gamma$ (a union bound over a grid of margins); the bound that uses it must provide that.

    Args:
      margins: training margins, shape (n,) (see `margins`).
      q: quantile level in (0, 1).

    Returns:
      A 0-d float `jax.Array`, > 0.

    Raises:
      TypeError, ValueError: bad margins; q outside (0, 1); a quantile <= 0.

    Examples:
      >>> import jax.numpy as jnp
      >>> float(margin_quantile(jnp.arange(1.0, 21.0), q=0.1))
      2.0
    """
    m = _check_margins(margins)
    if _is_traced(m):
        raise TypeError("margin_quantile needs concrete margins (it checks that gamma > 0)")
    q = _check_quantile(q)
    n = int(m.shape[0])
    k = max(1, _quantile_rank(q, n))
    gamma = jnp.sort(_as_float(jnp.asarray(m)))[k - 1]
    if not float(gamma) > 0.0:
        frac = float(np.mean(np.asarray(m) <= 0))
        raise NotBoundable(
            f"the {q:g}-quantile of the training margins (the {k}-th smallest of {n}) is "
            f"{float(gamma):.6g} <= 0: {frac:.1%} of the training examples have margin <= 0 "
            "(misclassified or tied), so no positive margin sits at that quantile. Use a smaller "
            "q, or pass an explicit margin > 0."
        )
    return gamma


_margin_quantile = margin_quantile  # select_margin's keyword argument shadows the name


def _check_quantile(q: Any) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float, np.floating, np.integer)):
        raise TypeError(f"margin_quantile must be a real number in (0, 1), got {q!r}")
    q = float(q)
    if not (0.0 < q < 1.0):
        raise ValueError(f"margin_quantile must lie in (0, 1), got {q!r}")
    return q


class SelectedMargin(NamedTuple):
    """The margin a bound will use, and a note of how it was chosen.

    Unpacks as ``gamma, note = select_margin(...)``.

    Attributes:
      margin: $\\gamma > 0$ (a Python float).
      note: which convention ran, for a `Bound`'s notes: an explicit margin, or the quantile
        level q, the rank k = floor(q n) and n of the training margins it was taken from.
    """

    margin: float
    note: str


def select_margin(
    margins: Any = None, *, margin: Any = None, margin_quantile: Any = None
) -> SelectedMargin:
    """Chooses the margin gamma of a margin bound: given explicitly, or a training quantile.

    At most one of `margin` and `margin_quantile` may be given; with neither, the 10% quantile
    of the training margins is used (``margin_quantile=0.1``). With a quantile the margin is
    `margin_quantile(margins, q)` (the k-th smallest margin, k = floor(q n)); see that function
    for the convention and why gamma <= 0 is an error.

    Args:
      margins: training margins, shape (n,); needed unless `margin` is given.
      margin: an explicit gamma > 0.
      margin_quantile: a quantile level q in (0, 1) (the papers use 0.05 or 0.10).

    Returns:
      A `SelectedMargin` ``(margin, note)``.

    Raises:
      TypeError, ValueError: both given; bad values (as `margin_quantile`).

    Examples:
      >>> import jax.numpy as jnp
      >>> gamma, note = select_margin(jnp.arange(1.0, 21.0), margin_quantile=0.1)
      >>> gamma
      2.0
      >>> select_margin(margin=0.5).note
      'margin 0.5 given explicitly'
    """
    if margin is not None and margin_quantile is not None:
        raise ValueError(
            "give at most one of margin (an explicit gamma > 0) and margin_quantile (a level q in "
            f"(0, 1)); got margin={margin!r}, margin_quantile={margin_quantile!r}"
        )
    if margin is not None:
        g = check_margin(margin)
        return SelectedMargin(margin=g, note=f"margin {g:g} given explicitly")
    default = margin_quantile is None
    q = _check_quantile(0.1 if default else margin_quantile)
    if margins is None:
        raise ValueError("margins (the training margins) are needed to take margin_quantile")
    m = _check_margins(margins)
    n = check_n(int(m.shape[0]), "len(margins)")
    k = max(1, _quantile_rank(q, n))
    g = float(_margin_quantile(m, q))
    clamp = " (q n < 1: the smallest margin)" if _quantile_rank(q, n) < 1 else ""
    which = " (the default)" if default else ""
    note = (
        f"margin {g:.6g} = the {q:g}-quantile of the {n} training margins{which}, the k-th "
        f"smallest with k = floor(q n) = {k}{clamp} (Jiang et al. 2020 convention)"
    )
    return SelectedMargin(margin=g, note=note)


class TrainingMargins(NamedTuple):
    """What a margin bound reads off the data: see `training_margins`."""

    X: np.ndarray  # (n, d) float64, flattened per example
    logits: Any
    margins: jax.Array
    margin: float
    note: str


def training_margins(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any = None,
    logits: Any = None,
    margin: Any = None,
    margin_quantile: Any = None,
    caller: str,
) -> TrainingMargins:
    """The shared first step of every margin bound: logits, margins and the chosen gamma.

    Takes `logits`, or computes ``apply_fn(params, X)`` (exactly one of the two), checks that X
    and y have the same number of examples, and selects gamma with `select_margin` (default:
    the 10% quantile of the training margins). `caller` names the bound in error messages.
    """
    from genbounds.core._checks import check_finite_output, check_float_array, check_same_length

    X = check_float_array(X, "X")
    n = int(np.shape(X)[0])
    X2 = np.asarray(X, dtype=np.float64).reshape(n, -1)
    if logits is None:
        from genbounds.network._network import Network

        if apply_fn is None and isinstance(params, Network):
            logits = params(X)
        elif apply_fn is None:
            raise ValueError(f"{caller}: give apply_fn (apply_fn(params, X) -> logits) or logits")
        else:
            if not callable(apply_fn):
                raise TypeError(f"{caller}: apply_fn must be callable, got "
                                f"{type(apply_fn).__name__}")
            logits = apply_fn(params, X)
        out = np.asarray(logits)
        check_finite_output(
            out, f"{caller}: apply_fn(params, X)",
            hint=(f"the network's outputs overflowed {out.dtype} (a deep or large-weight net); "
                  "evaluate it in float64 (jax_enable_x64 and float64 params and X)")
            if np.all(np.isfinite(X2)) and np.issubdtype(out.dtype, np.floating)
            and out.dtype.itemsize < 8 else
            "apply_fn returned NaN or inf on finite inputs and parameters")
    elif apply_fn is not None:
        raise ValueError(f"{caller}: give apply_fn or logits, not both")
    m = margins(logits, y)
    check_same_length(X2, m, "X", "y")
    sel = select_margin(m, margin=margin, margin_quantile=margin_quantile)
    return TrainingMargins(X2, logits, m, float(sel.margin), sel.note)
