"""Checks of the PAC-Bayes trainings: divergence reported as divergence, prior scales the
training dtype can hold.

The posterior and prior trainings of `dziugaite_roy`, `learn_prior` and `train_posterior` run
in float32 (or the caller's `dtype`). A learning rate too large for the network makes the
objective NaN or infinite, or drives a posterior's standard deviation to 0; the certificate that
follows would then fail on the trained posterior with an error about *its* values, which looks
like a fault of the caller's parameters. These checks stop the training at the first epoch (or
chunk of steps) whose objective is not finite, and check the trained parameters, with an error
that says the optimisation diverged and with which settings.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import check_positive


def check_progress(value: Any, *, caller: str, what: str, at: str, settings: str) -> None:
    """The objective `value` of one epoch (or chunk) must be finite; else the training diverged.

    `what` names the objective, `at` the point of the training ("epoch 3 of 20"), `settings` the
    optimiser's settings to quote.
    """
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(
            f"{caller}: the optimisation diverged: the {what} became {v} at {at} ({settings}); "
            "lower the learning rate (the network and its parameters were finite at the start)"
        )


def check_trained(flat: dict[str, Any], *, caller: str, settings: str,
                  positive: tuple[str, ...] = ()) -> None:
    """The trained flat parameters must be finite, and those named in `positive` (standard
    deviations) > 0; else the training diverged or collapsed."""
    for name, v in flat.items():
        arr = np.asarray(v, np.float64)
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise ValueError(
                f"{caller}: the optimisation diverged: {bad} of the {arr.size} entries of the "
                f"trained {name} are NaN or infinite ({settings}); lower the learning rate"
            )
        if name in positive and np.any(arr <= 0):
            zero = int(np.sum(arr <= 0))
            raise ValueError(
                f"{caller}: the optimisation collapsed: {zero} of the {arr.size} trained "
                f"{name} underflowed to 0 in {np.asarray(v).dtype} ({settings}); lower the "
                "learning rate"
            )


def check_prior_std(value: Any, name: str, dtype: Any = jnp.float32) -> float:
    """A prior standard deviation $\\sigma_P > 0$ whose square (the prior variance) is a finite,
    normal number of `dtype`, the dtype the posterior is trained in."""
    sp = check_positive(value, name)
    info = np.finfo(np.dtype(dtype))
    lo, hi = math.sqrt(float(info.tiny)), math.sqrt(float(info.max))
    if not lo < sp < hi:
        raise ValueError(
            f"{name} must lie in ({lo:.3g}, {hi:.3g}) so that the prior variance sigma_P^2 is a "
            f"finite, normal {np.dtype(dtype).name} number (the training dtype), got {value!r}"
        )
    return sp


def inverse_softplus(sp: float) -> float:
    """$\\rho$ with $\\ln(1 + e^\\rho) = \\sigma$, without overflow: $\\sigma + \\ln(1 - e^{-\\sigma})$."""
    return sp + math.log(-math.expm1(-sp))
