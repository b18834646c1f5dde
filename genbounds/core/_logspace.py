"""Leaving log space: the one place where a logarithm of a product of norms becomes a number.

Products of many norms overflow float64; the bounds accumulate them as logarithms and call
`exp_or_inf` once, keeping the (finite) logarithm beside an infinite value.
"""

from __future__ import annotations

import math

import numpy as np

LOG_FLOAT64_MAX = math.log(float(np.finfo(np.float64).max))


def exp_or_inf(log_v: float) -> float:
    """exp(log_v), or inf where it exceeds float64 (callers keep the logarithm beside it)."""
    return math.exp(log_v) if log_v < LOG_FLOAT64_MAX else math.inf
