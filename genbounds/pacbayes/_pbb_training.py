"""The two trainings of Pérez-Ortiz et al.'s (2021) protocol: the prior mean on the prior set
(ERM to a stated early-stopping criterion, or a PAC-Bayes objective against a data-free prior)
and the Gaussian posterior by a PAC-Bayes objective (`_objectives.py`) in the jitted loop of
`_posterior.py`. `perez_ortiz` (`_perez_ortiz.py`) chains them with the certificate.

References:
  Pérez-Ortiz, Rivasplata, Shawe-Taylor & Szepesvári, Tighter risk certificates for neural
  networks, JMLR 22(227), 2021, arXiv:2007.12911.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genbounds.core._checks import (
    check_choice,
    check_delta,
    check_key,
    check_n,
    check_positive,
    check_unit_interval,
)
from genbounds.losses._losses import check_classifier, cross_entropy, zero_one

from ._diverged import check_prior_std, check_progress, check_trained, inverse_softplus
from ._gaussian import DiagonalGaussian, Unravel
from ._objectives import OBJECTIVE_INDEX, OBJECTIVES, pbb_after_step, pbb_objective
from ._options import (
    POSTERIOR_TRAINING,
    PRIOR_TRAINING,
    PosteriorTraining,
    PriorTraining,
    bundle_keywords,
    check_bundle,
)
from ._posterior import PosteriorLoop, optimiser, run_posterior_loop

_TRAINING_KEYWORDS = ("epochs", "batch_size", "lr", "momentum", "objective", "p_min")


@partial(jax.jit, static_argnums=1)
def split_keys(key: jax.Array, num: int) -> tuple[jax.Array, ...]:
    """``jax.random.split(key, num)`` as a tuple: one compiled program (splitting eagerly
    compiles the split and, to unpack the keys, an unstack)."""
    return tuple(jax.random.split(key, num))


def _as_f32(X):
    X = jnp.asarray(X)
    return X.astype(jnp.float32) if jnp.issubdtype(X.dtype, jnp.floating) else X


# ----------------------------------------------------------------------------------------------
# The prior, by ERM or by a PAC-Bayes objective.
# ----------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnums=0)
def _erm_start(sgd, init_params):
    """The flat float32 weights of `init_params` and the optimiser's starting state."""
    w = jnp.concatenate([jnp.ravel(a).astype(jnp.float32) for a in jax.tree.leaves(init_params)])
    return w, optax.sgd(sgd[0], momentum=sgd[1]).init(w)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _erm_epoch(apply_fn, unravel, sgd, batch, heldout, state, X, y, Xh, yh, key, epoch):
    """One epoch of SGD on the cross-entropy over a random permutation of (X, y) (the key of
    the epoch: `key` folded with `epoch`), then, with `heldout`, the 0-1 error and the
    cross-entropy of the new weights on (Xh, yh): ``(state, mean loss, held-out error,
    held-out cross-entropy)`` (the last two 0 without `heldout`)."""
    tx = optax.sgd(sgd[0], momentum=sgd[1])
    w, opt = state
    m = X.shape[0]
    steps = m // batch
    key = jax.random.fold_in(key, epoch)
    perm = jax.random.permutation(key, m)[: steps * batch].reshape(steps, batch)

    def loss(w, xb, yb):
        return cross_entropy(apply_fn(unravel(w), xb), yb).mean()

    def step(carry, idx):
        w, opt = carry
        val, g = jax.value_and_grad(loss)(w, X[idx], y[idx])
        u, opt = tx.update(g, opt, w)
        return (optax.apply_updates(w, u), opt), val

    (w, opt), losses = jax.lax.scan(step, (w, opt), perm)
    if heldout:
        err, ce = _heldout_stats(apply_fn, unravel, w, Xh, yh)
    else:
        err = ce = jnp.zeros((), jnp.float32)
    return (w, opt), losses.mean(), err, ce


def _heldout_stats(apply_fn, unravel, w, X, y):
    logits = apply_fn(unravel(w), X)
    return zero_one(logits, y).mean(), cross_entropy(logits, y).mean()


_heldout = partial(jax.jit, static_argnums=(0, 1))(_heldout_stats)


def to_device(a: Any) -> jax.Array:
    """A host array on the device without a compiled copy (`jnp.asarray` of a numpy array
    compiles a program per shape on first use); floating arrays in float32."""
    if isinstance(a, np.ndarray):
        return jax.device_put(a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) else a)
    return _as_f32(a)


@bundle_keywords(training={k: k for k in _TRAINING_KEYWORDS})
def learn_prior(
    init_params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    training: PriorTraining = PRIOR_TRAINING,
    prior_std: float = 0.03,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> Any:
    """Learns the prior mean $w_P$ on the prior set only (Pérez-Ortiz et al. 2021, §4).

    ``training.objective="erm"``: SGD with momentum on the (unbounded) cross-entropy from
    `init_params`, **to a stated criterion**: a random ``training.holdout`` share of X is held
    out, the rest is fitted for at most ``training.epochs`` epochs, the held-out 0-1 error (ties
    broken by the held-out cross-entropy) is measured after every epoch, training stops after
    ``training.patience`` epochs without improvement and the parameters of the best epoch are
    returned (early stopping). Any other objective of `OBJECTIVES`: train a Gaussian posterior
    on the prior set by that PAC-Bayes objective against the data-free prior
    $N(\\text{init\\_params}, \\sigma_P^2 I)$ (n = the prior-set size) for ``training.epochs``
    epochs and return its mean. Either way the result depends on the prior set, the
    initialisation and `key` only.

    Args:
      init_params: the initial parameter tree.
      X, y: the prior set (it must not overlap the bound set).
      apply_fn: ``apply_fn(params, X) -> logits``.
      key: PRNG key (the held-out split, the minibatches).
      training: a `PriorTraining`; its fields ``objective`` (``"erm"``), ``epochs`` (300, the
        most), ``lr`` (0.03), ``momentum`` (0.9), ``batch_size`` (64), ``p_min`` (1e-5),
        ``holdout`` (0.2), ``patience`` (30) are used here (``fraction`` and ``split_seed``
        tell `perez_ortiz` which examples form X). The keywords ``epochs``, ``batch_size``,
        ``lr``, ``momentum``, ``objective`` and ``p_min`` are accepted too and set these fields.
      prior_std: $\\sigma_P$ of the data-free prior of a PAC-Bayes objective.
      callback: ``callback(epoch, metrics)`` after each epoch (``cross_entropy`` and, with a
        held-out part, ``heldout_error``, ``heldout_cross_entropy``).

    Returns:
      The prior mean, a tree like `init_params` (float32).

    References:
      Pérez-Ortiz, Rivasplata, Shawe-Taylor & Szepesvári, Tighter risk certificates for neural
      networks, JMLR 22(227), 2021, arXiv:2007.12911.
    """
    return fit_prior(init_params, X=X, y=y, apply_fn=apply_fn, key=key, training=training,
                     prior_std=prior_std, callback=callback)[0]


def fit_prior(init_params, *, X, y, apply_fn, key, training=PRIOR_TRAINING, prior_std=0.03,
              callback=None, finite_check=True) -> tuple[Any, dict[str, Any]]:
    """`learn_prior` and what its training did: ``(prior_mean, info)`` with ``info`` holding
    ``epochs_run``, ``best_epoch``, ``n_fit``, ``n_heldout``, ``heldout_error`` (None without a
    held-out part), ``fit_error`` (the prior net's 0-1 error on the part it was fitted on;
    measured only without a held-out part, else None) and ``stopped_early``.

    ``finite_check=False`` skips the forward pass of `check_classifier` (for a caller that has
    checked the logits of `init_params` on data containing X)."""
    opt = check_bundle(training, PriorTraining, "training")
    key = check_key(key)
    objective = check_choice(opt.objective, "objective", ("erm",) + OBJECTIVES)
    X, y, _ = check_classifier(apply_fn, init_params, X, y, dtype=jnp.float32,
                               finite_check=finite_check)
    epochs = check_n(opt.epochs, "epochs")
    holdout = check_unit_interval(opt.holdout, "holdout")
    if holdout >= 1.0:
        raise ValueError(f"holdout must lie in [0, 1), got {opt.holdout!r}")
    patience = check_n(opt.patience, "patience")
    m = int(X.shape[0])
    if objective != "erm":
        batch_size = min(check_n(opt.batch_size, "batch_size"), m)
        q, _ = train_posterior(
            init_params, X=X, y=y, apply_fn=apply_fn, n_bound=m,
            prior_std=prior_std, key=key, callback=callback, finite_check=False,
            training=PosteriorTraining(objective=objective, epochs=epochs, lr=opt.lr,
                                       momentum=opt.momentum, batch_size=batch_size,
                                       p_min=opt.p_min),
        )
        fit_err = net_error(apply_fn, q.mean, X, y)
        return q.mean, {"epochs_run": epochs, "best_epoch": epochs, "n_fit": m, "n_heldout": 0,
                        "heldout_error": None, "fit_error": fit_err, "stopped_early": False}
    k_split, k_train = split_keys(key, 2)
    n_held = int(round(holdout * m))
    if holdout > 0 and not 1 <= n_held <= m - 1:
        raise ValueError(f"holdout={holdout:g} of the {m} prior examples leaves no held-out or no "
                         "fitting example; use more prior data or holdout=0")
    # the held-out split on the host (numpy, seeded from the key): no device op to compile
    seed = np.asarray(jax.random.key_data(k_split), np.uint32).ravel().tolist()
    perm = np.random.default_rng(seed).permutation(m)
    Xn = np.asarray(X, np.float32) if jnp.issubdtype(X.dtype, jnp.floating) else np.asarray(X)
    yn = np.asarray(y)
    Xh, yh = to_device(Xn[perm[:n_held]]), to_device(yn[perm[:n_held]])
    Xt, yt = to_device(Xn[perm[n_held:]]), to_device(yn[perm[n_held:]])
    batch_size = min(check_n(opt.batch_size, "batch_size"), int(Xt.shape[0]))
    unravel = Unravel(init_params, jnp.float32)
    sgd = (check_positive(opt.lr, "lr"), float(opt.momentum))
    state = _erm_start(sgd, init_params)
    settings = f"ERM with lr={sgd[0]:g}, momentum={sgd[1]:g}, batch_size={batch_size}"
    best, best_w, best_e, e = (math.inf, math.inf), state[0], 0, 0
    for e in range(epochs):
        state, *stats = _erm_epoch(apply_fn, unravel, sgd, batch_size, bool(n_held), state,
                                   Xt, yt, Xh, yh, k_train, e)
        loss, err, ce = (float(v) for v in jax.device_get(stats))  # one host transfer
        metrics = {"cross_entropy": loss}
        check_progress(metrics["cross_entropy"], caller="learn_prior", what="mean cross-entropy",
                       at=f"epoch {e + 1} of {epochs}", settings=settings)
        if n_held:
            metrics.update(heldout_error=err, heldout_cross_entropy=ce)
            if (err, ce) < best:
                best, best_w, best_e = (err, ce), state[0], e + 1
        if callback is not None:
            callback(e, metrics)
        if n_held and e + 1 - best_e >= patience:
            break
    w_out = best_w if n_held else state[0]
    check_trained({"prior mean": w_out}, caller="learn_prior", settings=settings)
    # the fit error is what the weak-prior note reads when nothing was held out
    fit_err = None if n_held else float(_heldout(apply_fn, unravel, w_out, Xt, yt)[0])
    info = {"epochs_run": e + 1, "best_epoch": best_e if n_held else e + 1,
            "n_fit": int(Xt.shape[0]), "n_heldout": n_held,
            "heldout_error": best[0] if n_held else None, "fit_error": fit_err,
            "stopped_early": bool(n_held) and e + 1 < epochs}
    return unravel(w_out), info


# ----------------------------------------------------------------------------------------------
# The posterior, by a PAC-Bayes objective in the shared training loop (one call per epoch).
# ----------------------------------------------------------------------------------------------


@bundle_keywords(training={k: k for k in _TRAINING_KEYWORDS + ("kl_penalty",)})
def train_posterior(
    prior_mean: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    n_bound: int,
    prior_std: float,
    key: jax.Array,
    delta: float = 0.025,
    training: PosteriorTraining = POSTERIOR_TRAINING,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    finite_check: bool = True,
) -> tuple[DiagonalGaussian, dict[str, list[float]]]:
    """Trains $Q = N(\\mu, \\mathrm{diag}(\\ln(1+e^\\rho)^2))$ by SGD on a PAC-Bayes objective.

    Q starts at the prior ($\\mu = w_P$, std $\\sigma_P$). Each step draws one weight sample
    $w = \\mu + \\sigma \\odot \\varepsilon$ (reparametrisation), takes the bounded cross-entropy on a
    minibatch of (X, y) and the closed-form KL to $N(w_P, \\sigma_P^2 I)$, and applies SGD with
    momentum to the objective (see `pac_bayes_objective`; n = `n_bound`, the size of the set the
    certificate will use). One call of the jitted posterior-training loop per epoch (compiled
    once per network, data shape and settings); `callback(epoch, metrics)` after each. Training
    is in float32 whatever jax_enable_x64 says.

    Args:
      prior_mean: $w_P$, a parameter tree.
      X, y: the training data of Q (the PAC-Bayes bound allows any data here).
      apply_fn: ``apply_fn(params, X) -> logits``; pure JAX (traced under jit).
      n_bound: n in the objective, >= 2.
      prior_std: $\\sigma_P > 0$.
      key: PRNG key.
      delta: the delta inside the objective; default delta = 0.025 as in Pérez-Ortiz et al. 2021
        (their experiments; the value of Dziugaite & Roy 2017, Section 3.1).
      training: a `PosteriorTraining`: ``objective`` (``"quad"``, ``"lambda"``, ``"classic"``
        or ``"dziugaite_roy"``; ``"quad"``), ``epochs`` (20), ``lr`` (0.001; the paper
        0.001-0.005), ``momentum`` (0.95; the paper 0.95-0.99), ``batch_size`` (128),
        ``p_min`` (floor of the bounded cross-entropy, 1e-5) and ``kl_penalty`` (multiplies the
        KL inside the objective; 1 for the paper's certificates). The keywords of the same
        names are accepted too and set these fields.
      callback: called as ``callback(epoch, metrics)`` with the epoch means of ``objective``,
        ``loss`` (bounded CE), ``kl``, ``error`` (0-1 of the sampled nets) and ``lam``.
      finite_check: check first that the network at `prior_mean` has finite logits on X (one
        forward pass); a non-finite objective stops the training with an error either way.

    Returns:
      ``(posterior, history)``: the `DiagonalGaussian` and the per-epoch metrics.

    References:
      Pérez-Ortiz, Rivasplata, Shawe-Taylor & Szepesvári, Tighter risk certificates for neural
      networks, JMLR 22(227), 2021, arXiv:2007.12911, §3.
    """
    opt = check_bundle(training, PosteriorTraining, "training")
    key = check_key(key)
    objective = check_choice(opt.objective, "objective", OBJECTIVES)
    sp = check_prior_std(prior_std, "prior_std")
    X, y, _ = check_classifier(apply_fn, prior_mean, X, y, dtype=jnp.float32,
                               finite_check=finite_check)
    n = check_n(n_bound, "n_bound")
    if n < 2:
        raise ValueError(f"n_bound must be >= 2, got {n}")
    epochs = check_n(opt.epochs, "epochs")
    batch_size = min(check_n(opt.batch_size, "batch_size"), int(X.shape[0]))
    delta = check_delta(delta)
    p_min = check_unit_interval(opt.p_min, "p_min", closed=False)
    kl_penalty = check_positive(opt.kl_penalty, "kl_penalty")
    loop, start, consts = _posterior_setup(apply_fn, prior_mean, objective=objective, lr=opt.lr,
                                           momentum=opt.momentum, batch_size=batch_size, n=n,
                                           sp=sp, delta=delta, p_min=p_min, kl_penalty=kl_penalty)
    w_p, state, sp2 = _pbb_start(loop.optimiser, prior_mean, *start)
    consts = consts[:4] + (sp2,) + consts[4:]
    unravel = loop.unravel
    Xf = _as_f32(X)
    hist: dict[str, list[float]] = {k: [] for k in ("objective", "loss", "kl", "error", "lam")}
    settings = (f"objective {objective!r}, lr={float(opt.lr):g}, momentum={float(opt.momentum):g}, "
                f"prior_std={sp:g}")
    for e in range(epochs):
        state, h = run_posterior_loop(loop, state, w_p, Xf, y, jax.random.fold_in(key, e), consts)
        metrics = dict(zip(hist, (float(v) for v in jax.device_get(h)), strict=True))
        check_progress(metrics["objective"], caller="train_posterior", what="objective",
                       at=f"epoch {e + 1} of {epochs}", settings=settings)
        for k, v in metrics.items():
            hist[k].append(v)
        if callback is not None:
            callback(e, metrics)
    mean, std, flat_std = _pbb_finish(unravel, state[0])
    check_trained({"posterior mean": state[0]["mean"], "posterior std": flat_std},
                  caller="train_posterior", settings=settings, positive=("posterior std",))
    return DiagonalGaussian(mean=mean, std=std), hist


def _posterior_setup(apply_fn, prior_mean, *, objective, lr, momentum, batch_size, n, sp, delta,
                     p_min, kl_penalty):
    """The static loop of `train_posterior`, the arguments of `_pbb_start` after its first
    (rho_0 and ln sigma_P^2) and the objective's constants but sigma_P^2, in float32 on the
    host: (n, ln(2 sqrt(n)/delta), ln(n/delta), ln sigma_P^2, ln(1/p_min), kl_penalty)."""
    loop = PosteriorLoop(
        apply_fn=apply_fn, unravel=Unravel(prior_mean, jnp.float32), objective=pbb_objective,
        after_step=pbb_after_step, optimiser=("sgd", check_positive(lr, "lr"), float(momentum)),
        batch_size=batch_size, option=OBJECTIVE_INDEX[objective],
    )
    # softplus(rho) = sp  <=>  rho = ln(e^sp - 1), computed without overflow; sigma_P^2 from its
    # float32 logarithm (in `_pbb_start`)
    f32 = np.float32
    log_sp2 = f32(2.0 * math.log(sp))
    log_term = math.log(2.0 * math.sqrt(n) / delta)
    consts = (f32(n), f32(log_term), f32(math.log(n / delta)), log_sp2,
              f32(math.log(1.0 / p_min)), f32(kl_penalty))
    return loop, (f32(inverse_softplus(sp)), log_sp2), consts


@partial(jax.jit, static_argnums=0)
def _pbb_start(optimiser_spec, prior_mean, rho0, log_sp2):
    """The flat float32 prior mean, the loop's starting state (Q at the prior: mean w_P, rho
    `rho0` everywhere; f_lambda's lambda at 1) and sigma_P^2 = exp(`log_sp2`)."""
    w_p = jnp.concatenate([jnp.ravel(a).astype(jnp.float32) for a in jax.tree.leaves(prior_mean)])
    theta = {"mean": w_p, "rho": jnp.full_like(w_p, rho0)}
    return w_p, (theta, optimiser(optimiser_spec).init(theta), jnp.ones((), jnp.float32)), \
        jnp.exp(log_sp2)


@partial(jax.jit, static_argnums=0)
def _pbb_finish(unravel, theta):
    """The trained posterior's mean and std trees, and the flat std."""
    std = jax.nn.softplus(theta["rho"])
    return unravel(theta["mean"]), unravel(std), std


@partial(jax.jit, static_argnums=0)
def zero_one_errors(apply_fn, params, X, y):
    """One network on (X, y): per-example 0-1 errors, their mean, and the numbers of NaN and
    of infinite logits (one compiled program per network and data shape)."""
    logits = apply_fn(params, X)
    err = zero_one(logits, y)
    return err, err.mean(), jnp.sum(jnp.isnan(logits)), jnp.sum(jnp.isinf(logits))


def check_finite_counts(nan: Any, inf: Any, what: str) -> None:
    """Refuses logits of which `nan` are NaN and `inf` infinite (counts from
    `zero_one_errors`), with `check_finite_output`'s message."""
    nan, inf = int(nan), int(inf)
    if nan or inf:
        raise ValueError(f"{what} is not finite ({nan} NaN and {inf} infinite entries, dtype "
                         "float32): the measure would be NaN; check the network and its parameters")


def subset_error(errors: Any, indices: Any) -> float:
    """The mean of the per-example 0-1 `errors` over `indices`, in float32 as the mean of
    `zero_one_errors` on those examples alone gives it (XLA's mean: the sum times the float32
    reciprocal of the count)."""
    count = float(np.sum(np.asarray(errors, np.float64)[np.asarray(indices)]))
    return float(np.float32(count) * (np.float32(1.0) / np.float32(len(indices))))


def net_error(apply_fn, params, X, y) -> float:
    """The 0-1 error of one network on (X, y), float32 inputs."""
    return float(zero_one_errors(apply_fn, params, to_device(X), to_device(y))[1])
