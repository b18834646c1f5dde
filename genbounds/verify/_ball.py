r"""The perturbation set: an $\ell_p$ ball around each input, and the concretisation of a linear
bound over it.

**Lemma** (Hölder). For $a \in \mathbb{R}^d$ and the ball $B_p(x_0, \varepsilon) =
\{x : \|x - x_0\|_p \le \varepsilon\}$, $\min_{x \in B_p} a^\top x = a^\top x_0 -
\varepsilon \|a\|_q$ with $1/p + 1/q = 1$ (attained), so a linear lower bound
$f(x) \ge a^\top x + c$ valid on the ball gives $\min_{B_p} f \ge a^\top x_0 - \varepsilon
\|a\|_q + c$. For $p = \infty$, $q = 1$; for $p = 2$, $q = 2$.
"""

from __future__ import annotations

import jax.numpy as jnp

from genbounds.core._checks import check_choice

NORMS = ("l2", "linf")


def check_norm(norm: str) -> str:
    check_choice(norm, "norm", NORMS)
    return norm


def dual_norm(a: jnp.ndarray, norm: str, axes: tuple[int, ...]) -> jnp.ndarray:
    """The dual norm of ``a`` over ``axes``: $\\ell_1$ for an $\\ell_\\infty$ ball, $\\ell_2$ for
    an $\\ell_2$ ball."""
    if norm == "linf":
        return jnp.sum(jnp.abs(a), axis=axes)
    return jnp.sqrt(jnp.sum(a * a, axis=axes))


def centre_and_norm(a: jnp.ndarray, c: jnp.ndarray, x0: jnp.ndarray,
                    norm: str) -> tuple[jnp.ndarray, jnp.ndarray]:
    """$a^\\top x_0 + c$ and $\\|a\\|_q$: the minimum over the ball of radius $\\varepsilon$
    is the first less $\\varepsilon$ times the second, an affine function of $\\varepsilon$.

    Shapes: ``a`` (B, K, *d), ``c`` (B, K), ``x0`` (B, *d); returns two (B, K).
    """
    axes = tuple(range(2, a.ndim))
    return jnp.sum(a * x0[:, None], axis=axes) + c, dual_norm(a, norm, axes)


def concretise(a: jnp.ndarray, c: jnp.ndarray, x0: jnp.ndarray, eps: jnp.ndarray,
               norm: str) -> jnp.ndarray:
    """The minimum of $a^\\top x + c$ over the ball of radius ``eps`` around ``x0``.

    Shapes: ``a`` (B, K, *d), ``c`` (B, K), ``x0`` (B, *d), ``eps`` (B,); returns (B, K).
    """
    centre, dn = centre_and_norm(a, c, x0, norm)
    return centre - eps[:, None] * dn


def box(x0: jnp.ndarray, eps: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The smallest box containing the ball (the same for $\\ell_2$ and $\\ell_\\infty$ balls:
    each coordinate moves by at most $\\varepsilon$)."""
    e = eps.reshape((-1,) + (1,) * (x0.ndim - 1))
    return x0 - e, x0 + e
