"""Tight risk certificates: data-dependent priors and PAC-Bayes training objectives.

Pérez-Ortiz, Rivasplata, Shawe-Taylor & Szepesvári, "Tighter risk certificates for neural
networks", JMLR 22(227), 2021, arXiv:2007.12911 ("PAC-Bayes with Backprop"). The protocol:

1. **Split** the m training examples at random into a *prior set* (a fraction
   `prior_fraction`) and a *bound set* of n = m - n_prior examples (`split_data`).
2. **Prior**: $P = N(w_P, \\sigma_P^2 I)$ with the mean $w_P$ learnt on the prior set only (by
   ERM, or as the mean of a PAC-Bayes posterior trained there against a data-free prior at the
   initialisation; `learn_prior`). $P$ is a function of the prior set (and of independent
   randomness), hence independent of the bound set: the bound set is an i.i.d. sample given $P$.
3. **Posterior**: $Q = N(\\mu, \\mathrm{diag}(\\sigma^2))$, $\\sigma = \\ln(1 + e^\\rho)$, initialised
   at $P$ and trained by SGD on one of the objectives of `_objectives.py` (evaluated with the
   bounded cross-entropy on minibatches, one weight sample per step, the reparametrisation
   trick) in the posterior-training loop of `_posterior.py` (`train_posterior`). The PAC-Bayes
   bound holds for all posteriors at once, so $Q$ may be trained on any data: the default (as
   the authors' code) trains it on the whole training set.
4. **Certificate** (the only number here that is a bound; `risk_certificate`): the 0-1 error
    of the stochastic net on the *bound set*, $\\hat e_n(Q)$, is estimated from N networks drawn
    from Q and bounded by the sample-convergence bound at $\\delta'$ (Langford & Caruana 2002),
    then the PAC-Bayes-kl bound of Maurer (2004) at $\\delta$ is inverted:

    $$e(Q) \\le \\overline{kl}^{-1}\\Big(\\overline{kl}^{-1}\\big(\\hat e_N, \\tfrac{\\ln(2/\\delta')}{N}\\big),
    \\ \\frac{KL(Q\\|P) + \\ln(2\\sqrt n/\\delta)}{n}\\Big)$$

    with probability at least $1 - \\delta - \\delta'$ over the bound set and the N networks,
    conditionally on the prior set. With a grid of K prior scales $\\sigma_P$, each candidate is
    certified at $\\delta/K$ and $\\delta'/K$ and the smallest certificate is reported (union
    bound). The $\\lambda$ of `f_lambda` needs no union bound: it only shapes training; the
    certificate is the kl inversion, which holds for every Q simultaneously.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    check_choice,
    check_delta,
    check_int,
    check_key,
    check_n,
    check_positive,
    check_unit_interval,
)
from genbounds.losses._losses import check_classifier, cross_entropy, zero_one

from ._diverged import check_prior_std, check_progress, check_trained, inverse_softplus
from ._gaussian import DiagonalGaussian, Unravel, flatten
from ._objectives import OBJECTIVE_INDEX, OBJECTIVES, pbb_after_step, pbb_objective
from ._options import (
    CERTIFICATE,
    POSTERIOR_TRAINING,
    PRIOR_TRAINING,
    Certificate,
    HeldOut,
    PosteriorTraining,
    PriorTraining,
    bundle_keywords,
    check_bundle,
    keyword_route,
)
from ._posterior import PosteriorLoop, init_state, run_posterior_loop
from ._risk_certificate import (
    CERTIFICATE_KEYWORDS,
    risk_certificate,
    split_data,
    stochastic_error_f32,
)

_TRAINING_KEYWORDS = ("epochs", "batch_size", "lr", "momentum", "objective", "p_min")


def _as_f32(X):
    X = jnp.asarray(X)
    return X.astype(jnp.float32) if jnp.issubdtype(X.dtype, jnp.floating) else X


# ----------------------------------------------------------------------------------------------
# The prior, by ERM or by a PAC-Bayes objective.
# ----------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _erm_epoch(apply_fn, unravel, sgd, batch, state, X, y, key):
    tx = optax.sgd(sgd[0], momentum=sgd[1])
    w, opt = state
    m = X.shape[0]
    steps = m // batch
    perm = jax.random.permutation(key, m)[: steps * batch].reshape(steps, batch)

    def loss(w, xb, yb):
        return cross_entropy(apply_fn(unravel(w), xb), yb).mean()

    def step(carry, idx):
        w, opt = carry
        val, g = jax.value_and_grad(loss)(w, X[idx], y[idx])
        u, opt = tx.update(g, opt, w)
        return (optax.apply_updates(w, u), opt), val

    (w, opt), losses = jax.lax.scan(step, (w, opt), perm)
    return (w, opt), losses.mean()


@partial(jax.jit, static_argnums=(0, 1))
def _heldout(apply_fn, unravel, w, X, y):
    logits = apply_fn(unravel(w), X)
    return zero_one(logits, y).mean(), cross_entropy(logits, y).mean()


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
              callback=None) -> tuple[Any, dict[str, Any]]:
    """`learn_prior` and what its training did: ``(prior_mean, info)`` with ``info`` holding
    ``epochs_run``, ``best_epoch``, ``n_fit``, ``n_heldout``, ``heldout_error`` (None without a
    held-out part), ``fit_error`` (the prior net's 0-1 error on the part it was fitted on) and
    ``stopped_early``."""
    opt = check_bundle(training, PriorTraining, "training")
    key = check_key(key)
    objective = check_choice(opt.objective, "objective", ("erm",) + OBJECTIVES)
    X, y, _ = check_classifier(apply_fn, init_params, X, y, dtype=jnp.float32)
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
            prior_std=prior_std, key=key, callback=callback,
            training=PosteriorTraining(objective=objective, epochs=epochs, lr=opt.lr,
                                       momentum=opt.momentum, batch_size=batch_size,
                                       p_min=opt.p_min),
        )
        fit_err = _error(apply_fn, q.mean, X, y)
        return q.mean, {"epochs_run": epochs, "best_epoch": epochs, "n_fit": m, "n_heldout": 0,
                        "heldout_error": None, "fit_error": fit_err, "stopped_early": False}
    k_split, k_train = jax.random.split(key)
    n_held = int(round(holdout * m))
    if holdout > 0 and not 1 <= n_held <= m - 1:
        raise ValueError(f"holdout={holdout:g} of the {m} prior examples leaves no held-out or no "
                         "fitting example; use more prior data or holdout=0")
    perm = np.asarray(jax.random.permutation(k_split, m))
    Xf, yf = _as_f32(X), jnp.asarray(y)
    Xh, yh = Xf[perm[:n_held]], yf[perm[:n_held]]
    Xt, yt = Xf[perm[n_held:]], yf[perm[n_held:]]
    batch_size = min(check_n(opt.batch_size, "batch_size"), int(Xt.shape[0]))
    w, unravel = flatten(init_params, jnp.float32), Unravel(init_params, jnp.float32)
    sgd = (check_positive(opt.lr, "lr"), float(opt.momentum))
    state = (w, optax.sgd(*sgd).init(w))
    settings = f"ERM with lr={sgd[0]:g}, momentum={sgd[1]:g}, batch_size={batch_size}"
    best, best_w, best_e, e = (math.inf, math.inf), state[0], 0, 0
    for e in range(epochs):
        state, loss = _erm_epoch(apply_fn, unravel, sgd, batch_size, state, Xt, yt,
                                 jax.random.fold_in(k_train, e))
        metrics = {"cross_entropy": float(loss)}
        check_progress(metrics["cross_entropy"], caller="learn_prior", what="mean cross-entropy",
                       at=f"epoch {e + 1} of {epochs}", settings=settings)
        if n_held:
            err, ce = (float(v) for v in _heldout(apply_fn, unravel, state[0], Xh, yh))
            metrics.update(heldout_error=err, heldout_cross_entropy=ce)
            if (err, ce) < best:
                best, best_w, best_e = (err, ce), state[0], e + 1
        if callback is not None:
            callback(e, metrics)
        if n_held and e + 1 - best_e >= patience:
            break
    w_out = best_w if n_held else state[0]
    check_trained({"prior mean": w_out}, caller="learn_prior", settings=settings)
    fit_err = float(_heldout(apply_fn, unravel, w_out, Xt, yt)[0])
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
    X, y, _ = check_classifier(apply_fn, prior_mean, X, y, dtype=jnp.float32)
    n = check_n(n_bound, "n_bound")
    if n < 2:
        raise ValueError(f"n_bound must be >= 2, got {n}")
    epochs = check_n(opt.epochs, "epochs")
    batch_size = min(check_n(opt.batch_size, "batch_size"), int(X.shape[0]))
    delta = check_delta(delta)
    p_min = check_unit_interval(opt.p_min, "p_min", closed=False)
    kl_penalty = check_positive(opt.kl_penalty, "kl_penalty")
    w_p, unravel = flatten(prior_mean, jnp.float32), Unravel(prior_mean, jnp.float32)
    # softplus(rho) = sp  <=>  rho = ln(e^sp - 1), computed without overflow.
    rho0 = inverse_softplus(sp)
    theta = {"mean": w_p, "rho": jnp.full_like(w_p, rho0)}
    loop = PosteriorLoop(
        apply_fn=apply_fn, unravel=unravel, objective=pbb_objective, after_step=pbb_after_step,
        optimiser=("sgd", check_positive(opt.lr, "lr"), float(opt.momentum)),
        batch_size=batch_size, option=OBJECTIVE_INDEX[objective],
    )
    log_term = math.log(2.0 * math.sqrt(n) / delta)
    state = init_state(loop, theta, jnp.asarray(1.0, jnp.float32))  # carries f_lambda's lambda
    log_sp2 = jnp.asarray(2.0 * math.log(sp), jnp.float32)
    consts = (
        *(jnp.asarray(v, jnp.float32) for v in (n, log_term, math.log(n / delta))),
        log_sp2, jnp.exp(log_sp2),  # sigma_P^2 from its float32 logarithm
        *(jnp.asarray(v, jnp.float32) for v in (math.log(1.0 / p_min), kl_penalty)),
    )
    Xf = _as_f32(X)
    hist: dict[str, list[float]] = {k: [] for k in ("objective", "loss", "kl", "error", "lam")}
    settings = (f"objective {objective!r}, lr={float(opt.lr):g}, momentum={float(opt.momentum):g}, "
                f"prior_std={sp:g}")
    for e in range(epochs):
        state, h = run_posterior_loop(loop, state, w_p, Xf, y, jax.random.fold_in(key, e), consts)
        metrics = dict(zip(hist, (float(v) for v in h), strict=True))
        check_progress(metrics["objective"], caller="train_posterior", what="objective",
                       at=f"epoch {e + 1} of {epochs}", settings=settings)
        for k, v in metrics.items():
            hist[k].append(v)
        if callback is not None:
            callback(e, metrics)
    theta = state[0]
    std = jax.nn.softplus(theta["rho"])
    check_trained({"posterior mean": theta["mean"], "posterior std": std},
                  caller="train_posterior", settings=settings, positive=("posterior std",))
    post = DiagonalGaussian(mean=unravel(theta["mean"]), std=unravel(std))
    return post, hist


# ----------------------------------------------------------------------------------------------
# The whole protocol.
# ----------------------------------------------------------------------------------------------


def _weak_prior_note(prior: PriorTraining, info: dict[str, Any]) -> tuple[str, ...]:
    """A note when the prior net is weak: its held-out error (fit error without a held-out
    part) above ``prior.weak_error``."""
    if not info:
        return ()
    err = info["heldout_error"] if info["heldout_error"] is not None else info["fit_error"]
    where = ("held-out part of the prior set" if info["heldout_error"] is not None
             else "prior set it was fitted on")
    if err <= float(prior.weak_error):
        return ()
    return (f"WEAK PRIOR: the prior network errs on {err:.3f} of the {where} (threshold "
            f"weak_error={float(prior.weak_error):g}) after {info['epochs_run']} epochs; the "
            "certificate is rarely much below the prior's error: train the prior longer or "
            "with another learning rate (PriorTraining)",)


def _error(apply_fn, params, X, y) -> float:
    return float(zero_one(apply_fn(params, _as_f32(X)), jnp.asarray(y)).mean())


@keyword_route("X_test", "y_test", "test_mc_samples", "test_mc_subset")
def _test_route(test: HeldOut | None, kw: dict[str, Any]) -> HeldOut | None:
    """The earlier ``X_test``, ``y_test``, ``test_mc_samples``, ``test_mc_subset`` keywords as a
    `HeldOut` (None without test data)."""
    Xt = kw.get("X_test", None if test is None else test.X)
    yt = kw.get("y_test", None if test is None else test.y)
    if (Xt is None) != (yt is None):
        raise ValueError("X_test and y_test must be given together")
    if Xt is None:
        return None
    base = HeldOut(Xt, yt) if test is None else dataclasses.replace(test, X=Xt, y=yt)
    fields = {"test_mc_samples": "num_mc_samples", "test_mc_subset": "mc_subset"}
    return dataclasses.replace(base, **{f: kw[k] for k, f in fields.items() if k in kw})


@bundle_keywords(
    prior={"prior_fraction": "fraction", "split_seed": "split_seed",
           "prior_objective": "objective", "prior_epochs": "epochs", "prior_lr": "lr",
           "prior_momentum": "momentum", "batch_size": "batch_size", "p_min": "p_min"},
    posterior={k: k for k in ("objective", "epochs", "lr", "momentum", "batch_size", "p_min")},
    certificate=CERTIFICATE_KEYWORDS,
    test=_test_route,
)
def perez_ortiz(
    init_params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Any,
    key: jax.Array,
    delta: float = 0.025,
    prior_stds: Sequence[float] = (0.03,),
    posterior_data: str = "all",
    prior: PriorTraining = PRIOR_TRAINING,
    posterior: PosteriorTraining = POSTERIOR_TRAINING,
    certificate: Certificate = CERTIFICATE,
    test: HeldOut | None = None,
    callback: Callable[[str, int, dict[str, float]], None] | None = None,
) -> tuple[Bound, DiagonalGaussian]:
    """A tight risk certificate for a Flax net: data-dependent prior, PAC-Bayes training, bound.

    The protocol of Pérez-Ortiz, Rivasplata, Shawe-Taylor & Szepesvári (2021) (see the module
    docs and docs/bounds/risk_certificates.md):

    1. split (X, y) at random into a prior set (``prior.fraction``) and a bound set of n
       examples;
    2. learn the prior mean on the prior set only (`learn_prior`, from `init_params`;
       ``fraction=0`` keeps the data-free prior at `init_params`);
    3. for each prior scale $\\sigma_P$ in `prior_stds` (K of them) train a posterior
       (`train_posterior`) on the whole training set (``posterior_data="all"``) or on the bound
       set only (``"bound"``), with n = the bound-set size in the objective;
    4. certify each (`risk_certificate`, at $\\delta/K$ and $\\delta'/K$) and keep the smallest.

    The result bounds, with probability $\\ge 1 - \\delta - \\delta'$ over the bound set and the
    Monte-Carlo networks (conditionally on the prior set), the expected 0-1 error of the
    stochastic net Q. Given test data, the terms also report beside it the stochastic test error
    (Monte Carlo), the test errors of the posterior mean and of the prior net.

    Args:
      init_params: the initialisation (data-free), a parameter tree.
      X, y: the training set.
      apply_fn: ``apply_fn(params, X) -> logits`` of a Flax net (MLP, CNN, ...); pure JAX.
      key: PRNG key (prior training, posterior training, Monte Carlo).
      delta: confidence of the PAC-Bayes-kl bound; default delta = 0.025 as in Pérez-Ortiz et
        al. 2021 (their experiments; the value of Dziugaite & Roy 2017, Section 3.1), not the
        library-wide 0.05.
      prior_stds: grid of prior scales $\\sigma_P$ (paper's MNIST runs: 0.03 or so); each one
        costs a posterior training and log K in the bound.
      posterior_data: ``"all"`` (the authors' choice) or ``"bound"``.
      prior: a `PriorTraining`: ``fraction`` of X for the prior, in [0, 1) (0.5, the paper's
        MNIST runs), ``split_seed`` of the prior/bound split (0), ``objective`` (``"erm"`` or a
        PAC-Bayes objective), ``epochs`` (20), ``lr`` (0.01), ``momentum`` (0.95),
        ``batch_size`` (128), ``p_min`` (1e-5).
      posterior: a `PosteriorTraining` (see `train_posterior`): ``objective`` (``"quad"``),
        ``epochs`` (20), ``lr`` (0.001), ``momentum`` (0.95), ``batch_size`` (128), ``p_min``
        (1e-5), ``kl_penalty`` (1).
      certificate: a `Certificate` (see `risk_certificate`): ``num_mc_samples`` (N = 1 000 by
        default; the paper 150 000), ``delta_prime`` (0.01, as the paper), ``mc_subset``,
        ``mc_batch``.
      test: optional `HeldOut` data (``X``, ``y``, ``num_mc_samples`` = 200, ``mc_subset``) for
        the reported (not certified) test errors.
      callback: ``callback(stage, epoch, metrics)``, stage ``"prior"`` or ``"posterior[i]"``.

    The earlier keywords are accepted and set the bundles' fields: ``prior_fraction``,
    ``split_seed``, ``prior_objective``, ``prior_epochs``, ``prior_lr``, ``prior_momentum``
    (`prior`); ``objective``, ``epochs``, ``lr``, ``momentum`` (`posterior`); ``batch_size``
    and ``p_min`` (both); ``delta_prime``, ``num_mc_samples``, ``mc_subset``, ``mc_batch``
    (`certificate`); ``X_test`` and ``y_test`` (together), ``test_mc_samples``,
    ``test_mc_subset`` (`test`).

    Returns:
      ``(bound, posterior)``: the smallest certificate (terms of `risk_certificate` plus
      ``n_prior``, ``n_train_posterior``, ``prior_fraction``, ``objective``, the per-scale
      certificates ``candidates``, ``prior_net_bound_set_error``, ``mean_net_train_error`` and,
      with test data, ``stochastic_test_error`` (+ ``_stderr``), ``mean_net_test_error``,
      ``prior_net_test_error``; timings) and the chosen posterior.

    Raises:
      ValueError, TypeError: bad data or settings.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from genbounds.pacbayes import Certificate, PosteriorTraining, PriorTraining
      >>> X = np.random.default_rng(0).normal(size=(400, 2)); y = (X[:, 0] > 0).astype(int)
      >>> f = lambda p, X: X @ p["w"] + p["b"]
      >>> w0 = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
      >>> b, q = perez_ortiz(w0, X=X, y=y, apply_fn=f, key=jax.random.key(0),
      ...                    prior=PriorTraining(epochs=5), posterior=PosteriorTraining(epochs=5),
      ...                    certificate=Certificate(num_mc_samples=100))
      >>> 0.0 < b.value < 0.5
      True

    References:
      Pérez-Ortiz, Rivasplata, Shawe-Taylor, Szepesvári, Tighter risk certificates for neural
      networks, JMLR 22(227), 2021, arXiv:2007.12911.
    """
    prior = check_bundle(prior, PriorTraining, "prior")
    posterior = check_bundle(posterior, PosteriorTraining, "posterior")
    certificate = check_bundle(certificate, Certificate, "certificate")
    if test is not None:
        check_bundle(test, HeldOut, "test")
    key = check_key(key)
    check_int(prior.split_seed, "split_seed", minimum=0)
    X, y, _ = check_classifier(apply_fn, init_params, X, y, dtype=jnp.float32)
    check_choice(posterior.objective, "objective", OBJECTIVES)
    check_choice(prior.objective, "prior_objective", ("erm",) + OBJECTIVES)
    check_choice(posterior_data, "posterior_data", ("all", "bound"))
    stds = [check_prior_std(s, f"prior_stds[{i}]")
            for i, s in enumerate(np.atleast_1d(np.asarray(prior_stds)))]
    if not stds:
        raise ValueError("prior_stds must hold at least one scale, got an empty sequence")
    t_all = time.perf_counter()
    split = split_data(np.asarray(X), np.asarray(y), prior_fraction=prior.fraction,
                       seed=prior.split_seed)
    k_prior, k_post, k_mc, k_test = jax.random.split(key, 4)
    n_prior, n = len(split.X_prior), len(split.X_bound)

    t0 = time.perf_counter()
    prior_info: dict[str, Any] = {}
    if n_prior > 0:
        prior_mean, prior_info = fit_prior(
            init_params, X=split.X_prior, y=split.y_prior, apply_fn=apply_fn, key=k_prior,
            training=prior, prior_std=stds[0],
            callback=None if callback is None else partial(callback, "prior"),
        )
    else:
        prior_mean = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), init_params)
    t_prior = time.perf_counter() - t0

    X_post, y_post = (X, y) if posterior_data == "all" else (split.X_bound, split.y_bound)
    K = len(stds)
    cands = []
    t0 = time.perf_counter()
    t_cert = 0.0
    for i, sp in enumerate(stds):
        q, hist = train_posterior(
            prior_mean, X=X_post, y=y_post, apply_fn=apply_fn, n_bound=n, prior_std=sp,
            key=jax.random.fold_in(k_post, i), delta=delta, training=posterior,
            callback=None if callback is None else partial(callback, f"posterior[{i}]"),
        )
        t1 = time.perf_counter()
        b = risk_certificate(
            q, X=split.X_bound, y=split.y_bound, apply_fn=apply_fn, prior_mean=prior_mean,
            prior_std=sp, key=jax.random.fold_in(k_mc, i), delta=delta,
            certificate=certificate, num_candidates=K,
        )
        t_cert += time.perf_counter() - t1
        cands.append((b, q, hist))
    t_post = time.perf_counter() - t0
    best = min(range(K), key=lambda i: cands[i][0].value)
    bound, q, hist = cands[best]
    terms = dict(bound.terms)
    terms.update(
        n_prior=n_prior,
        n_train_posterior=int(X_post.shape[0]),
        prior_fraction=float(prior.fraction),
        objective=posterior.objective,
        prior_objective=prior.objective if n_prior else "none (data-free prior at init)",
        posterior_data=posterior_data,
        candidates=[{"prior_std": s, "certificate": c[0].value, "kl": c[0].terms["kl"]}
                    for s, c in zip(stds, cands, strict=True)],
        final_objective=hist["objective"][-1],
        prior_net_bound_set_error=_error(apply_fn, prior_mean, split.X_bound, split.y_bound),
        mean_net_train_error=_error(apply_fn, q.mean, X, y),
        seconds_prior=t_prior,
        seconds_posterior_and_certificate=t_post,
        seconds_posterior=t_post - t_cert,
        seconds_certificate=t_cert,
    )
    terms.update({f"prior_{k}": v for k, v in prior_info.items()})
    if test is not None:
        Xt, yt, _ = check_classifier(apply_fn, init_params, test.X, test.y, x_name="X_test",
                                     y_name="y_test", dtype=jnp.float32)
        st = stochastic_error_f32(apply_fn, q, Xt, yt, k_test,
                                  check_n(test.num_mc_samples, "test_mc_samples"),
                                  test.mc_subset, certificate.mc_batch,
                                  caller="perez_ortiz (stochastic test error)",
                                  votes=test.mc_subset is None)
        terms.update(
            stochastic_test_error=st["error"],
            stochastic_test_error_stderr=st["stderr"],
            mean_net_test_error=_error(apply_fn, q.mean, Xt, yt),
            prior_net_test_error=_error(apply_fn, prior_mean, Xt, yt),
        )
        if "majority_vote_error" in st:
            terms["majority_vote_test_error"] = st["majority_vote_error"]
            terms["majority_vote_test_networks"] = st["num_samples"]
    terms["seconds_total"] = time.perf_counter() - t_all
    notes = bound.notes + (
        f"prior mean learnt on {n_prior} examples (prior set) by {terms['prior_objective']}; "
        f"posterior trained on {terms['n_train_posterior']} examples ({posterior_data}); "
        f"certificate on the other {n} (bound set)",
        "test errors in terms are measurements on held-out data, not part of the bound; "
        "mean_net_test_error (the network at the posterior's mean weights) is covered by no "
        "certificate here, majority_vote_test_error (the vote of the test networks) is the "
        "measured counterpart of majority_vote_certificate",
    ) + _weak_prior_note(prior, prior_info)
    return dataclasses.replace(bound, terms=terms, notes=notes), q
