"""`compression_bound`: train in a random subspace, quantise, code, and bound the coded network.

Lotfi, Finzi, Kapoor, Potapczynski, Goldblum & Wilson (NeurIPS 2022, arXiv:2211.13609): the
network $\\theta = \\theta_0 + P z$ is trained in a d-dimensional random subspace
(`_subspace.py`), z is quantised to L levels (`_quantise.py`), the quantised network is written
with a prefix-free code (`_code.py`), and its 0-1 error is bounded by the Occam bound with
$KL = \\mathrm{bits} \\ln 2$ (`_bound.py`). Data-dependent variant (their §5, "transfer"): the
origin $\\theta_0$ is learnt on a random part of the training set (the prior set) and the bound
uses the other part only (n = the bound set's size).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    check_delta,
    check_finite_tree,
    check_int,
    check_key,
    check_n,
    check_positive,
    check_unit_interval,
)
from genbounds.losses._losses import check_classifier
from genbounds.pacbayes._gaussian import Unravel, flatten
from genbounds.pacbayes._options import check_bundle
from genbounds.pacbayes._risk_certificate import split_data

from ._bound import REFERENCE, occam_bound
from ._code import code_length
from ._quantise import compact, compensate, kmeans_1d, nearest, round_codebook, straight_through
from ._subspace import (
    KINDS,
    SubspaceLoop,
    error_rate,
    fisher_z,
    identity,
    make_projector,
    train,
)


@dataclasses.dataclass(frozen=True)
class CompressionTraining:
    """How `compression_bound` trains, quantises and (with a prior set) learns the origin.

    Attributes:
      epochs: Adam epochs of z in the subspace (Lotfi et al. train 500; fewer suffice for small
        networks).
      lr: Adam learning rate of z.
      batch_size: minibatch of every stage.
      finetune_epochs: epochs of the straight-through fine-tune of the centroids and z (their
        code: 30).
      finetune_lr: its Adam learning rate.
      prior_epochs: Adam epochs of all parameters on the prior set (data-dependent bound only).
      prior_lr: their learning rate.
      projector: ``"auto"``, ``"dense"`` or ``"sparse"`` (`make_projector`).
      nnz: non-zeros per row of the sparse projector.
      kmeans_iterations: Lloyd iterations of the initial centroids.
      compensate: ``"auto"`` (on while d <= `COMPENSATE_MAX_DIM`), ``True`` or ``False``: start
        the fine-tune from error-compensating rounding of z (`_quantise.py`: GPTQ's
        optimal-brain-surgeon updates under the empirical Fisher matrix of the loss in z)
        instead of rounding each coordinate to its nearest centroid. Its d x d float64 matrix
        costs 8 d^2 bytes.
      fisher_examples: training examples (a random subset) of that Fisher matrix.
      fisher_damping: its damping, a fraction of the mean diagonal added to the diagonal.
      schedule: ``"cosine"`` (each stage's learning rate decays from its value to 0 along a
        cosine over the stage's steps; Loshchilov & Hutter 2017) or ``"constant"``.
    """

    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 128
    finetune_epochs: int = 5
    finetune_lr: float = 0.005
    prior_epochs: int = 20
    prior_lr: float = 0.003
    projector: str = "auto"
    nnz: int = 8
    kmeans_iterations: int = 100
    schedule: str = "cosine"
    compensate: bool | str = "auto"
    fisher_examples: int = 2048
    fisher_damping: float = 0.01


COMPENSATE_MAX_DIM = 4096


def _check_training(t: CompressionTraining) -> CompressionTraining:
    t = check_bundle(t, CompressionTraining, "training")
    for f in ("epochs", "finetune_epochs", "prior_epochs"):
        check_int(getattr(t, f), f"training.{f}", minimum=0)
    for f in ("batch_size", "nnz", "kmeans_iterations", "fisher_examples"):
        check_int(getattr(t, f), f"training.{f}", minimum=1)
    for f in ("lr", "finetune_lr", "prior_lr"):
        v = check_positive(getattr(t, f), f"training.{f}")
        if not math.isfinite(v):
            raise ValueError(f"training.{f} must be finite, got {v}")
    if t.compensate not in ("auto", True, False):
        raise ValueError(f"training.compensate must be 'auto', True or False, got "
                         f"{t.compensate!r}")
    if not (math.isfinite(t.fisher_damping) and t.fisher_damping > 0):
        raise ValueError(f"training.fisher_damping must be positive and finite, got "
                         f"{t.fisher_damping!r}")
    if t.schedule not in SCHEDULES:
        raise ValueError(f"training.schedule must be one of {SCHEDULES}, got {t.schedule!r}")
    if t.projector not in KINDS or t.projector == "identity":
        raise ValueError(f"training.projector must be 'auto', 'dense' or 'sparse', got "
                         f"{t.projector!r}")
    return t


SCHEDULES = ("cosine", "constant")


def _adam(t: CompressionTraining, lr: float, epochs: int, m: int) -> tuple:
    """The optimiser spec of a stage of `epochs` epochs over m examples (`SubspaceLoop`)."""
    steps = epochs * (m // min(int(t.batch_size), m)) if t.schedule == "cosine" else 0
    return ("adam", float(lr), int(steps))


def _check_finite(x: jax.Array, what: str, hint: str) -> None:
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{what} is not finite after training ({hint})")


def compression_bound(
    params: Any,
    *,
    apply_fn: Callable,
    X: Any,
    y: Any,
    key: jax.Array,
    dim: int,
    levels: int = 7,
    delta: float = 0.05,
    X_test: Any = None,
    y_test: Any = None,
    prior_fraction: float = 0.0,
    split_seed: int = 0,
    codebook_bits: int = 16,
    num_candidates: int = 1,
    training: CompressionTraining = CompressionTraining(),
    callback: Callable | None = None,
    return_params: bool = False,
) -> Bound | tuple[Bound, Any]:
    """The compression bound of Lotfi et al. (2022) on the deterministic quantised network.

    Trains $z \\in \\mathbb{R}^d$ in $\\theta = \\theta_0 + P z$ (P drawn from `key`), quantises z
    to `levels` centroids (k-means, then a straight-through fine-tune), codes the network
    (Elias-coded d and L, a `codebook_bits` codebook, the symbol counts, the enumerative code of
    the symbols, $\\log_2 K$ bits for K = `num_candidates` settings searched) and bounds the 0-1
    error of *that* network, $h = \\theta_0 + P c_s$, with probability $\\ge 1 - \\delta$ over the
    n bound-set examples (Maurer 2004, Theorem 5 with a point-mass posterior on the prior
    $2^{-\\mathrm{bits}}$; Lotfi et al. 2022, §3-4):

    $$\\mathrm{kl}\\big(\\hat e_S(h) \\,\\|\\, e(h)\\big) \\le
    \\frac{\\mathrm{bits}(h) \\ln 2 + \\ln(2\\sqrt n/\\delta)}{n}.$$

    Data-independent (``prior_fraction=0``): $\\theta_0$ = `params` (must not depend on the
    data: a random initialisation) and n = len(X). Data-dependent (``prior_fraction > 0``):
    (X, y) is split at random (`split_seed`); all parameters are trained from `params` on the
    prior set to give $\\theta_0$, z is trained on all of X, and the bound uses only the bound
    set, n = its size. Either way the projector, the architecture and the hyper-parameters must
    be fixed before the bound set is seen (or counted in `num_candidates`).

    Args:
      params: the parameter tree of ``apply_fn`` (cast to float32): the origin, or the prior
        network's starting point.
      apply_fn: ``apply_fn(params, X) -> logits`` ((n,), (n, 1) or (n, K)); pure JAX.
      X, y: the training set (n >= 8 bound examples).
      key: PRNG key of the projector and of the minibatches.
      dim: d >= 1, at most the number of parameters.
      levels: L >= 2 quantisation levels (unused levels are dropped before coding).
      delta: failure probability in (0, 1).
      X_test, y_test: optional test set; its error is reported, not used.
      prior_fraction: the fraction of (X, y) that learns the origin, in [0, 1).
      split_seed: seed of that split.
      codebook_bits: 16 (float16 centroids, as evaluated) or 32.
      num_candidates: K >= 1 settings searched before choosing this one.
      training: a `CompressionTraining`.
      callback: ``callback(stage, epoch, loss)`` after each epoch, stage in ``"prior"``,
        ``"subspace"``, ``"finetune"``.
      return_params: also return the parameter tree of the quantised network (float32), the
        network the bound is about, to deploy it.

    Returns:
      A `Bound` named ``"compression"``: ``value`` the kl-form bound on the quantised network's
      0-1 error, ``complexity`` the code length in bits; ``terms``: ``catoni`` (Catoni's form at
      the same delta), ``bits`` and each code part (``bits_dimension``, ``bits_levels``,
      ``bits_codebook``, ``bits_counts``, ``bits_symbols``, ``bits_hyperparameters``,
      ``bits_arithmetic_symbols`` for comparison), ``kl_nats``, ``train_error`` (the quantised
      network on the bound set, the error bounded), ``train_error_all``, ``test_error`` (NaN
      without a test set), ``subspace_train_error`` / ``subspace_test_error`` (before
      quantisation), ``origin_test_error``, ``dim``, ``levels_used``, ``num_params``,
      ``n_prior``, ``n_bound``, ``centroids`` (the codebook as decoded), ``seconds_*``. With
      ``return_params=True``, ``(bound, params)``.

    Raises:
      ValueError, TypeError: delta outside (0, 1), levels < 2, dim < 1 or above the number of
        parameters, non-finite params, bad data, fewer than 8 bound examples, a training run that
        diverged (non-finite parameters), a bad `training` bundle.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> rng = np.random.default_rng(0)
      >>> X = rng.normal(size=(200, 2)).astype(np.float32); y = (X[:, 0] > 0).astype(np.int32)
      >>> params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
      >>> b = compression_bound(params, apply_fn=lambda p, x: x @ p["w"] + p["b"], X=X, y=y,
      ...                       key=jax.random.key(0), dim=2, levels=3)
      >>> b.value >= b.terms["train_error"], b.complexity == b.terms["bits"]
      (True, True)

    References:
      Lotfi, Finzi, Kapoor, Potapczynski, Goldblum, Wilson, PAC-Bayes compression bounds so
      tight that they can explain generalization, NeurIPS 2022, arXiv:2211.13609; Li, Farkhoor,
      Liu, Yosinski, Measuring the intrinsic dimension of objective landscapes, ICLR 2018;
      Maurer 2004, arXiv:cs/0411099; Catoni 2007.
    """
    t_all = time.perf_counter()
    t = _check_training(training)
    delta = check_delta(delta)
    levels = check_int(levels, "levels", minimum=2)
    dim = check_int(dim, "dim", minimum=1)
    K = check_n(num_candidates, "num_candidates")
    if codebook_bits not in (16, 32):
        raise ValueError(f"codebook_bits must be 16 or 32, got {codebook_bits!r}")
    f = check_unit_interval(prior_fraction, "prior_fraction")
    if f >= 1.0:
        raise ValueError(f"prior_fraction must lie in [0, 1), got {prior_fraction!r}")
    key = check_key(key)
    check_finite_tree(params, "params")
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    X, y, _ = check_classifier(apply_fn, params, X, y, dtype=jnp.float32)
    X = X.astype(jnp.float32)
    if (X_test is None) != (y_test is None):
        raise ValueError("X_test and y_test must be given together")
    if X_test is not None:
        X_test, y_test, _ = check_classifier(apply_fn, params, X_test, y_test, x_name="X_test",
                                             y_name="y_test", dtype=jnp.float32)
        X_test = X_test.astype(jnp.float32)
    unravel = Unravel(params, jnp.float32)
    theta_init = flatten(params, jnp.float32)
    D = int(theta_init.size)
    if dim > D:
        raise ValueError(f"dim must be at most the number of parameters {D}, got {dim}")
    k_proj, k_prior, k_sub, k_fine = jax.random.split(key, 4)

    def report(stage):
        return None if callback is None else (lambda e, loss: callback(stage, e, loss))

    # --- the origin: the initialisation, or a network trained on the prior set --------------
    t0 = time.perf_counter()
    if f > 0.0:
        split = split_data(np.asarray(X), np.asarray(y), prior_fraction=f, seed=split_seed)
        X_bound, y_bound = jnp.asarray(split.X_bound), jnp.asarray(split.y_bound)
        full = SubspaceLoop(apply_fn, unravel, identity,
                            _adam(t, t.prior_lr, t.prior_epochs, len(split.X_prior)),
                            int(t.batch_size))
        z_full, _ = train(full, jnp.zeros(D, jnp.float32), make_projector(D, D, kind="identity"),
                          theta_init, split.X_prior, split.y_prior, epochs=t.prior_epochs,
                          key=k_prior, callback=report("prior"))
        origin = theta_init + z_full
        _check_finite(origin, "the prior network", "lower training.prior_lr")
        n_prior = int(len(split.X_prior))
    else:
        X_bound, y_bound, origin, n_prior = X, y, theta_init, 0
    n = int(X_bound.shape[0])
    if n < 8:
        raise ValueError(f"the bound set must hold at least 8 examples, got {n}")
    seconds_prior = time.perf_counter() - t0

    # --- subspace training --------------------------------------------------------------------
    t0 = time.perf_counter()
    seed = int(jax.random.randint(k_proj, (), 0, np.iinfo(np.int32).max))
    P = make_projector(D, dim, seed=seed, kind=t.projector, nnz=t.nnz)
    loop = SubspaceLoop(apply_fn, unravel, identity, _adam(t, t.lr, t.epochs, int(X.shape[0])),
                        int(t.batch_size))
    z, _ = train(loop, jnp.zeros(dim, jnp.float32), P, origin, X, y, epochs=t.epochs, key=k_sub,
                 callback=report("subspace"))
    _check_finite(z, "z", "lower training.lr")
    seconds_subspace = time.perf_counter() - t0

    # --- quantisation: k-means, then the straight-through fine-tune ---------------------------
    t0 = time.perf_counter()
    c, _ = kmeans_1d(z, levels, t.kmeans_iterations)
    compensated = t.compensate is True or (t.compensate == "auto" and dim <= COMPENSATE_MAX_DIM)
    if compensated:  # error-compensating rounding under the empirical Fisher matrix in z
        m = int(X.shape[0])
        idx = jax.random.permutation(jax.random.fold_in(k_fine, 1), m)[:min(t.fisher_examples, m)]
        H = fisher_z(apply_fn, unravel, P, origin, z, X[idx], y[idx])
        z_start = jnp.asarray(compensate(z, c, H, damping=t.fisher_damping), jnp.float32)
    else:
        z_start = z
    fine = SubspaceLoop(apply_fn, unravel, straight_through,
                        _adam(t, t.finetune_lr, t.finetune_epochs, int(X.shape[0])),
                        int(t.batch_size))
    (z_q, c), _ = train(fine, (z_start, c), P, origin, X, y, epochs=t.finetune_epochs, key=k_fine,
                        callback=report("finetune"))
    _check_finite(c, "the centroids", "lower training.finetune_lr")
    symbols = nearest(z_q, c)
    centroids, symbols = compact(round_codebook(c, codebook_bits), np.asarray(symbols))
    q = jnp.asarray(centroids[symbols], jnp.float32)
    theta_q = origin + P(q)  # the coded network: theta_0 + P c_s, exactly as evaluated
    seconds_quantise = time.perf_counter() - t0

    # --- errors, code length, bound -----------------------------------------------------------
    def err(theta, A, b):
        return error_rate(apply_fn, unravel, theta, A, b)

    nan = float("nan")
    train_error = err(theta_q, X_bound, y_bound)
    code = code_length(symbols, len(centroids), codebook_bits=codebook_bits, num_candidates=K)
    occam = occam_bound(train_error, code.total, n=n, delta=delta)
    theta_z = origin + P(z)
    terms = {
        **occam.terms,
        **{f"bits_{k}": v for k, v in code.to_dict().items() if k != "total"},
        "train_error_all": err(theta_q, X, y),
        "test_error": nan if X_test is None else err(theta_q, X_test, y_test),
        "subspace_train_error": err(theta_z, X_bound, y_bound),
        "subspace_test_error": nan if X_test is None else err(theta_z, X_test, y_test),
        "origin_test_error": nan if X_test is None else err(origin, X_test, y_test),
        "dim": dim,
        "levels": levels,
        "levels_used": int(len(centroids)),
        "codebook_bits": int(codebook_bits),
        "compensated": bool(compensated),
        "centroids": [float(v) for v in centroids],
        "num_candidates": K,
        "num_params": D,
        "projector": P.kind,
        "projector_seed": seed,
        "n_prior": n_prior,
        "n_bound": n,
        "seconds_prior": seconds_prior,
        "seconds_subspace": seconds_subspace,
        "seconds_quantise": seconds_quantise,
    }
    terms["seconds_total"] = time.perf_counter() - t_all
    notes = (
        *occam.notes,
        f"theta = theta_0 + P z, d = {dim} of D = {D} parameters, {P.kind} projector from seed "
        f"{seed}; z quantised to {len(centroids)} of {levels} levels ({codebook_bits}-bit "
        "codebook), " + ("error-compensating rounding under the empirical Fisher matrix"
                         if compensated else "nearest-centroid rounding")
        + f", then {t.finetune_epochs} straight-through fine-tune epochs",
        ("data-dependent: origin learnt on the prior set, the bound on the other "
         f"n = {n} examples only") if n_prior else
        "data-independent: the origin is the given params (must not depend on the data)",
    )
    bound = Bound(name="compression", value=occam.value, complexity=code.total, terms=terms,
                  n=n, delta=delta, estimated=False, reference=REFERENCE, notes=notes)
    return (bound, unravel(theta_q)) if return_params else bound
