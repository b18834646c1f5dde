"""The Monte-Carlo error of a stochastic network, and the sample-convergence bound on it.

A PAC-Bayes bound is about the *stochastic* classifier Q: its empirical error $\\hat e_S(Q)$ is
an expectation over networks drawn from Q. Both certificates here (Dziugaite & Roy 2017, §4;
Pérez-Ortiz et al. 2021, §5) estimate it from N networks drawn i.i.d. from Q, counted by
`mc_error` (one jitted function, compiled once per network and data shape), and bound it by
Langford & Caruana's sample-convergence bound, `sample_convergence_bound`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import check_delta, check_key, check_n
from genbounds.linalg._host import on_cpu
from genbounds.losses._losses import check_classifier, zero_one

from ._gaussian import DiagonalGaussian, Unravel, check_posterior, flatten
from ._kl import kl_inverse64

# Networks evaluated together by the Monte-Carlo error, when the caller does not say: one at a
# time on CPU, where XLA's batched products and convolutions are slower than a loop (200 steps
# + 500 networks on 2000 examples, 2 cores: a 64-channel CNN 54 s with 64 at a time, 14 s with
# one; an MLP 10 s against 9.3 s), 64 at a time on an accelerator.
_MC_BATCH_ACCELERATOR = 64


def mc_batch_size(batch: Any, X: Any, name: str) -> int:
    """`batch` checked (an integer >= 1), or the default for the device that holds X."""
    if batch is not None:
        return check_n(batch, name)
    return 1 if on_cpu(X) else _MC_BATCH_ACCELERATOR


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def mc_errors(apply_fn, unravel, num_samples, batch, subset, mean, std, X, y, key):
    """Per-network 0-1 errors of `num_samples` draws from Q, `batch` networks at a time, and
    per network whether any of its logits was NaN or infinite.

    With ``subset = k > 0`` each network is evaluated on its own k examples, drawn uniformly
    with replacement and independently of the network (a draw without replacement would cost a
    permutation of all m examples per network).

    A NaN logit has no margin (``NaN <= 0`` is False: it would count as correct), so the
    non-finite draws are returned as data (a bool per network) for the caller to refuse.
    """
    m = X.shape[0]
    keys = jax.random.split(key, num_samples)

    def one(k):
        kw, ks = jax.random.split(k)
        w = mean + std * jax.random.normal(kw, mean.shape, mean.dtype)
        if subset:
            idx = jax.random.randint(ks, (subset,), 0, m)
            Xs, ys = X[idx], y[idx]
        else:
            Xs, ys = X, y
        logits = apply_fn(unravel(w), Xs)
        return zero_one(logits, ys).mean(), jnp.logical_not(jnp.all(jnp.isfinite(logits)))

    return jax.lax.map(one, keys, batch_size=min(batch, num_samples))


def check_finite_draws(bad: Any, total: int, what: str, caller: str) -> None:
    """The Monte-Carlo rule of genbounds: a draw whose logits (or loss) are NaN or infinite is
    neither correct nor wrong, so any such draw makes the count meaningless and is an error.

    `bad` counts (or flags) the non-finite draws among `total`; `what` says what was drawn
    ("networks drawn from the posterior"), `caller` the public function.
    """
    k = int(np.sum(np.asarray(bad, np.int64)))
    if k:
        raise ValueError(
            f"{caller}: apply_fn returned NaN or infinite logits for {k} of the {total} {what}; "
            "a non-finite draw is neither correct nor wrong, so the Monte-Carlo count would be "
            "wrong (check the network's numerical range: a posterior or perturbation this wide "
            "may overflow it)"
        )


def mc_error(
    apply_fn: Any,
    posterior: DiagonalGaussian,
    X: jax.Array,
    y: jax.Array,
    key: jax.Array,
    num_samples: int,
    subset: int | None,
    batch: int | None,
    *,
    dtype: Any = None,
    names: tuple[str, str] = ("subset", "batch"),
    caller: str = "stochastic_error",
) -> dict[str, float]:
    """The Monte-Carlo 0-1 error of Q on checked data: mean, standard error, N.

    The networks are drawn in `dtype` (X cast to it when floating), or, when None, in the
    common dtype of the posterior's mean with X as given. `names` name the `subset` and
    `batch` arguments in errors, `caller` the public function.

    Raises:
      ValueError: some drawn network gave NaN or infinite logits (`check_finite_draws`).
    """
    sub = 0 if subset is None else check_n(subset, names[0])
    bsz = mc_batch_size(batch, X, names[1])
    flat_m = flatten(posterior.mean, dtype)
    flat_s = flatten(posterior.std, flat_m.dtype)
    if dtype is not None and jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(dtype)
    errs, bad = mc_errors(apply_fn, Unravel(posterior.mean, dtype), num_samples, bsz, sub,
                          flat_m, flat_s, X, y, key)
    check_finite_draws(bad, num_samples, "networks drawn from the posterior", caller)
    errs = np.asarray(errs, np.float64)
    n = num_samples
    se = float(errs.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"error": float(errs.mean()), "stderr": se, "num_samples": n}


def stochastic_error(
    posterior: DiagonalGaussian,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    num_samples: int = 1000,
    subset: int | None = None,
    batch: int | None = None,
) -> dict[str, float]:
    """Monte-Carlo 0-1 error of the stochastic network Q on (X, y).

    Args:
      posterior: Q.
      X, y: data and integer labels.
      apply_fn: ``apply_fn(params, X) -> logits``.
      key: PRNG key.
      num_samples: number N of networks drawn from Q.
      subset: if given, each network is evaluated on its own `subset` examples drawn uniformly
        with replacement (an unbiased estimate of the same quantity, much cheaper for large X).
      batch: networks evaluated together (memory ~ batch x activations of X); default 1
        on CPU (a loop is faster there), 64 on an accelerator.

    Returns:
      dict with ``error`` (mean over networks), ``stderr`` (sd over networks / sqrt(N); NaN
      for N = 1, where one network gives no spread) and ``num_samples``.

    Raises:
      ValueError, TypeError: bad shapes, labels or posterior; a drawn network whose logits are
        NaN or infinite (such a draw is neither correct nor wrong: the count would be wrong).
    """
    key = check_key(key)
    check_posterior(posterior)
    X, y, _ = check_classifier(apply_fn, posterior.mean, X, y)
    N = check_n(num_samples, "num_samples")
    return mc_error(apply_fn, posterior, X, y, key, N, subset, batch)


def check_error(error: Any, name: str = "error") -> float:
    """A training error checked: a float in [0, 1]."""
    q = float(error)
    if not 0.0 <= q <= 1.0 or math.isnan(q):
        raise ValueError(f"{name} must lie in [0, 1], got {error!r}")
    return q


def sample_convergence_bound(error: float, *, num_samples: int, delta_prime: float = 0.01) -> float:
    """Langford & Caruana's upper bound on a stochastic net's error from N sampled networks.

    With $\\hat e_N$ the mean error of N networks drawn i.i.d. from Q (each evaluated on the
    training set, or each on its own k examples drawn uniformly at random), with probability
    $\\ge 1 - \\delta'$ over the draws

    $$\\hat e_S(Q) \\le \\overline{kl}^{-1}\\big(\\hat e_N,\\ \\ln(2/\\delta')/N\\big).$$

    The N per-network errors are i.i.d. in [0, 1] with mean $\\hat e_S(Q)$ (also with random
    subsets: the expectation over the subset of a network's error is its training error); the
    Chernoff bound for [0, 1] variables is dominated by the Bernoulli one (Maurer 2004), whence
    the kl form. The count is N, the number of networks: pairs sharing a network are dependent.

    Args:
      error: the Monte-Carlo mean error in [0, 1].
      num_samples: N >= 1 networks.
      delta_prime: failure probability in (0, 1); default delta_prime = 0.01 as in Dziugaite & Roy
        2017, Section 4.4.

    Returns:
      The upper bound, a float in [error, 1].

    Raises:
      ValueError, TypeError: on arguments out of range.

    Examples:
      >>> round(sample_convergence_bound(0.03, num_samples=150_000), 6) > 0.03
      True

    References:
      Langford & Caruana, (Not) Bounding the True Error, NIPS 2002; Dziugaite & Roy, UAI 2017,
      arXiv:1703.11008, §4.
    """
    q = check_error(error)
    n = check_n(num_samples, "num_samples")
    dp = check_delta(delta_prime, "delta_prime")
    return float(kl_inverse64(q, math.log(2.0 / dp) / n))
