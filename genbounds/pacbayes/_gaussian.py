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
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from genbounds.core._checks import check_finite_tree, check_key, check_positive
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
        key = check_key(key)
        flat_m, unravel = ravel_pytree(self.mean)
        flat_s, _ = ravel_pytree(self.std)
        return unravel(flat_m + flat_s * jax.random.normal(key, flat_m.shape, flat_m.dtype))


def flat64(tree: Any) -> np.ndarray:
    """The leaves of `tree` as one flat float64 numpy vector (`ravel_pytree`'s order), on the
    host: no device program to compile."""
    leaves = [np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(tree)]
    return np.concatenate(leaves) if leaves else np.zeros(0)


def check_posterior(posterior: Any, name: str = "posterior") -> tuple[np.ndarray, np.ndarray]:
    """`posterior` checked (a `DiagonalGaussian`, finite, std > 0); its flat mean and std in
    float64."""
    if not isinstance(posterior, DiagonalGaussian):
        raise TypeError(f"{name} must be a DiagonalGaussian, got {type(posterior).__name__}")
    check_same_tree(posterior.mean, posterior.std, f"{name}.mean", f"{name}.std")
    check_finite_tree(posterior.mean, f"{name}.mean")
    check_finite_tree(posterior.std, f"{name}.std")
    mean, std = flat64(posterior.mean), flat64(posterior.std)
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
    w0 = flat64(prior_mean)
    return flat_kl(mean, std, w0, lam)


def flat_kl(mean: np.ndarray, std: np.ndarray, w0: np.ndarray, lam: float) -> float:
    """`diag_gaussian_kl` on flat float64 arrays (std > 0, lam > 0), without argument checks.

    Summed per coordinate, $2\\,KL = \\sum_i [(r_i - 1) - \\ln r_i] + \\|w - w_0\\|^2/\\lambda$ with
    $r_i = s_i/\\lambda$: every term is >= 0 (no cancellation between large sums), and each is
    exactly 0 where $s_i = \\lambda$, so KL(Q || Q) is exactly 0. The same closed form as
    `isotropic_kl`, which the jitted objectives use. A result below 0 within the float64
    rounding of its terms is 0; beyond it, an error (`clamp_kl`).
    """
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        r = std**2 / lam
        # ln r from the logarithms where r leaves float64 (then the KL is inf, or large).
        ok = np.isfinite(r) & (r > 0)
        log_r = np.where(ok, np.log(np.where(ok, r, 1.0)), 2.0 * np.log(std) - math.log(lam))
    dev = r - 1.0
    dist = float(np.sum((mean - w0) ** 2)) / lam
    kl = 0.5 * (float(np.sum(dev - log_r)) + dist)
    scale = 0.5 * (float(np.sum(np.abs(dev))) + float(np.sum(np.abs(log_r))) + dist)
    return clamp_kl(kl, scale, mean.size)


def clamp_kl(kl: float, scale: float, k: int) -> float:
    """A computed KL divergence, which is >= 0 in exact arithmetic, clamped at 0 only within
    the rounding of its float64 sums.

    `scale` is the sum of the magnitudes of the terms of the KL (halved as the KL is), `k` the
    number of terms of its longest sum. numpy sums k float64 numbers pairwise, with an error of
    at most about $\\lceil\\log_2 k\\rceil\\,u\\sum_i|x_i|$ ($u = 2^{-53}$); with the few
    divisions, logarithms and subtractions around the sums, the tolerance is
    $(\\lceil\\log_2 k\\rceil + 8)\\,u$ times `scale`. Within it a negative value is rounding
    (the closed form summed as large totals, as the objectives do, gives KL(Q || Q) of about
    -1e-9 for a million parameters) and becomes exactly 0; beyond it the value is a genuine
    error and raises.

    Raises:
      ValueError: `kl` is NaN, or negative beyond the rounding tolerance.
    """
    if math.isnan(kl):
        raise ValueError("KL(Q || P) came out NaN: check the posterior's and the prior's values")
    if kl >= 0.0:
        return kl
    tol = (math.ceil(math.log2(max(k, 2))) + 8) * 2.0**-53 * scale
    if -kl <= tol:
        return 0.0
    raise ValueError(
        f"KL(Q || P) came out {kl:.6g}, negative beyond the float64 rounding of its terms "
        f"(tolerance {tol:.3g}); a KL divergence is >= 0, so the inputs or the computation are "
        "wrong"
    )


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
    # one jitted program per tree shape and dtype: as eager operations each ravel, cast and the
    # concatenation would compile a program of its own on first use
    return _flatten(leaves, jnp.dtype(dtype))


@partial(jax.jit, static_argnums=1)
def _flatten(leaves: list, dtype: Any) -> jax.Array:
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
        if not isinstance(flat, jax.core.Tracer):
            return _unravel(self, flat)  # one jitted program rather than a split and reshapes
        return self._unravel(flat)

    def _unravel(self, flat: jax.Array) -> Any:
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


@partial(jax.jit, static_argnums=0)
def _unravel(unravel: Unravel, flat: jax.Array) -> Any:
    return unravel._unravel(flat)
