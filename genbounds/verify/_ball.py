r"""The perturbation set: an $\ell_p$ ball around each input, and the concretisation of a linear
bound over it.

**Lemma** (Hölder). For $a \in \mathbb{R}^d$ and the ball $B_p(x_0, \varepsilon) =
\{x : \|x - x_0\|_p \le \varepsilon\}$, $\min_{x \in B_p} a^\top x = a^\top x_0 -
\varepsilon \|a\|_q$ with $1/p + 1/q = 1$ (attained), so a linear lower bound
$f(x) \ge a^\top x + c$ valid on the ball gives $\min_{B_p} f \ge a^\top x_0 - \varepsilon
\|a\|_q + c$. For $p = \infty$, $q = 1$; for $p = 2$, $q = 2$.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from genbounds.core._checks import check_choice

from ._rounding import gamma, outward, tiny, unit

NORMS = ("l2", "linf")


def check_norm(norm: str) -> str:
    check_choice(norm, "norm", NORMS)
    return norm


def dual_norm(a: jnp.ndarray, norm: str, axes: tuple[int, ...]) -> jnp.ndarray:
    """The dual norm of ``a`` over ``axes``: $\\ell_1$ for an $\\ell_\\infty$ ball, $\\ell_2$ for
    an $\\ell_2$ ball. Its gradient at $a = 0$ (the zero specification of a margin's own
    class) is 0, a subgradient, where that of the square root would be NaN."""
    if norm == "linf":
        return jnp.sum(jnp.abs(a), axis=axes)
    s = jnp.sum(a * a, axis=axes)
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1)), 0)


def centre_and_norm(a: jnp.ndarray, c: jnp.ndarray, x0: jnp.ndarray, norm: str,
                    enclose: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """$a^\\top x_0 + c$ and $\\|a\\|_q$: the minimum over the ball of radius $\\varepsilon$
    is the first less $\\varepsilon$ times the second, an affine function of $\\varepsilon$.
    With ``enclose``, the first rounded down and the second up by the rounding of their
    computation (`_rounding.py`).

    Shapes: ``a`` (B, K, *d), ``c`` (B, K), ``x0`` (B, *d); returns two (B, K).
    """
    axes = tuple(range(2, a.ndim))
    centre = jnp.sum(a * x0[:, None], axis=axes) + c
    if not enclose:
        return centre, dual_norm(a, norm, axes)
    d, t = math.prod(a.shape[2:]), tiny(a.dtype)  # t: what underflow can lose per operation
    err = gamma(d + 1, a.dtype) * (jnp.sum(jnp.abs(a) * jnp.abs(x0[:, None]), axis=axes)
                                   + jnp.abs(c)) + (d + 2) * t
    if norm == "linf":
        dn = jnp.sum(jnp.abs(a), axis=axes) + d * t
    else:
        dn = jnp.sqrt(jnp.sum(a * a, axis=axes) + 2 * d * t)
    return outward(centre, centre, err)[0], outward(dn, dn * (1 + gamma(d + 2, a.dtype)))[1]


def lower_at(centre: jnp.ndarray, dn: jnp.ndarray, eps: jnp.ndarray,
             enclose: bool = False) -> jnp.ndarray:
    """centre - ``eps`` · dn (each (B, K), ``eps`` (B,)): the minimum over the ball of a linear
    bound (`centre_and_norm`); with ``enclose`` rounded down."""
    if not enclose:
        return centre - eps[:, None] * dn
    low = centre - eps[:, None] * dn * (1 + 2 * unit(dn.dtype))
    return outward(low, low)[0]


def concretise(a: jnp.ndarray, c: jnp.ndarray, x0: jnp.ndarray, eps: jnp.ndarray,
               norm: str, enclose: bool = False) -> jnp.ndarray:
    """The minimum of $a^\\top x + c$ over the ball of radius ``eps`` around ``x0`` (with
    ``enclose``, a lower bound of it whatever the rounding, `_rounding.py`).

    Shapes: ``a`` (B, K, *d), ``c`` (B, K), ``x0`` (B, *d), ``eps`` (B,); returns (B, K).
    """
    return lower_at(*centre_and_norm(a, c, x0, norm, enclose), eps, enclose)


def box(x0: jnp.ndarray, eps: jnp.ndarray,
        enclose: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The smallest box containing the ball (the same for $\\ell_2$ and $\\ell_\\infty$ balls:
    each coordinate moves by at most $\\varepsilon$); with ``enclose`` rounded outwards."""
    e = eps.reshape((-1,) + (1,) * (x0.ndim - 1))
    if enclose:
        return outward(x0 - e, x0 + e)
    return x0 - e, x0 + e
