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
# Networks whose Gaussian noise is drawn by one call of the PRNG: up to 64, and at most
# _NOISE_FLOATS numbers per call (16 MiB of float32). One call for many networks is ~3x faster
# than one per network on CPU (threefry's per-call cost; 10 000 networks of 17 410 weights:
# 1.4 s against 4.3 s, 2 cores). It fixes which networks a key draws, whatever `batch` is.
_DRAWS_PER_KEY = 64
_NOISE_FLOATS = 1 << 22


def mc_batch_size(batch: Any, X: Any, name: str) -> int:
    """`batch` checked (an integer >= 1), or the default for the device that holds X."""
    if batch is not None:
        return check_n(batch, name)
    return 1 if on_cpu(X) else _MC_BATCH_ACCELERATOR


def draws_per_key(num_samples: int, num_params: int) -> int:
    """Networks drawn per PRNG call: min(64, N, 2**22 // num_params), at least 1."""
    return max(1, min(_DRAWS_PER_KEY, num_samples, _NOISE_FLOATS // max(num_params, 1)))


def _votes(logits: jax.Array, num_classes: int) -> jax.Array:
    """One-hot of the strict winner of each example's logits (int32, (m, K)); all zeros where
    the top logits tie. One output unit reads as the scores (0, s) of two classes."""
    if logits.ndim == 1 or logits.shape[1] == 1:
        s = logits.reshape(logits.shape[0])
        return jnp.stack([s < 0, s > 0], axis=1).astype(jnp.int32)
    top = jnp.argmax(logits, axis=1)
    best = jnp.max(logits, axis=1)
    strict = jnp.sum(logits == best[:, None], axis=1) == 1
    return jax.nn.one_hot(top, num_classes, dtype=jnp.int32) * strict[:, None].astype(jnp.int32)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def mc_errors(apply_fn, unravel, num_samples, batch, subset, votes, mean, std, X, y, key):
    """N = `num_samples` networks drawn from Q = N(mean, diag(std^2)), evaluated `batch` at a
    time: ``(errors, bad, counts, vote_counts)``.

    * ``errors`` (N,): each network's 0-1 error (mean over its examples);
    * ``bad`` (N,): whether any of its logits was NaN or infinite (a NaN logit has no margin:
      ``NaN <= 0`` is False, it would count as correct), returned as data for the caller to
      refuse;
    * ``counts`` (m,) int32: per example, how many of the N networks err on it (all examples,
      ``subset = 0`` only; else shape (0,)): the tandem statistics of `tandem_error` come from it;
    * ``vote_counts`` (m, K) int32 with ``votes=True``: per example and class, how many networks
      predict that class strictly (else shape (0, 0)): the majority vote of the N networks.

    The noise of up to `draws_per_key` networks is drawn by one PRNG call (a chunk; the chunks
    as even as possible); the chunks are one `lax.scan`, and the few draws of the last chunk
    beyond N (fewer than the number of chunks) are computed but counted nowhere: every
    returned number is about exactly N networks.
    With ``subset = k > 0`` each network is evaluated on its own k examples, drawn uniformly with
    replacement and independently of the network (a draw without replacement would cost a
    permutation of all m examples per network).
    """
    m = X.shape[0]
    d = mean.shape[0]
    chunk = draws_per_key(num_samples, d)
    n_chunks = -(-num_samples // chunk)
    chunk = -(-num_samples // n_chunks)  # as even as possible: fewer than n_chunks padded draws
    keys = jax.random.split(key, n_chunks)
    out_shape = jax.eval_shape(lambda w, Xs: apply_fn(unravel(w), Xs), mean, X[:1]).shape
    num_classes = 2 if len(out_shape) == 1 or out_shape[1] == 1 else out_shape[1]

    def run_chunk(acc, inp):
        k, start = inp
        kn, ks = jax.random.split(k)
        eps = jax.random.normal(kn, (chunk, d), mean.dtype)
        xs = (eps, jax.random.randint(ks, (chunk, subset), 0, m)) if subset else eps
        # the last chunk's draws beyond N are computed (one program for every chunk) but
        # count nowhere: not in the errors, the counts, the votes nor the non-finite flags
        keep = (start + jnp.arange(chunk, dtype=jnp.int32)) < num_samples

        def one(args):
            e, i = args if subset else (args, None)
            w = mean + std * e
            Xs, ys = (X[i], y[i]) if subset else (X, y)
            logits = apply_fn(unravel(w), Xs)
            err = zero_one(logits, ys)
            bad = jnp.logical_not(jnp.all(jnp.isfinite(logits)))
            cnt = None if subset else err.astype(jnp.int32)
            vv = _votes(logits, num_classes) if votes else None
            return err.mean(), bad, cnt, vv

        errs, bad, cnt, vv = jax.lax.map(one, xs, batch_size=min(batch, chunk))
        k32 = keep.astype(jnp.int32)
        acc = (acc[0] if subset else acc[0] + jnp.einsum("c,cm->m", k32, cnt,
                                                          preferred_element_type=jnp.int32),
               acc[1] + jnp.einsum("c,cmk->mk", k32, vv, preferred_element_type=jnp.int32)
               if votes else acc[1])
        return acc, (errs, bad & keep)

    acc = (jnp.zeros((0 if subset else m,), jnp.int32),
           jnp.zeros((m, num_classes) if votes else (0, 0), jnp.int32))
    starts = jnp.arange(n_chunks, dtype=jnp.int32) * chunk
    acc, (errs, bad) = jax.lax.scan(run_chunk, acc, (keys, starts))
    return errs.reshape(-1)[:num_samples], bad.reshape(-1)[:num_samples], acc[0], acc[1]


def tandem_error(counts: Any, num_samples: int) -> float:
    """The unbiased (U-statistic) estimate of the tandem error $E_{Q^2}[\\hat L_S(h, h')]$ from
    per-example error counts: with $c_x$ the number of the N networks that err on example x,

    $$\\hat T = \\frac{1}{m}\\sum_x \\frac{c_x (c_x - 1)}{N (N - 1)},$$

    the mean over all ordered pairs of distinct networks of the fraction of examples on which
    both err (Masegosa et al. 2020's tandem loss). Needs N >= 2; float64.
    """
    c = np.asarray(counts, np.float64)
    n = float(num_samples)
    return float(np.mean(c * (c - 1.0)) / (n * (n - 1.0)))


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
    votes: bool = False,
) -> dict[str, Any]:
    """The Monte-Carlo 0-1 error of Q on checked data: mean, standard error, N, and the tandem
    error of the same networks.

    The networks are drawn in `dtype` (X cast to it when floating), or, when None, in the
    common dtype of the posterior's mean with X as given. `names` name the `subset` and
    `batch` arguments in errors, `caller` the public function.

    Returns:
      dict with ``error``, ``stderr``, ``num_samples`` (N, every one computed and finite);
      without `subset` and with N >= 2 also ``tandem_error`` (`tandem_error`, the U-statistic
      over the N(N-1) ordered pairs) and ``num_pairs`` = floor(N/2), the number of independent
      trials its concentration counts (Hoeffding 1963, §5); with `votes`, ``majority_vote_error``:
      the 0-1 error of the vote of the N networks (a tie on an example counts as an error).

    Raises:
      ValueError: some drawn network gave NaN or infinite logits (`check_finite_draws`).
    """
    sub = 0 if subset is None else check_n(subset, names[0])
    bsz = mc_batch_size(batch, X, names[1])
    flat_m = flatten(posterior.mean, dtype)
    flat_s = flatten(posterior.std, flat_m.dtype)
    if dtype is not None and jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(dtype)
    errs, bad, counts, vote_counts = mc_errors(
        apply_fn, Unravel(posterior.mean, dtype), num_samples, bsz, sub, bool(votes),
        flat_m, flat_s, X, y, key)
    check_finite_draws(bad, num_samples, "networks drawn from the posterior", caller)
    errs = np.asarray(errs, np.float64)
    n = num_samples
    se = float(errs.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    out: dict[str, Any] = {"error": float(errs.mean()), "stderr": se, "num_samples": n}
    if not sub and n >= 2:
        out["tandem_error"] = tandem_error(counts, n)
        out["num_pairs"] = n // 2
    if votes:
        out["majority_vote_error"] = vote_error(vote_counts, y)
    return out


def vote_error(vote_counts: Any, y: Any) -> float:
    """The 0-1 error of a majority vote from its per-class vote counts (m, K): an example is
    correct when its label has strictly more votes than every other class."""
    v = np.asarray(vote_counts, np.int64)
    lab = np.asarray(y, np.int64)
    own = v[np.arange(len(lab)), lab]
    v_other = v.copy()
    v_other[np.arange(len(lab)), lab] = -1
    return float(np.mean(~(own > v_other.max(axis=1))))


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
    r = mc_error(apply_fn, posterior, X, y, key, N, subset, batch)
    return {k: r[k] for k in ("error", "stderr", "num_samples")}


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


def majority_vote_error(
    posterior: DiagonalGaussian,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    num_samples: int = 1000,
    batch: int | None = None,
) -> dict[str, float]:
    """Measured 0-1 error of the majority vote of N networks drawn from Q, on (X, y).

    Each of the N networks votes for its predicted class (no vote where its top logits tie); an
    example counts as correct when its label gets strictly more votes than every other class.
    As N grows this is the error of the Q-weighted majority vote $MV_Q$ on (X, y), the
    classifier that `majority_vote_first_order` and `majority_vote_tandem` bound; on test data
    it is the measurement to set beside them (an estimate, not a bound).

    Args:
      posterior: Q.
      X, y: data and integer labels.
      apply_fn: ``apply_fn(params, X) -> logits``.
      key: PRNG key.
      num_samples: N networks drawn from Q.
      batch: networks evaluated together (as `stochastic_error`).

    Returns:
      dict with ``majority_vote_error``, ``stochastic_error`` (the mean error of the same N
      networks), ``tandem_error`` (N >= 2) and ``num_samples``.

    Raises:
      ValueError, TypeError: bad shapes, labels or posterior; a drawn network with NaN or
        infinite logits.
    """
    key = check_key(key)
    check_posterior(posterior)
    X, y, _ = check_classifier(apply_fn, posterior.mean, X, y)
    N = check_n(num_samples, "num_samples")
    r = mc_error(apply_fn, posterior, X, y, key, N, None, batch, votes=True,
                 caller="majority_vote_error")
    out = {"majority_vote_error": r["majority_vote_error"], "stochastic_error": r["error"],
           "num_samples": N}
    if "tandem_error" in r:
        out["tandem_error"] = r["tandem_error"]
    return out
