r"""α-CROWN: the lower slopes of the ReLU relaxations optimised by projected gradient ascent.

**Theorem** (Xu et al. 2021, "Fast and Complete: Enabling Complete Neural Network Verification
with Rapid and Massively Parallel Incomplete Verifiers", ICLR, arXiv:2011.13824, §3.1). For
*every* choice of lower slopes $\alpha \in [0, 1]$ of the unstable ReLU neurons the CROWN
bound (`_crown.py`) is a valid lower bound, so $\max_\alpha$ of it is one too, and so is its
value at any $\alpha$ a gradient method reaches. The slopes are chosen per example, per
specification (each margin $f_y - f_j$ has its own) and per neuron; each step is projected back
onto $[0, 1]$, starting from CROWN's adaptive choice, and the best bound met (including the
starting one) is kept per example and specification, so α-CROWN is never looser than CROWN.

Here the intervals of the intermediate pre-activations are those of CROWN (computed once) and
only the slopes of the final specification are optimised (Xu et al. also optimise the slopes
used for the intermediate bounds; that is tighter and costs a backward pass per layer per step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._crown import adaptive_alpha, linear_parts
from ._ops import Op


def alpha_crown(ops: list[Op], target: int, spec: jnp.ndarray, x0: jnp.ndarray,
                eps: jnp.ndarray, norm: str, bounds: list, *, steps: int = 20,
                lr: float = 0.1) -> jnp.ndarray:
    """The α-CROWN lower bound of ``spec`` · record ``target`` (B, K): the best over
    ``steps`` projected Adam steps on the slopes, never below CROWN's."""
    centre, dn = alpha_parts(ops, target, spec, x0, eps, norm, bounds, steps=steps, lr=lr)
    return centre - eps[:, None] * dn


def alpha_parts(ops: list[Op], target: int, spec: jnp.ndarray, x0: jnp.ndarray,
                eps: jnp.ndarray, norm: str, bounds: list, *, steps: int = 20,
                lr: float = 0.1, enclose: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The centre and dual norm (`_crown.linear_parts`) of the linear bound of the best slopes
    met per example and specification (the bound at ``eps`` is centre - ``eps`` · norm)."""
    b, k = spec.shape[:2]
    acts = [i for i in range(1, target + 1) if ops[i].kind == "act"]
    init = {}
    for i in acts:
        lo, hi = bounds[ops[i].inputs[0]]
        init[i] = jnp.broadcast_to(adaptive_alpha(lo, hi)[:, None], (b, k) + lo.shape[1:])

    def parts(alphas):
        return linear_parts(ops, target, spec, x0, norm, bounds, alphas, enclose)

    def loss(alphas):
        centre, dn = parts(alphas)
        return -jnp.sum(centre - eps[:, None] * dn)

    best = parts(init)
    if steps <= 0 or not acts:
        return best
    zeros = jax.tree.map(jnp.zeros_like, init)
    b1, b2 = 0.9, 0.999  # Adam (Kingma & Ba 2015), then the projection onto [0, 1]

    def step(carry, t):
        alphas, m, v, best = carry
        g = jax.grad(loss)(alphas)
        m = jax.tree.map(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
        v = jax.tree.map(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        alphas = jax.tree.map(
            lambda p, m_, v_: jnp.clip(p - lr * (m_ / c1) / (jnp.sqrt(v_ / c2) + 1e-12), 0, 1),
            alphas, m, v)
        centre, dn = parts(alphas)
        better = centre - eps[:, None] * dn > best[0] - eps[:, None] * best[1]
        best = (jnp.where(better, centre, best[0]), jnp.where(better, dn, best[1]))
        return (alphas, m, v, best), None

    ts = jnp.arange(1, steps + 1).astype(spec.dtype)
    (_, _, _, best), _ = jax.lax.scan(step, (init, zeros, zeros, best), ts)
    return best
