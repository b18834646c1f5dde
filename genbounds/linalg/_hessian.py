"""Curvature of a loss: Hessian-vector products, Lanczos, Hutchinson and stochastic quadrature.

Shared by the flatness measures (`genbounds.measures`) and the Laplace evidence; the losses they
differentiate live in `genbounds.losses`.

Every routine works on the flattened parameter vector (`jax.flatten_util.ravel_pytree`), in the
dtype of the parameters: pass float64 parameters (with ``jax_enable_x64``) where the numbers
matter, float32 where speed does.

Numerics (conventions.md): Lanczos approaches the extreme eigenvalues from the inside, so the top
Ritz value is a **lower** estimate of the largest eigenvalue; its residual
$|\\beta_m s_{m,i}|$ bounds the distance from that Ritz value to *some* eigenvalue, not
necessarily to the largest one. Full re-orthogonalisation is used throughout (the Krylov
dimensions here are small), so no spurious copies of converged eigenvalues appear.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

# ----------------------------------------------------------------------------------------------
# Hessian-vector products and the full Hessian.
# ----------------------------------------------------------------------------------------------


def flatten_loss(
    loss_fn: Callable[[Any], jax.Array], params: Any
) -> tuple[Callable[[jax.Array], jax.Array], jax.Array, Callable[[jax.Array], Any]]:
    """Returns ``(f, x0, unravel)`` with ``f(x) = loss_fn(unravel(x))`` on the flat vector."""
    x0, unravel = ravel_pytree(params)

    def f(x):
        return loss_fn(unravel(x))

    return f, x0, unravel


def hessian_vector_product(loss_fn: Callable[[Any], jax.Array], params: Any, v: Any) -> Any:
    """The Hessian-vector product $\\nabla^2 L(w)\\, v$, forward-over-reverse.

    Computed as ``jax.jvp(jax.grad(loss_fn), (params,), (v,))``: one forward-mode pass through
    the gradient, about the cost of two gradients, and never forms the Hessian.

    Args:
      loss_fn: scalar function of a parameter tree, twice differentiable.
      params: the point $w$, a pytree.
      v: a pytree of the same structure as `params`.

    Returns:
      A pytree like `params`.

    Examples:
      >>> import jax.numpy as jnp
      >>> hessian_vector_product(
      ...     lambda p: (p["a"] ** 3).sum(), {"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([1.0, 1.0])}
      ... )["a"].tolist()
      [6.0, 12.0]
    """
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def flat_hvp(
    f: Callable[[jax.Array], jax.Array], x0: jax.Array
) -> Callable[[jax.Array], jax.Array]:
    """``v -> Hessian(f)(x0) @ v`` on flat vectors (forward-over-reverse)."""
    grad = jax.grad(f)

    def matvec(v):
        return jax.jvp(grad, (x0,), (v.astype(x0.dtype),))[1]

    return matvec


def full_hessian(
    loss_fn: Callable[[Any], jax.Array], params: Any, *, batch_size: int = 32
) -> jax.Array:
    """The full Hessian of `loss_fn` at `params`, as a (P, P) matrix over the flattened tree.

    Built column by column from Hessian-vector products, `batch_size` at a time (memory
    ``batch_size`` times that of one HVP), then symmetrised. Only for small P.
    """
    f, x0, _ = flatten_loss(loss_fn, params)

    @jax.jit
    def build(x0):
        eye = jnp.eye(x0.shape[0], dtype=x0.dtype)
        H = jax.lax.map(flat_hvp(f, x0), eye, batch_size=min(batch_size, x0.shape[0]))
        return 0.5 * (H + H.T)

    return build(x0)


# ----------------------------------------------------------------------------------------------
# Lanczos with full re-orthogonalisation.
# ----------------------------------------------------------------------------------------------


def lanczos(
    matvec: Callable[[jax.Array], jax.Array], v0: jax.Array, num_iters: int, *, key: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`num_iters` steps of Lanczos from `v0`, with full (twice-applied) re-orthogonalisation.

    Returns ``(alphas, betas, Q)``: the tridiagonal $T$ (diagonal `alphas`, off-diagonal
    ``betas[:-1]``), the last coupling ``betas[-1]`` (used in the Ritz residuals) and the basis
    Q of shape (num_iters, P). On breakdown (an invariant subspace was found, beta ~ 0) the
    iteration restarts from a random vector orthogonal to Q with beta set to 0, so T stays the
    exact projection of the matrix onto span(Q).
    """
    dim = v0.shape[0]
    dtype = v0.dtype
    eps = jnp.finfo(dtype).eps
    q0 = v0 / jnp.linalg.norm(v0)
    Q = jnp.zeros((num_iters + 1, dim), dtype).at[0].set(q0)

    def orth(Q, w):
        # Classical Gram-Schmidt against every previous vector, twice ("twice is enough").
        w = w - Q.T @ (Q @ w)
        return w - Q.T @ (Q @ w)

    def body(j, state):
        Q, alphas, betas, anorm = state
        q = Q[j]
        w = matvec(q)
        a = jnp.vdot(q, w)
        w = orth(Q, w)
        b = jnp.linalg.norm(w)
        anorm = jnp.maximum(anorm, jnp.abs(a) + b)
        broke = b <= 10.0 * math.sqrt(dim) * eps * anorm
        r = orth(Q, jax.random.normal(jax.random.fold_in(key, j), (dim,), dtype))
        nxt = jnp.where(broke, r / jnp.linalg.norm(r), w / jnp.where(broke, 1.0, b))
        b = jnp.where(broke, 0.0, b)
        return Q.at[j + 1].set(nxt), alphas.at[j].set(a), betas.at[j].set(b), anorm

    init = (Q, jnp.zeros(num_iters, dtype), jnp.zeros(num_iters, dtype), jnp.zeros((), dtype))
    Q, alphas, betas, _ = jax.lax.fori_loop(0, num_iters, body, init)
    return alphas, betas, Q[:num_iters]


def tridiag_eigh(alphas: jax.Array, betas: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues (ascending) and eigenvectors of the Lanczos tridiagonal T."""
    T = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    return jnp.linalg.eigh(T)


def lanczos_top_eigenvalues(
    matvec: Callable[[jax.Array], jax.Array],
    dim: int,
    dtype: Any,
    *,
    k: int,
    num_iters: int,
    key: jax.Array,
) -> dict[str, jax.Array]:
    """The `k` largest Ritz values after `num_iters` Lanczos steps from a random start.

    Returns a dict with ``eigenvalues`` (descending), ``residuals`` ($|\\beta_m s_{m,i}|$: each
    Ritz value lies within its residual of some true eigenvalue) and ``smallest`` (the smallest
    Ritz value, which over-estimates the smallest eigenvalue: negative values reveal negative
    curvature).
    """
    k0, k1 = jax.random.split(key)
    v0 = jax.random.normal(k0, (dim,), dtype)
    alphas, betas, _ = lanczos(matvec, v0, num_iters, key=k1)
    theta, S = tridiag_eigh(alphas, betas)
    resid = jnp.abs(betas[-1] * S[-1, :])
    order = jnp.argsort(-theta)[:k]
    return {"eigenvalues": theta[order], "residuals": resid[order], "smallest": theta[0]}


def hutchinson_trace(
    matvec: Callable[[jax.Array], jax.Array],
    dim: int,
    dtype: Any,
    *,
    num_samples: int,
    key: jax.Array,
    batch_size: int = 16,
) -> tuple[jax.Array, jax.Array]:
    """Hutchinson's estimate of tr(A) with Rademacher probes, and its standard error.

    $\\mathrm{tr}(A) = E[z^\\top A z]$ for $z$ with i.i.d. ±1 entries (Hutchinson 1990); the
    estimate is the mean of `num_samples` such quadratic forms and its standard error is their
    sample standard deviation over $\\sqrt{N}$.
    """
    Z = jax.random.rademacher(key, (num_samples, dim), dtype)
    quad = jax.lax.map(lambda z: jnp.vdot(z, matvec(z)), Z, batch_size=min(batch_size, num_samples))
    mean = quad.mean()
    stderr = quad.std(ddof=1) / jnp.sqrt(num_samples) if num_samples > 1 else jnp.nan
    return mean, jnp.asarray(stderr, dtype)


def slq_trace_fn(
    matvec: Callable[[jax.Array], jax.Array],
    dim: int,
    dtype: Any,
    fn: Callable[[jax.Array], jax.Array],
    *,
    num_probes: int,
    num_iters: int,
    key: jax.Array,
) -> dict[str, jax.Array]:
    """Stochastic Lanczos quadrature for $\\mathrm{tr}\\, f(A)$ (Ubaru, Chen & Saad 2017).

    For each Rademacher probe $z$, Lanczos from $z/\\|z\\|$ gives Ritz pairs $(\\theta_k, s_k)$ and
    $z^\\top f(A) z \\approx P \\sum_k s_{1k}^2 f(\\theta_k)$ (Gauss quadrature of the spectral
    measure). The estimate is the mean over probes, with its standard error; ``min_ritz`` is the
    smallest Ritz value seen, so that the caller can flag a non-positive spectrum for $f = \\ln$.
    """
    keys = jax.random.split(key, num_probes)

    def one(k):
        k0, k1 = jax.random.split(k)
        z = jax.random.rademacher(k0, (dim,), dtype)
        alphas, betas, _ = lanczos(matvec, z, num_iters, key=k1)
        theta, S = tridiag_eigh(alphas, betas)
        return dim * jnp.sum(S[0, :] ** 2 * fn(theta)), theta.min(), theta.max()

    vals, mins, maxs = jax.lax.map(one, keys)
    stderr = vals.std(ddof=1) / jnp.sqrt(num_probes) if num_probes > 1 else jnp.nan
    return {
        "estimate": vals.mean(),
        "stderr": jnp.asarray(stderr, dtype),
        "min_ritz": mins.min(),
        "max_ritz": maxs.max(),
    }
