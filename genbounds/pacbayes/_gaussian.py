"""The one diagonal Gaussian of the PAC-Bayes bounds, and the one KL divergence to an isotropic
Gaussian prior.

Every posterior here is $Q = N(w, \\mathrm{diag}(s))$ over a parameter tree and every prior is
$P = N(w_0, \\lambda I)$ (Dziugaite & Roy 2017; Pérez-Ortiz et al. 2021). Their KL divergence has
the closed form

$$2\\, KL(Q \\| P) = \\frac{1}{\\lambda}\\sum_i s_i + \\frac{\\|w - w_0\\|^2}{\\lambda} - k
+ k \\ln\\lambda - \\sum_i \\ln s_i$$

over the k parameters. `isotropic_kl` evaluates it on numpy float64 arrays (the certificates) and
inside jitted training (the objectives) alike; `diag_gaussian_kl` is its checked public form.

A posterior is trained and sampled as one flat vector: `flatten` and `Unravel` map a parameter
tree to it and back. `Unravel` compares equal for equal tree structures, leaf shapes and dtypes,
so jitted functions that take it as a static argument compile once per network.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from genbounds.core._checks import check_finite_tree, check_positive
from genbounds.core._dtypes import promoted_dtype
from genbounds.losses._losses import check_same_tree


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DiagonalGaussian:
    """A diagonal Gaussian over a parameter tree: $Q = N(\\text{mean}, \\mathrm{diag}(\\text{std}^2))$.

    Attributes:
      mean: a parameter tree (the centre w).
      std: a tree of the same structure, standard deviations > 0 (variance s = std**2).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> q = DiagonalGaussian.from_variance({"w": jnp.zeros(2)}, {"w": jnp.full(2, 4.0)})
      >>> q.std["w"].tolist()
      [2.0, 2.0]
    """

    mean: Any
    std: Any

    @classmethod
    def from_variance(cls, mean: Any, variance: Any) -> DiagonalGaussian:
        """Builds Q from variances; raises ValueError on a negative or zero variance."""
        check_same_tree(mean, variance, "mean", "variance")
        for path, v in jax.tree_util.tree_leaves_with_path(variance):
            v = np.asarray(v)
            if not np.all(np.isfinite(v)) or np.any(v <= 0):
                raise ValueError(
                    f"variance must be finite and > 0 everywhere; at {jax.tree_util.keystr(path)} "
                    f"got min {float(np.min(v)):g}"
                )
        return cls(mean=mean, std=jax.tree.map(jnp.sqrt, variance))

    @property
    def variance(self) -> Any:
        return jax.tree.map(jnp.square, self.std)

    def sample(self, key: jax.Array) -> Any:
        """One draw w ~ Q, a parameter tree."""
        flat_m, unravel = ravel_pytree(self.mean)
        flat_s, _ = ravel_pytree(self.std)
        return unravel(flat_m + flat_s * jax.random.normal(key, flat_m.shape, flat_m.dtype))


def check_posterior(posterior: Any, name: str = "posterior") -> tuple[np.ndarray, np.ndarray]:
    """`posterior` checked (a `DiagonalGaussian`, finite, std > 0); its flat mean and std in
    float64."""
    if not isinstance(posterior, DiagonalGaussian):
        raise TypeError(f"{name} must be a DiagonalGaussian, got {type(posterior).__name__}")
    check_same_tree(posterior.mean, posterior.std, f"{name}.mean", f"{name}.std")
    check_finite_tree(posterior.mean, f"{name}.mean")
    check_finite_tree(posterior.std, f"{name}.std")
    mean = np.asarray(ravel_pytree(posterior.mean)[0], np.float64)
    std = np.asarray(ravel_pytree(posterior.std)[0], np.float64)
    if np.any(std <= 0):
        raise ValueError(
            f"{name}.std must be > 0 everywhere (variance > 0), got {int(np.sum(std <= 0))} "
            f"entries <= 0 (min {float(std.min()):g})"
        )
    return mean, std


# ----------------------------------------------------------------------------------------------
# The KL divergence.
# ----------------------------------------------------------------------------------------------


def isotropic_kl(mean, var, log_var, prior_mean, log_prior_var, *, prior_var=None,
                 prior_precision=None):
    """KL(N(mean, diag(var)) || N(prior_mean, lambda I)) on flat arrays, without checks.

    The closed form of the module docstring, on numpy arrays (float64 certificates) and on
    traced jax arrays (training objectives) alike. Each quantity is passed in the form the
    caller's parametrisation holds exactly, so that no rounding is added to it: the logarithms
    ``log_var`` (e.g. ``2 rho`` for ``var = exp(2 rho)``) and ``log_prior_var`` = ln lambda, and
    lambda itself either as `prior_var` (the terms are divided by it) or as `prior_precision`
    = 1/lambda (they are multiplied by it; e.g. ``exp(-log_lam)`` when ln lambda is trained).
    """
    if (prior_var is None) == (prior_precision is None):
        raise TypeError("isotropic_kl takes one of prior_var and prior_precision")
    k = mean.size
    var_sum, dist2 = var.sum(), ((mean - prior_mean) ** 2).sum()
    if prior_var is not None:
        scaled = var_sum / prior_var + dist2 / prior_var
    else:
        scaled = var_sum * prior_precision + dist2 * prior_precision
    return 0.5 * (scaled - k + k * log_prior_var - log_var.sum())


def diag_gaussian_kl(posterior: DiagonalGaussian, prior_mean: Any, prior_variance: float) -> float:
    """KL divergence from a diagonal Gaussian posterior to an isotropic Gaussian prior.

    $$2\\, KL(N(w, \\mathrm{diag}(s)) \\| N(w_0, \\lambda I)) = \\frac{1}{\\lambda}\\sum_i s_i
    + \\frac{\\|w - w_0\\|^2}{\\lambda} - k + k \\ln\\lambda - \\sum_i \\ln s_i$$

    over the k parameters, computed in float64.

    Args:
      posterior: Q, with mean w and variance s = std**2 (> 0).
      prior_mean: w0, a tree of the same structure as ``posterior.mean``.
      prior_variance: lambda > 0.

    Returns:
      KL(Q || P) in nats, a Python float.

    Raises:
      ValueError, TypeError: mismatched trees, a non-positive variance or lambda.

    Examples:
      >>> import jax.numpy as jnp
      >>> q = DiagonalGaussian({"w": jnp.zeros(3)}, {"w": jnp.ones(3)})
      >>> diag_gaussian_kl(q, {"w": jnp.zeros(3)}, 1.0)
      0.0

    References:
      Dziugaite & Roy, UAI 2017, arXiv:1703.11008, §3 (the closed form of their objective).
    """
    mean, std = check_posterior(posterior)
    check_same_tree(posterior.mean, prior_mean, "posterior.mean", "prior_mean")
    check_finite_tree(prior_mean, "prior_mean")
    lam = check_positive(prior_variance, "prior_variance")
    w0 = np.asarray(ravel_pytree(prior_mean)[0], np.float64)
    return flat_kl(mean, std, w0, lam)


def flat_kl(mean: np.ndarray, std: np.ndarray, w0: np.ndarray, lam: float) -> float:
    """`diag_gaussian_kl` on flat float64 arrays (std > 0, lam > 0), without checks."""
    s = std**2
    return float(isotropic_kl(mean, s, np.log(s), w0, math.log(lam), prior_var=lam))


def kl_log_det_term(var: np.ndarray, prior_var: float) -> float:
    """$\\frac12 \\sum_i \\ln(\\lambda / s_i)$: the log-determinant part of the KL above.

    When the prior variance is the one that minimises the KL for the given posterior,
    $\\lambda = (\\sum_i s_i + \\|w - w_0\\|^2)/k$, the other terms cancel and this is the whole
    KL; Jiang et al. (2020, measures 56-61) build their magnitude-aware PAC-Bayes measures on it.

    Args:
      var: the posterior variances $s_i > 0$ (float64 numpy).
      prior_var: $\\lambda > 0$.

    Returns:
      A Python float.
    """
    return 0.5 * float(np.sum(np.log(prior_var / var)))


# ----------------------------------------------------------------------------------------------
# A parameter tree as one flat vector.
# ----------------------------------------------------------------------------------------------


def flatten(tree: Any, dtype: Any = None) -> jax.Array:
    """The leaves of `tree`, raveled and concatenated in `jax.tree.leaves` order (as
    `ravel_pytree`), cast to `dtype` (default: the leaves' common dtype)."""
    leaves = jax.tree.leaves(tree)
    if dtype is None:
        dtype = promoted_dtype(*leaves)
    return jnp.concatenate([jnp.ravel(a).astype(dtype) for a in leaves])


class Unravel:
    """Flat vector -> parameter tree, the inverse of `flatten`.

    Leaves come back in `dtype` when given, else each in its own dtype (as `ravel_pytree`'s
    unravel). Hashable by tree structure, leaf shapes and dtypes, so jitted functions that take
    it as a static argument compile once per network rather than once per call (`ravel_pytree`
    returns a fresh closure every time).
    """

    def __init__(self, tree: Any, dtype: Any = None):
        leaves, self.treedef = jax.tree.flatten(tree)
        self.shapes = tuple(tuple(np.shape(a)) for a in leaves)
        if dtype is None:
            self.dtypes = tuple(jnp.result_type(a) for a in leaves)
        else:
            self.dtypes = (jnp.dtype(dtype),) * len(leaves)
        self.bounds = tuple(int(b) for b in np.cumsum([int(np.prod(s)) for s in self.shapes]))

    def __call__(self, flat: jax.Array) -> Any:
        # jnp.split, as ravel_pytree's unravel: XLA compiles the same program as for it.
        parts = jnp.split(flat, list(self.bounds[:-1]))
        leaves = [p.reshape(s).astype(d)
                  for p, s, d in zip(parts, self.shapes, self.dtypes, strict=True)]
        return jax.tree.unflatten(self.treedef, leaves)

    def _key(self) -> tuple:
        return (self.treedef, self.shapes, self.dtypes)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unravel) and self._key() == other._key()
