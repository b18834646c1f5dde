"""Generalisation bounds from a given Rademacher complexity of a loss class.

Normalisation (BFT 2017, Mohri et al.): for a class $G$ of functions of $z = (x, y)$ with values
in $[0, 1]$ and a sample $S = (z_1, \\dots, z_n)$,

$$\\hat{\\mathfrak R}_S(G) = \\mathbb E_\\sigma \\sup_{g \\in G} \\frac1n \\sum_{i=1}^n \\sigma_i g(z_i),
\\qquad \\mathfrak R_n(G) = \\mathbb E_S\\, \\hat{\\mathfrak R}_S(G),$$

with $\\sigma_i$ independent uniform signs: no absolute value, no factor 2 (Bartlett & Mendelson
2002 use both; their $R_n$ is at least twice this one). The bounds, with probability at least
$1 - \\delta$ simultaneously for all $g \\in G$, are

$$\\mathbb E g \\le \\hat{\\mathbb E}_S g + 2\\,\\mathfrak R_n(G) + \\sqrt{\\ln(1/\\delta)/(2n)}
\\quad\\text{and}\\quad
\\mathbb E g \\le \\hat{\\mathbb E}_S g + 2\\,\\hat{\\mathfrak R}_S(G) + 3\\sqrt{\\ln(2/\\delta)/(2n)},$$

each derived from McDiarmid's inequality in docs/bounds/rademacher.md.
"""

from __future__ import annotations

import math
from typing import Any

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    check_delta,
    check_margin,
    check_n,
    check_positive,
    check_scalar,
    check_unit_interval,
)

_MOHRI = (
    "Mohri, Rostamizadeh & Talwalkar, Foundations of Machine Learning (2nd ed., 2018), "
    "Theorem 3.3; Bartlett & Mendelson, Rademacher and Gaussian complexities, JMLR 3, 2002"
)
_BFT = (
    "Bartlett, Foster & Telgarsky, Spectrally-normalized margin bounds for neural networks, "
    "NeurIPS 2017, arXiv:1706.08498, Lemma 3.1 (with ln(2/delta), see docs/bounds/rademacher.md)"
)


def rademacher_bound_value(
    rademacher: float, *, n: int, delta: float, train_loss: float, empirical: bool = True
) -> tuple[float, float]:
    """The bound and its confidence term, without checks: (value, confidence_term)."""
    if empirical:
        conf = 3.0 * math.sqrt(math.log(2.0 / delta) / (2.0 * n))  # Mohri Thm 3.3, eq. (3.4)
    else:
        conf = math.sqrt(math.log(1.0 / delta) / (2.0 * n))  # Mohri Thm 3.3, eq. (3.3)
    return train_loss + 2.0 * rademacher + conf, conf


def _split_delta(delta: float, rademacher_delta: Any) -> float:
    if rademacher_delta is None:
        return delta
    rd = check_scalar(rademacher_delta, "rademacher_delta")
    if not (0.0 < rd < delta):
        raise ValueError(
            f"rademacher_delta must lie in (0, delta) = (0, {delta:g}): it is charged to the "
            f"total failure probability delta; got {rademacher_delta!r}"
        )
    return delta - rd


def rademacher_bound(
    rademacher: Any,
    *,
    n: int,
    delta: float = 0.05,
    train_loss: Any,
    empirical: bool = True,
    rademacher_delta: Any = None,
    estimated: bool = False,
) -> Bound:
    r"""Bound on the expected loss from the Rademacher complexity of a [0, 1]-valued loss class.

    For a class $G$ of functions with values in $[0, 1]$, with probability at least $1 - \delta$
    over the $n$ examples, simultaneously for every $g \in G$:

    * empirical complexity (``empirical=True``, the default):
      $\mathbb E g \le \hat{\mathbb E}_S g + 2\,\hat{\mathfrak R}_S(G) + 3\sqrt{\ln(2/\delta)/(2n)}$;
    * expected complexity (``empirical=False``):
      $\mathbb E g \le \hat{\mathbb E}_S g + 2\,\mathfrak R_n(G) + \sqrt{\ln(1/\delta)/(2n)}$.

    Symbols: $\hat{\mathbb E}_S g$ = `train_loss`; $\hat{\mathfrak R}_S(G)$ or $\mathfrak R_n(G)$
    = `rademacher` (normalised as in the module docstring); $n$ = `n`; $\delta$ = `delta`.

    BFT 2017's Lemma 3.1 prints $\ln(1/\delta)$ in the empirical form; the McDiarmid argument
    (two deviations, each at $\delta/2$) gives $\ln(2/\delta)$, the constant used here
    (docs/bounds/rademacher.md).

    **Estimated complexity.** When `rademacher` is an estimate that upper-bounds the true
    complexity with probability at least $1 - \delta_R$ (e.g. a Monte-Carlo mean plus its
    deviation bound), pass $\delta_R$ = `rademacher_delta`: it is charged to `delta` (the
    concentration terms use $\delta - \delta_R$, so the result holds with probability
    $1 - \delta$ by a union bound) and the result is marked ``estimated``. With
    ``estimated=True`` and no `rademacher_delta` the input carries no guarantee: the value is
    reported, marked ``estimated``, and is not a certified bound.

    Args:
      rademacher: the Rademacher complexity of the loss class, >= 0.
      n: number of training examples, >= 1.
      delta: total failure probability in (0, 1).
      train_loss: the empirical loss $\hat{\mathbb E}_S g$ of the chosen function, in [0, 1].
      empirical: whether `rademacher` is the empirical complexity on the training sample (True)
        or the expected one (False).
      rademacher_delta: failure probability of an estimated `rademacher`, in (0, delta).
      estimated: mark the input as an estimate (implied by `rademacher_delta`).

    Returns:
      A `Bound` named ``"rademacher_bound"``; ``complexity`` = `rademacher`; ``terms`` hold
      ``train_loss``, ``rademacher``, ``confidence_term`` and ``delta_concentration``. The value
      is never clipped.

    Raises:
      TypeError: non-numeric input.
      ValueError: delta outside (0, 1), n < 1, train_loss outside [0, 1], rademacher < 0,
        rademacher_delta outside (0, delta), NaN or inf.

    Examples:
      >>> b = rademacher_bound(0.05, n=10_000, delta=0.05, train_loss=0.02)
      >>> round(b.value, 5)
      0.16074
      >>> round(rademacher_bound(0.05, n=10_000, train_loss=0.02, empirical=False).value, 5)
      0.13224

    References:
      Mohri, Rostamizadeh & Talwalkar, Foundations of Machine Learning, 2nd ed., MIT Press 2018,
      Theorem 3.3; Bartlett & Mendelson, Rademacher and Gaussian complexities: risk bounds and
      structural results, JMLR 3, 2002; Bartlett, Foster & Telgarsky, NeurIPS 2017,
      arXiv:1706.08498, Lemma 3.1.
    """
    rad = check_positive(check_scalar(rademacher, "rademacher"), "rademacher", allow_zero=True)
    n = check_n(n)
    delta = check_delta(delta)
    loss = check_unit_interval(check_scalar(train_loss, "train_loss"), "train_loss")
    if not isinstance(empirical, bool):
        raise TypeError(f"empirical must be True or False, got {empirical!r}")
    d_conc = _split_delta(delta, rademacher_delta)
    value, conf = rademacher_bound_value(
        rad, n=n, delta=d_conc, train_loss=loss, empirical=empirical
    )
    is_est = bool(estimated) or rademacher_delta is not None
    notes = [
        "empirical Rademacher complexity: 3 sqrt(ln(2/delta)/(2n)) (Mohri Thm 3.3)"
        if empirical
        else "expected Rademacher complexity: sqrt(ln(1/delta)/(2n)) (Mohri Thm 3.3)"
    ]
    if rademacher_delta is not None:
        notes.append(
            f"estimated complexity with its own failure probability {delta - d_conc:g}, charged "
            f"to delta (concentration terms use {d_conc:g})"
        )
    elif estimated:
        notes.append("estimated complexity without a confidence: not a certified bound")
    return Bound(
        name="rademacher_bound",
        value=value,
        complexity=rad,
        terms={
            "train_loss": loss,
            "rademacher": rad,
            "confidence_term": conf,
            "delta_concentration": d_conc,
        },
        n=n,
        delta=delta,
        estimated=is_est,
        reference=_MOHRI,
        notes=tuple(notes),
    )


def margin_rademacher_bound(
    ramp_rademacher: Any,
    *,
    n: int,
    delta: float = 0.05,
    ramp_loss: Any,
    margin: Any = None,
    rademacher_delta: Any = None,
    estimated: bool = False,
) -> Bound:
    r"""Margin bound on the 0-1 test error from the Rademacher complexity of the ramp-loss class.

    For $F_\gamma = \{(x, y) \mapsto \ell_\gamma(-\mathcal M(f(x), y)) : f \in F\}$ with the ramp
    loss $\ell_\gamma$ and margin operator $\mathcal M$ of BFT 2017, and a margin $\gamma > 0$
    fixed before seeing the data, with probability at least $1 - \delta$, for every $f \in F$:

    $$\Pr[\arg\max_j f(x)_j \ne y] \le \hat R_\gamma(f) + 2\,\mathfrak R(F_\gamma|_S)
      + 3\sqrt{\ln(2/\delta)/(2n)}.$$

    This is `rademacher_bound` applied to $F_\gamma$ (values in [0, 1]) together with
    $\mathbf 1[\arg\max_j f(x)_j \ne y] \le \ell_\gamma(-\mathcal M(f(x), y))$. BFT's Lemma 3.1
    prints $\ln(1/\delta)$; we use the conservative $\ln(2/\delta)$ (docs/bounds/rademacher.md).

    The input is $\mathfrak R(F_\gamma|_S)$ itself, not the complexity of the network class: how
    a bound on the real-valued class maps to it depends on the bound. For binary scores
    ($F_\gamma = \{\ell_\gamma(-(2y-1)h(x))\}$), Talagrand's contraction with the $1/\gamma$-Lipschitz
    ramp gives $\mathfrak R(F_\gamma|_S) \le \mathfrak R(H|_S)/\gamma$. For $k > 2$ classes the
    margin operator is 2-Lipschitz only jointly in $\ell_\infty$ (not coordinate-wise), so that
    contraction does not apply as is; BFT go through covering numbers (their Lemma A.8 bounds
    $\mathfrak R(F_\gamma|_S)$ directly). Each bound that calls this function does its own reduction.

    A $\gamma$ read off the training margins (a quantile) is only covered by a bound that holds
    uniformly over $\gamma$; use a union bound over a grid of margins in that case.

    Args:
      ramp_rademacher: $\mathfrak R(F_\gamma|_S)$, the empirical Rademacher complexity of the
        ramp-loss class on the training sample, >= 0.
      n: number of training examples, >= 1.
      delta: failure probability in (0, 1).
      ramp_loss: $\hat R_\gamma(f)$, the empirical ramp loss at the same $\gamma$ (see
        `genbounds.ramp_loss`), in [0, 1].
      margin: the $\gamma$ used (recorded in the result; optional, must be > 0).
      rademacher_delta: failure probability of an estimated `ramp_rademacher` (see
        `rademacher_bound`).
      estimated: mark the input as an estimate.

    Returns:
      A `Bound` named ``"margin_rademacher"`` whose value bounds the 0-1 test error.

    Raises:
      TypeError, ValueError: as `rademacher_bound`; a margin <= 0.

    Examples:
      >>> b = margin_rademacher_bound(0.05, n=10_000, delta=0.05, ramp_loss=0.02, margin=1.0)
      >>> round(b.value, 5)
      0.16074

    References:
      Bartlett, Foster & Telgarsky, Spectrally-normalized margin bounds for neural networks,
      NeurIPS 2017, arXiv:1706.08498, Lemma 3.1; Mohri, Rostamizadeh & Talwalkar, Foundations of
      Machine Learning, 2nd ed., 2018, Theorem 3.3.
    """
    gamma = None if margin is None else check_margin(margin)
    base = rademacher_bound(
        ramp_rademacher,
        n=n,
        delta=delta,
        train_loss=ramp_loss,
        empirical=True,
        rademacher_delta=rademacher_delta,
        estimated=estimated,
    )
    terms = {
        "ramp_loss": base.terms["train_loss"],
        "ramp_rademacher": base.terms["rademacher"],
        "confidence_term": base.terms["confidence_term"],
        "delta_concentration": base.terms["delta_concentration"],
    }
    notes = list(base.notes)
    if gamma is not None:
        terms["margin"] = gamma
        notes.append(f"margin gamma = {gamma:g}, fixed before seeing the data")
    return Bound(
        name="margin_rademacher",
        value=base.value,
        complexity=base.complexity,
        terms=terms,
        n=base.n,
        delta=base.delta,
        estimated=base.estimated,
        reference=_BFT,
        notes=tuple(notes),
    )
