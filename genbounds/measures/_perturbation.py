"""What the Hessian, sharpness and flatness measures share: the mean training loss as a function
of the flattened parameter vector, and the argument checks of Jiang et al. (2020)'s perturbation
searches (`pac_bayes_flatness`, `magnitude_aware_flatness`, `worst_case_sharpness`,
`magnitude_aware_sharpness`).

The loss is the mean cross-entropy over ``(X, y)`` (logistic for a net with one output unit and
labels in {0, 1}, softmax otherwise); the error is the 0-1 error.
"""

from __future__ import annotations

from functools import partial

import jax

from genbounds.core._checks import check_finite_tree, check_n, check_positive
from genbounds.losses._losses import check_classifier, check_same_tree, cross_entropy

JIANG_REFERENCE = (
    "Jiang, Neyshabur, Mobahi, Krishnan, Bengio. Fantastic Generalization Measures and Where to "
    "Find Them. ICLR 2020, arXiv:1912.02178"
)


@partial(jax.jit, static_argnums=(0, 1))
def mean_loss_flat(apply_fn, unravel, x, X, y):
    """The mean cross-entropy over ``(X, y)`` of the net with flat parameters ``x``."""
    return cross_entropy(apply_fn(unravel(x), X), y).mean()


def check_flat_args(apply_fn, params, X, y, init_params, target, num_samples, depth, scale_max):
    """Checks the arguments every perturbation search shares; returns them normalised."""
    X, y, _ = check_classifier(apply_fn, params, X, y)
    if init_params is not None:
        check_same_tree(params, init_params, "params", "init_params")
        check_finite_tree(init_params, "init_params")
    if not 0.0 < float(target) < 1.0:
        raise ValueError(f"target_deviation must lie in (0, 1), got {target!r}")
    num_samples = check_n(num_samples, "num_samples")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    depth = check_n(depth, "search_depth")
    scale_max = check_positive(scale_max, "scale_max")
    return X, y, num_samples, depth, scale_max
