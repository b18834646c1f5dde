r"""A certified upper bound on a network's Lipschitz constant, by composition over its graph."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

from genbounds.core._bound import Bound
from genbounds.core._checks import check_delta, checked_result
from genbounds.core._logspace import exp_or_inf
from genbounds.linalg._method import NormMethod
from genbounds.network._lipschitz import lipschitz_log_bound
from genbounds.network._merged import tight_bound
from genbounds.network._network import as_network, require_function
from genbounds.network._norms import spectral_norms


@checked_result
def lipschitz(
    params: Any,
    *,
    apply_fn: Callable[[Any, Any], Any] | None = None,
    X: Any = None,
    method: str | NormMethod = "certified",
    key: jax.Array | None = None,
    failure_probability: float = 1e-6,
    **options: Any,
) -> Bound:
    r"""An upper bound on the $\ell_2$ Lipschitz constant of the map from inputs to logits.

    By composition over the network's records (`Network`): a linear map multiplies the bound
    of its input by its spectral norm (the operator norm of a convolution), a fixed map
    (activation, pooling) by its Lipschitz constant, and where two paths are added the bounds
    add, since $\|f(x) + g(x) - f(x') - g(x')\| \le (\mathrm{Lip} f + \mathrm{Lip} g)\|x - x'\|$;
    a residual block $x + f(x)$ thus gets $1 + \mathrm{Lip}(f)$, and a chain the product
    $\prod_i \rho_i \|A_i\|_\sigma$. A concatenation of two paths gets
    $\sqrt{\mathrm{Lip}(f)^2 + \mathrm{Lip}(g)^2}$. A final log-softmax is left out (the margins,
    differences of logits, are unchanged by it). Two sound refinements are used where they
    give less (``terms["composition"]`` keeps the plain composition): consecutive linear maps
    merged into one whose exact norm is computed, and blocks around one activation, e.g. a
    residual block $x + W_2\,\mathrm{relu}(W_1x)$ bounded by
    $\|I + \tfrac12 W_2W_1\| + \tfrac12\|W_2\|\|W_1\| \le 1 + \|W_2\|\|W_1\|$ (derivation in
    docs/networks.md). LayerNorm and RMSNorm contribute $\max_i|\gamma_i|/\sqrt\varepsilon$
    (their global constant; large). A network with an operation no rule reads (attention) is
    refused with the reason.

    With the default ``method="certified"`` every norm is an upper bound (a randomised
    certificate for large dense layers, failing with probability at most
    ``terms["failure_probability"]``), so the result is an upper bound on the true constant
    with that probability; it is computed in log space (``terms["log_lipschitz"]``), so deep
    networks neither overflow nor underflow.

    Args:
      params: a traced `Network`, or parameters with ``apply_fn`` and ``X`` (traced).
      apply_fn, X: the network's function and example inputs (required unless ``params`` is a
        traced `Network`: the constant depends on the activations, which parameters alone do
        not show).
      method, key, failure_probability, options: as in `spectral_norms`.

    Returns:
      A `Bound` (a measure: ``value=None``) with ``complexity`` the Lipschitz bound, terms
      ``log_lipschitz``, ``spectral_norms``, ``structure``, ``failure_probability``.

    Raises:
      NotBoundable: no ``apply_fn`` (parameters alone), an ``apply_fn`` jax cannot trace, or an
        operation no Lipschitz bound covers (named).

    Examples:
      >>> import numpy as np, jax.numpy as jnp
      >>> p = {"W1": 2 * np.eye(3), "W2": np.eye(3)}
      >>> f = lambda p, x: jnp.tanh(x @ p["W1"]) @ p["W2"]
      >>> round(lipschitz(p, apply_fn=f, X=np.ones((2, 3))).complexity, 9)  # 2 * 1 * 1
      2.0

    References:
      Szegedy et al., "Intriguing properties of neural networks", ICLR 2014, arXiv:1312.6199,
      Section 4.3 (the product of layer norms). Tsuzuku, Sato & Sugiyama, "Lipschitz-Margin
      Training", NeurIPS 2018, arXiv:1802.04034 (composition of bounds).
    """
    check_delta(failure_probability, "failure_probability")
    net = as_network(params, apply_fn=apply_fn, X=X, caller="lipschitz")
    require_function(net, "lipschitz")
    norms = spectral_norms(net, method=method, key=key, failure_probability=failure_probability,
                           **options)
    log_comp = lipschitz_log_bound(net, norms)
    tight = tight_bound(net, norms)
    log_l = min(log_comp, tight["log_lipschitz"])
    value = exp_or_inf(log_l)
    notes = [f"by composition over the {net.structure} network, with merged linear maps and "
             "blocks where smaller", *net.notes]
    if any(n.op == "norm" for n in net.nodes):
        notes.append("each LayerNorm/RMSNorm contributes max|gamma|/sqrt(eps), its global "
                     "Lipschitz constant (large: 1/sqrt(eps) is its slope at inputs whose "
                     "entries are all equal)")
    if not math.isfinite(value):
        notes.append("the bound overflows float64: see terms['log_lipschitz']")
    terms = {"log_lipschitz": log_l, "composition": math.exp(min(log_comp, 709.0)),
             "merged": {"segments": tight["segments"], "blocks": tight["blocks"]},
             "spectral_norms": dict(norms), "structure": net.structure,
             "failure_probability": norms.failure_probability}
    return Bound(name="lipschitz", value=None, complexity=value, terms=terms,
                 estimated=norms.estimated,
                 reference="composition of layer bounds (Szegedy et al. 2014; Tsuzuku et al. "
                           "2018)", notes=tuple(notes))
