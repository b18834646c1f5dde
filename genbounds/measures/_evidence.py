"""Laplace approximation of the Bayesian evidence of an L2-regularised network (a measure).

The seed paper's eq. (6), after MacKay (1992) and Smith & Le (2018): with likelihood
$e^{-H(w)}$ ($H$ the summed negative log-likelihood) and prior $N(0, \\Lambda^{-1})$, the cost is
$C(w) = H(w) + \\frac12 w^\\top \\Lambda w$ and, at a minimum $w_0$ of $C$,

$$\\ln P(y \\mid X) \\approx -C(w_0) - \\tfrac12 \\ln\\det \\nabla^2 C(w_0) + \\tfrac12 \\ln\\det\\Lambda,$$

which for $\\Lambda = \\lambda I$ is Smith & Le's $-\\{C(w_0) + \\frac12 \\sum_i \\ln(\\lambda_i/\\lambda)\\}$,
$\\lambda_i$ the Hessian's eigenvalues, with Occam factor $\\prod_i (\\lambda/\\lambda_i)^{1/2}$.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    check_array,
    check_choice,
    check_finite_tree,
    check_key,
    check_n,
    check_positive,
)
from genbounds.linalg._hessian import slq_trace_fn
from genbounds.losses._losses import check_classifier, cross_entropy

_REFERENCE = (
    "MacKay. A Practical Bayesian Framework for Backpropagation Networks. Neural Computation "
    "1992; Smith, Le. A Bayesian Perspective on Generalization and Stochastic Gradient Descent. "
    "ICLR 2018, arXiv:1710.06451"
)


def _nll(likelihood: str, noise_std: float, out: jax.Array, y: jax.Array) -> jax.Array:
    """Summed negative log-likelihood H of the outputs (normalised densities)."""
    if likelihood == "categorical":
        return cross_entropy(out, y).sum()
    # Gaussian: sum over examples and outputs of (y - f)^2 / (2 s^2) + ln(2 pi s^2) / 2.
    r = (y - out.reshape(y.shape)).ravel()
    return 0.5 * jnp.sum(r * r) / noise_std**2 + 0.5 * r.size * math.log(
        2.0 * math.pi * noise_std**2
    )


def _prior_vector(prior_precision: Any, params: Any) -> np.ndarray:
    """The diagonal of Lambda, flattened like the parameters; scalar, per-leaf or per-entry."""
    x0, _ = ravel_pytree(params)
    if isinstance(prior_precision, (int, float, np.floating, np.integer)) or (
        hasattr(prior_precision, "shape") and np.ndim(prior_precision) == 0
    ):
        lam = check_positive(prior_precision, "prior_precision")
        return np.full(x0.shape[0], lam)
    if jax.tree.structure(prior_precision) != jax.tree.structure(params):
        raise ValueError(
            "prior_precision must be a positive number or a tree with the structure of params "
            f"(one number or one array per leaf), got structure {jax.tree.structure(prior_precision)}"
        )
    leaves = []
    for (path, p), lam in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(prior_precision), strict=True
    ):
        lam = np.broadcast_to(np.asarray(lam, np.float64), np.shape(p))
        if not np.all(np.isfinite(lam)) or np.any(lam <= 0):
            raise ValueError(
                f"prior_precision must be finite and > 0; at {jax.tree_util.keystr(path)} got "
                f"min {float(lam.min()):g}"
            )
        leaves.append(lam.ravel())
    return np.concatenate(leaves)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _curvature_matvec_parts(apply_fn, unravel, likelihood, noise_std, curvature, x0, lam, X, y, V):
    """Products of the curvature of C (exact Hessian or GGN, plus Lambda) with the rows of V."""

    def cost(x):
        return _nll(likelihood, noise_std, apply_fn(unravel(x), X), y) + 0.5 * jnp.sum(lam * x * x)

    if curvature == "hessian":
        g = jax.grad(cost)

        def mv(v):
            return jax.jvp(g, (x0,), (v,))[1]
    else:
        # Generalised Gauss-Newton: J^T (d^2 H / d out^2) J + Lambda, PSD + PD.
        f = lambda x: apply_fn(unravel(x), X)  # noqa: E731
        out0, vjp = jax.vjp(f, x0)
        g_out = jax.grad(lambda o: _nll(likelihood, noise_std, o, y))

        def mv(v):
            Jv = jax.jvp(f, (x0,), (v,))[1]
            HJv = jax.jvp(g_out, (out0,), (Jv,))[1]
            return vjp(HJv)[0] + lam * v

    return jax.lax.map(mv, V, batch_size=min(32, V.shape[0]))


def laplace_evidence(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    prior_precision: Any,
    likelihood: str = "categorical",
    noise_std: float = 1.0,
    curvature: str = "hessian",
    method: str = "auto",
    max_exact: int = 2000,
    key: jax.Array | None = None,
    num_probes: int = 30,
    num_iters: int = 60,
    nonpositive: str = "raise",
) -> Bound:
    """Laplace log-evidence of an L2-regularised network at its trained weights (a measure).

    $$\\ln Z \\approx -C(w_0) - \\tfrac12 \\ln\\det A + \\tfrac12 \\sum_i \\ln \\Lambda_i, \\quad
    C(w) = H(w) + \\tfrac12 \\sum_i \\Lambda_i w_i^2,\\quad A = \\nabla^2 C(w_0)$$

    with $H$ the **summed** negative log-likelihood over ``(X, y)`` (softmax/logistic
    cross-entropy, or a Gaussian of std `noise_std` with its normalising constant), $\\Lambda$ the
    prior precision (`prior_precision`: a number $\\lambda$, giving Smith & Le's
    $-C(w_0) - \\frac12\\sum_i \\ln(\\lambda_i/\\lambda)$, or a tree of per-leaf/per-entry
    precisions). `params` should be a minimum of C (the returned ``grad_norm`` shows how close).

    $\\ln\\det A$: ``method="exact"`` forms A from Hessian-vector products and takes its
    eigenvalues (P <= `max_exact`); ``"slq"`` estimates $\\mathrm{tr} \\ln A$ by stochastic Lanczos
    quadrature (Rademacher probes, with a standard error); ``"auto"`` picks exact when possible.

    **Non-positive curvature** (possible with the exact Hessian away from a minimum): the
    logarithm is undefined: a ValueError by default (``nonpositive="raise"``), or, only when
    asked for with ``nonpositive="nan"``, a NaN result with ``num_nonpositive`` > 0 and a note
    (for counting the non-positive eigenvalues). Nothing is clipped. The
    ``curvature="ggn"`` option uses the generalised Gauss-Newton matrix
    $J^\\top \\nabla^2_{f} H\\, J + \\Lambda$ instead, positive definite by construction (MacKay's
    practice), which is a different (and named) approximation.

    Args:
      params: the trained weights $w_0$ (pytree).
      X, y: the training data; y integer labels (categorical) or real targets (gaussian).
      apply_fn: ``apply_fn(params, X) -> outputs``: logits (n,), (n, 1), (n, K) for
        ``"categorical"``, predictions shaped like y for ``"gaussian"``.
      prior_precision: $\\lambda > 0$, or a tree like `params` of positive numbers/arrays.
      likelihood: ``"categorical"`` or ``"gaussian"``.
      noise_std: the Gaussian likelihood's standard deviation.
      curvature: ``"hessian"`` (exact) or ``"ggn"``.
      method: ``"auto"``, ``"exact"`` or ``"slq"``.
      max_exact: largest P for the exact method under ``"auto"``.
      key: PRNG key (needed for ``"slq"``).
      num_probes, num_iters: SLQ probes and Lanczos steps per probe.
      nonpositive: ``"raise"`` (default) or ``"nan"`` (an explicit request for a NaN result
        that carries the eigenvalue count).

    Returns:
      A measure with ``complexity`` = the log-evidence (nats) and ``terms``: ``log_evidence``,
      ``cost`` C(w0), ``nll`` H(w0), ``log_det_curvature``, ``log_det_prior``, ``log_occam``
      ($-\\frac12\\ln\\det A + \\frac12\\ln\\det\\Lambda$), ``stderr`` (0 for exact),
      ``num_nonpositive``, ``min_eigenvalue`` (exact, or the smallest Ritz value for SLQ),
      ``grad_norm``, ``num_params``.

    Raises:
      ValueError, TypeError: bad shapes/labels, non-positive precision, or non-positive curvature
        with ``nonpositive="raise"``.

    Examples:
      >>> import jax.numpy as jnp
      >>> X = jnp.array([[1.0], [2.0]]); y = jnp.array([1.0, 2.0])
      >>> f = lambda p, X: X @ p["w"]
      >>> w = {"w": jnp.array([5.0 / 6.0])}  # the mode for noise_std 1, prior_precision 1
      >>> r = laplace_evidence(w, X=X, y=y, apply_fn=f, prior_precision=1.0,
      ...                      likelihood="gaussian")
      >>> round(r.complexity, 4)  # ln N(y; 0, I + X X^T) = -3.1504235
      -3.1504

    References:
      MacKay, A Practical Bayesian Framework for Backpropagation Networks, Neural Computation
      4(3), 1992; Smith & Le, A Bayesian Perspective on Generalization and Stochastic Gradient
      Descent, ICLR 2018, arXiv:1710.06451 (eq. 6 of the seed paper).
    """
    likelihood = check_choice(likelihood, "likelihood", ("categorical", "gaussian"))
    curvature = check_choice(curvature, "curvature", ("hessian", "ggn"))
    method = check_choice(method, "method", ("auto", "exact", "slq"))
    nonpositive = check_choice(nonpositive, "nonpositive", ("nan", "raise"))
    noise_std = check_positive(noise_std, "noise_std")
    if likelihood == "categorical":
        X, y, _ = check_classifier(apply_fn, params, X, y)
    else:
        X, y = _check_regression(apply_fn, params, X, y)
    lam = _prior_vector(prior_precision, params)
    x0, unravel = ravel_pytree(params)
    P = int(x0.shape[0])
    if method == "auto":
        method = "exact" if P <= check_n(max_exact, "max_exact") else "slq"
    dtype = x0.dtype
    lam_j = jnp.asarray(lam, dtype)

    def cost_parts(x):
        nll = _nll(likelihood, noise_std, apply_fn(unravel(x), X), y)
        return nll + 0.5 * jnp.sum(lam_j * x * x), nll

    (cost, nll), grad = jax.value_and_grad(cost_parts, has_aux=True)(x0)
    matvecs = partial(
        _curvature_matvec_parts,
        apply_fn,
        unravel,
        likelihood,
        noise_std,
        curvature,
        x0,
        lam_j,
        X,
        y,
    )
    if method == "exact":
        A = np.asarray(matvecs(jnp.eye(P, dtype=dtype)), np.float64)
        A = 0.5 * (A + A.T)
        eig = np.linalg.eigvalsh(A)
        num_bad = int(np.sum(eig <= 0))
        log_det = float(np.sum(np.log(eig))) if num_bad == 0 else float("nan")
        stderr, min_eig = 0.0, float(eig[0])
    else:
        key = check_key(key)  # needed by method='slq'
        mv = lambda v: matvecs(v[None, :])[0]  # noqa: E731
        out = slq_trace_fn(
            mv,
            P,
            dtype,
            jnp.log,
            num_probes=check_n(num_probes, "num_probes"),
            num_iters=min(check_n(num_iters, "num_iters"), P),
            key=key,
        )
        min_eig = float(out["min_ritz"])
        # Ritz values lie inside the spectrum: a non-positive one proves non-positive curvature.
        num_bad = int(min_eig <= 0)
        log_det = float(out["estimate"]) if num_bad == 0 else float("nan")
        stderr = 0.5 * float(out["stderr"])
    if num_bad and nonpositive == "raise":
        raise ValueError(
            f"the {curvature} of the regularised cost has {num_bad} non-positive eigenvalue(s) "
            f"(smallest {min_eig:g}): params is not a minimum of C, or the prior is too weak; "
            "use curvature='ggn' for a positive-definite approximation"
        )
    log_det_prior = float(np.sum(np.log(lam)))
    log_occam = -0.5 * log_det + 0.5 * log_det_prior
    log_ev = -float(cost) + log_occam
    notes = [f"curvature: {curvature}; log det by {method}", "H: summed negative log-likelihood"]
    if num_bad:
        notes.append(
            f"{num_bad} non-positive curvature eigenvalue(s): log-evidence undefined (NaN)"
        )
    return Bound(
        name="laplace_evidence",
        value=None,
        complexity=log_ev,
        terms={
            "log_evidence": log_ev,
            "cost": float(cost),
            "nll": float(nll),
            "log_det_curvature": log_det,
            "log_det_prior": log_det_prior,
            "log_occam": log_occam,
            "stderr": stderr,
            "num_nonpositive": num_bad,
            "min_eigenvalue": min_eig,
            "grad_norm": float(jnp.linalg.norm(grad)),
            "num_params": P,
        },
        n=int(X.shape[0]),
        estimated=method == "slq",
        reference=_REFERENCE,
        notes=tuple(notes),
    )


def _check_regression(apply_fn, params, X, y):
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable as apply_fn(params, X), got {apply_fn!r}")
    check_finite_tree(params, "params")
    X = check_array(X, "X", ndim=(2, 3, 4, 5))
    y = check_array(y, "y", ndim=(1, 2))
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and y must have the same number of examples, got {X.shape[0]} and {y.shape[0]}"
        )
    out = jax.eval_shape(apply_fn, params, jnp.asarray(X))
    if int(np.prod(out.shape)) != int(np.prod(y.shape)):
        raise ValueError(
            f"apply_fn(params, X) must return outputs shaped like y {tuple(y.shape)}, "
            f"got {tuple(out.shape)}"
        )
    return jnp.asarray(X), jnp.asarray(y)
