"""The curvature of the training loss (measures, not bounds): `hessian_top_eigenvalues` (Lanczos)
and `hessian_trace` (Hutchinson), both from Hessian-vector products, never forming the matrix.

Each returns a `Bound` with ``value=None`` (a measure) whose `terms` carry the estimator's
uncertainty. The loss is the mean cross-entropy over ``(X, y)``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from genbounds.core._bound import Bound
from genbounds.core._checks import check_key, check_n, checked_result
from genbounds.linalg._hessian import flat_hvp, hutchinson_trace, lanczos_top_eigenvalues
from genbounds.losses._losses import check_classifier

from ._perturbation import mean_loss_flat

_LANCZOS = (
    "Lanczos (1950); Ghorbani, Krishnan, Xiao. An Investigation into Neural Net Optimization via "
    "Hessian Eigenvalue Density. ICML 2019, arXiv:1901.10159"
)
_HUTCHINSON = (
    "Hutchinson. A stochastic estimator of the trace of the influence matrix for Laplacian "
    "smoothing splines. 1990; Yao, Gholami, Keutzer, Mahoney. PyHessian. 2020, arXiv:1912.07145"
)


@checked_result
def hessian_top_eigenvalues(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    k: int = 1,
    num_iters: int = 30,
) -> Bound:
    """Largest eigenvalues of the Hessian of the training loss, by Lanczos on Hessian-vector products.

    The matrix is $\\nabla^2_w \\hat L(w)$ with $\\hat L$ the mean cross-entropy over ``(X, y)``;
    its products with vectors are ``jax.jvp`` of ``jax.grad`` (never forming the matrix). After
    $m$ = `num_iters` Lanczos steps with full re-orthogonalisation the Ritz values
    $\\theta_1 \\ge \\dots$ satisfy $\\theta_1 \\le \\lambda_{\\max}$: a **lower** estimate. Each
    Ritz value lies within its residual $r_i = |\\beta_m s_{m,i}|$ of some eigenvalue.

    Args:
      params: the trained parameters (pytree).
      X: inputs, (n, ...).
      y: integer labels (n,), in {0, 1} for one output unit, in [0, K) otherwise.
      apply_fn: ``apply_fn(params, X) -> logits`` of shape (n,), (n, 1) or (n, K).
      key: PRNG key for the Lanczos start vector.
      k: number of eigenvalues, 1 <= k <= num_iters.
      num_iters: Lanczos steps m, <= the number of parameters.

    Returns:
      A measure (``value=None``) with ``complexity`` = the top Ritz value and ``terms``:
      ``eigenvalues`` (top k, descending), ``residuals``, ``smallest_ritz``, ``loss``.

    Raises:
      ValueError, TypeError: bad shapes, labels or hyperparameters.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> params = {"w": jnp.array([[1.0], [-1.0]]), "b": jnp.zeros(1)}
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> X, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1, 0])
      >>> m = hessian_top_eigenvalues(params, X=X, y=y, apply_fn=f, key=jax.random.key(0),
      ...                             num_iters=3)
      >>> m.is_measure
      True

    References:
      Lanczos (1950); Ghorbani, Krishnan & Xiao, An Investigation into Neural Net Optimization
      via Hessian Eigenvalue Density, ICML 2019, arXiv:1901.10159.
    """
    X, y, _ = check_classifier(apply_fn, params, X, y)
    x0, unravel = ravel_pytree(params)
    dim = int(x0.shape[0])
    k = check_n(k, "k")
    num_iters = check_n(num_iters, "num_iters")
    if num_iters > dim:
        raise ValueError(f"num_iters must be <= the number of parameters {dim}, got {num_iters}")
    if k > num_iters:
        raise ValueError(f"k must be <= num_iters = {num_iters}, got {k}")
    out = _top_eig(apply_fn, unravel, k, num_iters, x0, X, y, check_key(key))
    eig = np.asarray(out["eigenvalues"])
    return Bound(
        name="hessian_top_eigenvalue",
        value=None,
        complexity=float(eig[0]),
        terms={
            "eigenvalues": eig,
            "residuals": np.asarray(out["residuals"]),
            "smallest_ritz": float(out["smallest"]),
            "loss": float(out["loss"]),
            "num_iters": num_iters,
        },
        n=int(X.shape[0]),
        estimated=True,
        reference=_LANCZOS,
        notes=(
            "Lanczos Ritz values approach the top eigenvalue from below (lower estimate)",
            "residuals bound the distance to some eigenvalue, not necessarily the top one",
            "loss: mean cross-entropy over (X, y)",
        ),
    )


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _top_eig(apply_fn, unravel, k, num_iters, x0, X, y, key):
    f = partial(mean_loss_flat, apply_fn, unravel, X=X, y=y)
    out = lanczos_top_eigenvalues(
        flat_hvp(f, x0), x0.shape[0], x0.dtype, k=k, num_iters=num_iters, key=key
    )
    out["loss"] = f(x0)
    return out


@checked_result
def hessian_trace(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    num_samples: int = 64,
) -> Bound:
    """Trace of the Hessian of the training loss, by Hutchinson's estimator.

    $\\mathrm{tr}\\,\\nabla^2 \\hat L(w) = E_z[z^\\top \\nabla^2 \\hat L(w) z]$ for Rademacher $z$;
    the estimate averages `num_samples` quadratic forms (each one Hessian-vector product) and
    reports the standard error of that mean. Unbiased; the error is statistical, not one-sided.

    Args:
      params, X, y, apply_fn: as in `hessian_top_eigenvalues`.
      key: PRNG key for the probes.
      num_samples: number of probes N >= 2.

    Returns:
      A measure with ``complexity`` = the trace estimate and ``terms``: ``trace``, ``stderr``,
      ``num_samples``, ``loss``.

    Raises:
      ValueError, TypeError: bad shapes, labels or hyperparameters.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> params = {"w": jnp.array([[1.0], [-1.0]]), "b": jnp.zeros(1)}
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> X, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1, 0])
      >>> m = hessian_trace(params, X=X, y=y, apply_fn=f, key=jax.random.key(0), num_samples=8)
      >>> m.terms["stderr"] >= 0
      True

    References:
      Hutchinson, A stochastic estimator of the trace of the influence matrix for Laplacian
      smoothing splines, 1990; Yao et al., PyHessian, 2020, arXiv:1912.07145.
    """
    X, y, _ = check_classifier(apply_fn, params, X, y)
    x0, unravel = ravel_pytree(params)
    num_samples = check_n(num_samples, "num_samples")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 for a standard error, got {num_samples}")
    tr, se, loss = _trace(apply_fn, unravel, num_samples, x0, X, y, check_key(key))
    return Bound(
        name="hessian_trace",
        value=None,
        complexity=float(tr),
        terms={
            "trace": float(tr),
            "stderr": float(se),
            "num_samples": num_samples,
            "loss": float(loss),
        },
        n=int(X.shape[0]),
        estimated=True,
        reference=_HUTCHINSON,
        notes=("Hutchinson estimator with Rademacher probes; stderr = sd / sqrt(N)",),
    )


@partial(jax.jit, static_argnums=(0, 1, 2))
def _trace(apply_fn, unravel, num_samples, x0, X, y, key):
    f = partial(mean_loss_flat, apply_fn, unravel, X=X, y=y)
    tr, se = hutchinson_trace(
        flat_hvp(f, x0), x0.shape[0], x0.dtype, num_samples=num_samples, key=key
    )
    return tr, se, f(x0)
