r"""Scalar activation functions that the traced network recognises, with their Lipschitz constants.

An element-wise function $g$ found in a network's jaxpr is identified by evaluating it on a fixed
grid of points and comparing with each known activation (so it does not matter how jax or Flax
spells it: ``max(x, 0)``, ``jnp.where``, a ``custom_jvp``, an inlined GELU polynomial). Each
activation carries

* ``lipschitz``: an upper bound on $\sup_t |g'(t)|$, its Lipschitz constant for the
  $\ell_2$ norm when applied element-wise (rounded up; derivations below);
* ``zero_at_zero``: whether $g(0) = 0$, which Bartlett et al. (2017)'s covering argument needs
  ($\|\sigma(z)\|_2 \le \rho\|z\|_2$);
* ``homogeneous``: whether $g(at) = a\,g(t)$ for $a \ge 0$ (ReLU-like), which the
  Neyshabur et al. (2018) and Golowich et al. (2018) bounds need.

Lipschitz constants: ReLU, ReLU6, hard tanh, softplus, tanh, |t|: 1. Leaky ReLU with slope
$\alpha$: $\max(1, |\alpha|)$. ELU: $\max(1, \alpha)$. Sigmoid: 1/4 (its derivative
$\sigma(1-\sigma)$ peaks at 0). GELU $t\Phi(t)$: its derivative $\Phi(t) + t\varphi(t)$ has
second derivative $\varphi(t)(2 - t^2)$, so the maximum is at $t = \sqrt 2$:
$\Phi(\sqrt 2) + \sqrt 2\,\varphi(\sqrt 2) = 1.1289041\ldots$, and the minimum $-0.1289$;
we use 1.128905. The tanh approximation of GELU peaks at 1.1289931 (numerically, at
$t \approx 1.4185$); we use 1.129. SiLU $t\sigma(t)$: the maximum of
$\sigma(t)(1 + t(1 - \sigma(t)))$ is 1.0998393 (at $t \approx 2.3993$); we use 1.09984. The test
suite checks each constant against a dense float64 grid of the derivative.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import erf


@dataclasses.dataclass(frozen=True)
class Activation:
    """A recognised scalar activation applied element-wise.

    Attributes:
      name: e.g. ``"relu"``, ``"leaky_relu(0.1)"``.
      lipschitz: upper bound on its Lipschitz constant.
      zero_at_zero: whether it maps 0 to 0.
      homogeneous: whether it is positively homogeneous (ReLU-like).
      fn: the jax function (used to re-evaluate the network from its records).
    """

    name: str
    lipschitz: float
    zero_at_zero: bool
    homogeneous: bool
    fn: Callable[[jax.Array], jax.Array] = dataclasses.field(compare=False, repr=False)


def _sigmoid64(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _gelu_tanh64(t):
    return 0.5 * t * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (t + 0.044715 * t**3)))


# name -> (float64 reference g(t), jax fn, lipschitz, zero_at_zero, homogeneous)
_FIXED = {
    "relu": (lambda t: np.maximum(t, 0.0), jax.nn.relu, 1.0, True, True),
    "relu6": (lambda t: np.clip(t, 0.0, 6.0), jax.nn.relu6, 1.0, True, False),
    "hard_tanh": (lambda t: np.clip(t, -1.0, 1.0), jax.nn.hard_tanh, 1.0, True, False),
    "abs": (np.abs, jnp.abs, 1.0, True, True),
    "tanh": (np.tanh, jnp.tanh, 1.0, True, False),
    "sigmoid": (_sigmoid64, jax.nn.sigmoid, 0.25, False, False),
    "softplus": (lambda t: np.logaddexp(t, 0.0), jax.nn.softplus, 1.0, False, False),
    "gelu": (lambda t: 0.5 * t * (1.0 + erf(t / math.sqrt(2.0))),
             lambda x: jax.nn.gelu(x, approximate=False), 1.128905, True, False),
    "gelu_tanh": (_gelu_tanh64, lambda x: jax.nn.gelu(x, approximate=True), 1.129, True, False),
    "silu": (lambda t: t * _sigmoid64(t), jax.nn.silu, 1.09984, True, False),
}

# Points at which an element-wise function is compared with the known activations.
_GRID = np.concatenate([np.linspace(-8.0, 8.0, 161), [-50.0, -20.0, 20.0, 50.0]])


def _close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return bool(np.all(np.abs(a - b) <= tol * (1.0 + np.abs(b))))


def identify(values: np.ndarray, *, tol: float) -> Activation | tuple[float, float] | None:
    """Identifies a scalar function from its values on `_GRID`.

    Returns an `Activation`, or ``(a, c)`` when the function is affine $a t + c$, or None.
    """
    g = np.asarray(values, dtype=np.float64)
    if g.shape != _GRID.shape or not np.all(np.isfinite(g)):
        return None
    i0 = int(np.argmin(np.abs(_GRID)))  # t = 0
    i1 = int(np.argmin(np.abs(_GRID - 1.0)))
    im = int(np.argmin(np.abs(_GRID + 1.0)))
    c = g[i0]
    a = g[i1] - c
    if _close(g, a * _GRID + c, tol):
        return (float(a), float(c))
    for name, (ref, fn, lip, zero, homog) in _FIXED.items():
        if _close(g, ref(_GRID), tol):
            return Activation(name, lip, zero, homog, fn)
    # Leaky ReLU t -> t (t >= 0), alpha t (t < 0); alpha from g(-1).
    alpha = -g[im]
    if _close(g, np.where(_GRID >= 0, _GRID, alpha * _GRID), tol):
        return Activation(f"leaky_relu({alpha:.6g})", max(1.0, abs(alpha)), True,
                          alpha >= 0.0, lambda x, a=alpha: jnp.where(x >= 0, x, a * x))
    # ELU t -> t (t > 0), alpha (e^t - 1) (t <= 0); alpha from g(-50) ~ -alpha.
    alpha = -g[int(np.argmin(np.abs(_GRID + 50.0)))]
    if alpha > 0 and _close(g, np.where(_GRID > 0, _GRID, alpha * np.expm1(_GRID)), tol):
        return Activation(f"elu({alpha:.6g})", max(1.0, alpha), True, False,
                          lambda x, a=alpha: jax.nn.elu(x, a))
    return None


def grid() -> np.ndarray:
    """The evaluation grid (float64)."""
    return _GRID.copy()
