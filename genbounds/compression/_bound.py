"""Occam bounds for a network given by a prefix-free code: kl-inverse and Catoni forms.

A prefix-free code assigns the hypothesis h a length of bits(h) bits; by Kraft's inequality
$\\pi(h) = 2^{-\\mathrm{bits}(h)}$ is a sub-probability over hypotheses, fixed before the n
examples are drawn. The point mass on h is a PAC-Bayes posterior with
$KL(\\delta_h \\| \\pi) = \\mathrm{bits}(h) \\ln 2$, and its Gibbs classifier is h itself, a
deterministic network. Hence, with probability at least $1 - \\delta$, for every h
simultaneously:

* kl form (Maurer 2004, Theorem 5, $n \\ge 8$; Lotfi et al. 2022, eq. (2) with $Q = \\delta_h$):
  $\\mathrm{kl}(\\hat e_S(h) \\| e(h)) \\le (\\mathrm{bits}(h) \\ln 2 + \\ln(2\\sqrt n/\\delta))/n$;
* Catoni form (Catoni 2007, Theorem 1.2.6), for each C of a grid of G values fixed in advance,
  at $\\delta/G$ (union bound; the smallest value is reported):
  $e(h) \\le \\frac{1 - \\exp(-C \\hat e_S(h) - (\\mathrm{bits}(h) \\ln 2 + \\ln(G/\\delta))/n)}
  {1 - e^{-C}}$.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import check_delta, check_n, check_positive, check_unit_interval
from genbounds.pacbayes._kl import pac_bayes_kl_bound

REFERENCE = (
    "Lotfi, Finzi, Kapoor, Potapczynski, Goldblum, Wilson. PAC-Bayes compression bounds so tight "
    "that they can explain generalization. NeurIPS 2022, arXiv:2211.13609; Maurer, A note on the "
    "PAC Bayesian theorem, 2004, arXiv:cs/0411099; Catoni, PAC-Bayesian supervised "
    "classification, IMS Lecture Notes 56, 2007"
)
# Catoni's C: 2**(j/4), j = -24..24 (49 values from 1/64 to 64), paid as ln(49) in the bound.
CATONI_GRID = tuple(2.0 ** (j / 4.0) for j in range(-24, 25))


def _checks(train_error: Any, bits: Any, n: Any, delta: Any) -> tuple[float, float, int, float]:
    e = check_unit_interval(train_error, "train_error")
    b = check_positive(bits, "bits", allow_zero=True)
    n = check_n(n)
    if n < 8:
        raise ValueError(f"n must be >= 8 (Maurer's bound is proved for n >= 8), got {n}")
    return e, b, n, check_delta(delta)


def occam_kl_bound(train_error: Any, bits: Any, *, n: int, delta: float = 0.05) -> float:
    """$\\overline{kl}^{-1}(\\hat e_S, (\\mathrm{bits}\\ln 2 + \\ln(2\\sqrt n/\\delta))/n)$: the
    bound on the 0-1 error of a hypothesis coded in `bits` bits by a code fixed before the n
    examples (module docstring; Maurer 2004, Theorem 5, with a point-mass posterior).

    Args:
      train_error: $\\hat e_S(h)$ in [0, 1], on the n examples.
      bits: the code length of h, >= 0.
      n: examples, >= 8.
      delta: failure probability in (0, 1).

    Examples:
      >>> round(occam_kl_bound(0.08, 1000.0, n=20_000, delta=0.05), 3)
      0.171
    """
    e, b, n, d = _checks(train_error, bits, n, delta)
    return float(pac_bayes_kl_bound(e, b * math.log(2.0), n=n, delta=d).value)


def catoni_bound(train_error: Any, bits: Any, *, n: int, delta: float = 0.05,
                 grid: tuple[float, ...] = CATONI_GRID) -> float:
    """Catoni's bound (2007, Theorem 1.2.6) with KL = bits ln 2, minimised over `grid` with a
    union bound ($\\delta / |\\mathrm{grid}|$ each); see the module docstring.

    Examples:
      >>> round(catoni_bound(0.08, 1000.0, n=20_000, delta=0.05), 3)
      0.171
    """
    e, b, n, d = _checks(train_error, bits, n, delta)
    if len(grid) == 0:
        raise ValueError("grid must hold at least one value of C > 0")
    C = np.asarray([check_positive(c, "grid") for c in grid], np.float64)
    rhs = (b * math.log(2.0) + math.log(len(C) / d)) / n
    values = -np.expm1(-C * e - rhs) / -np.expm1(-C)
    return float(values.min())


def occam_bound(train_error: Any, bits: Any, *, n: int, delta: float = 0.05) -> Bound:
    """The Occam bound of a coded deterministic network as a `Bound` (kl form as ``value``; the
    Catoni form, which holds at the same delta on its own, in ``terms["catoni"]``).

    Examples:
      >>> b = occam_bound(0.08, 1000.0, n=20_000)
      >>> round(b.value, 3), round(b.terms["kl_nats"], 1)
      (0.171, 693.1)
    """
    e, b, n, d = _checks(train_error, bits, n, delta)
    value = occam_kl_bound(e, b, n=n, delta=d)
    kl = b * math.log(2.0)
    log_term = math.log(2.0 * math.sqrt(n) / d)
    return Bound(
        name="compression",
        value=value,
        complexity=b,
        terms={"train_error": e, "bits": b, "kl_nats": kl, "log_term": log_term,
               "rhs": (kl + log_term) / n, "catoni": catoni_bound(e, b, n=n, delta=d)},
        n=n,
        delta=d,
        reference=REFERENCE,
        notes=("bounds the 0-1 error of the deterministic coded network (a point-mass posterior "
               "on a prior 2^-bits)", "value: kl form; terms['catoni']: Catoni's form, each at "
               "delta (take the smaller only at delta/2 each)"),
    )
