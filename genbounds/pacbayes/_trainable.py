"""The trainable weights of a parameter tree: what a stochastic bound perturbs.

Flax linen variables hold the trainable weights in the ``params`` collection and other state
beside it (BatchNorm's running statistics in ``batch_stats``). A posterior over the weights
perturbs only ``params``; the other collections stay fixed at their trained values (they are
not weights of the stochastic network, and a running variance perturbed below zero makes the
network NaN). `trainable` splits the two and gives the network as a function of the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def trainable(params: Any, apply_fn: Callable[[Any, Any], Any], init_params: Any = None
              ) -> tuple[Any, Callable[[Any, Any], Any], Any, str | None]:
    """``(weights, apply_weights, init_weights, note)``.

    For linen variables with collections besides ``params`` (e.g. ``batch_stats``): the
    ``params`` collection, ``apply_fn`` with the other collections fixed, the ``params`` of
    `init_params`, and a note naming what stays fixed. Any other tree is returned as it is
    (note None).
    """
    if not (isinstance(params, Mapping) and "params" in params and len(params) > 1):
        return params, apply_fn, init_params, None
    fixed = {k: v for k, v in params.items() if k != "params"}

    def apply_weights(w: Any, X: Any) -> Any:
        return apply_fn({**fixed, "params": w}, X)

    if isinstance(init_params, Mapping) and "params" in init_params:
        init_params = init_params["params"]
    note = (f"only the trainable 'params' collection is perturbed; {sorted(fixed)} (e.g. "
            "BatchNorm running statistics) stay fixed at their trained values")
    return params["params"], apply_weights, init_params, note
