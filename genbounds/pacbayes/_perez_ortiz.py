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
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    check_choice,
    check_int,
    check_key,
    check_n,
)
from genbounds.losses._losses import check_classifier

from ._diverged import check_prior_std
from ._gaussian import DiagonalGaussian
from ._objectives import OBJECTIVES
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
from ._pbb_training import (
    check_finite_counts,
    fit_prior,
    net_error,
    split_keys,
    subset_error,
    train_posterior,
    zero_one_errors,
)
from ._risk_certificate import (
    CERTIFICATE_KEYWORDS,
    risk_certificate,
    split_data,
    stochastic_error_f32,
)


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
        PAC-Bayes objective), ``epochs`` (300 at most), ``lr`` (0.03), ``momentum`` (0.9),
        ``batch_size`` (64), ``p_min`` (1e-5), and the stopping criterion: ``holdout`` (0.2 of
        the prior set held out), ``patience`` (30 epochs), ``weak_error`` (0.2: above it a
        ``WEAK PRIOR`` note); see `learn_prior`.
      posterior: a `PosteriorTraining` (see `train_posterior`): ``objective`` (``"quad"``),
        ``epochs`` (20), ``lr`` (0.001), ``momentum`` (0.95), ``batch_size`` (128), ``p_min``
        (1e-5), ``kl_penalty`` (1).
      certificate: a `Certificate` (see `risk_certificate`): ``num_mc_samples`` (N = 1 000 by
        default; the paper 150 000; a first-order knob: the certificate pays
        $\\ln(2K/\\delta')/N$ on the bound-set error: with a digits run's error and KL, 0.089 at
        N = 1 000 against 0.069 at 10 000, docs/bounds/risk_certificates.md; its time is linear
        in N),
        ``delta_prime`` (0.01, as the paper), ``mc_subset``, ``mc_batch``.
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
      ``prior_net_test_error``, ``majority_vote_test_error``; the prior training's
      ``prior_epochs_run``, ``prior_best_epoch``, ``prior_heldout_error``, ``prior_fit_error``;
      the majority-vote certificates ``majority_vote_first_order``, ``majority_vote_tandem``,
      ``majority_vote_certificate`` (w.p. >= 1 - ``majority_vote_delta``), which bound the
      posterior's majority vote, not the network at the posterior mean; timings
      ``seconds_prior``, ``seconds_posterior``, ``seconds_certificate``) and the chosen
      posterior.

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
    # the logits' finiteness checked by the jitted 0-1 counter, which measures the mean net's
    # training error on the same X at the end (one program for both, no eager forward pass)
    X, y, _ = check_classifier(apply_fn, init_params, X, y, dtype=jnp.float32, finite_check=False)
    X = X.astype(jnp.float32) if jnp.issubdtype(X.dtype, jnp.floating) else X
    init32 = jax.tree.map(
        lambda a: a.astype(jnp.float32) if jnp.issubdtype(jnp.result_type(a), jnp.floating)
        else a, init_params)
    check_finite_counts(*zero_one_errors(apply_fn, init32, X, y)[2:], "apply_fn(params, X)")
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
    k_prior, k_post, k_mc, k_test = split_keys(key, 4)
    n_prior, n = len(split.X_prior), len(split.X_bound)

    X_post, y_post = (X, y) if posterior_data == "all" else (split.X_bound, split.y_bound)
    t0 = time.perf_counter()
    prior_info: dict[str, Any] = {}
    if n_prior > 0:
        prior_mean, prior_info = fit_prior(
            init_params, X=split.X_prior, y=split.y_prior, apply_fn=apply_fn, key=k_prior,
            training=prior, prior_std=stds[0], finite_check=False,
            callback=None if callback is None else partial(callback, "prior"),
        )
    else:
        prior_mean = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), init_params)
    t_prior = time.perf_counter() - t0

    K = len(stds)
    cands = []
    t0 = time.perf_counter()
    t_cert = 0.0
    for i, sp in enumerate(stds):
        q, hist = train_posterior(
            prior_mean, X=X_post, y=y_post, apply_fn=apply_fn, n_bound=n, prior_std=sp,
            key=jax.random.fold_in(k_post, i), delta=delta, training=posterior,
            callback=None if callback is None else partial(callback, f"posterior[{i}]"),
            finite_check=False,
        )
        t1 = time.perf_counter()
        b = risk_certificate(
            q, X=split.X_bound, y=split.y_bound, apply_fn=apply_fn, prior_mean=prior_mean,
            prior_std=sp, key=jax.random.fold_in(k_mc, i), delta=delta,
            certificate=certificate, num_candidates=K, finite_check=False,
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
        prior_net_bound_set_error=subset_error(
            zero_one_errors(apply_fn, prior_mean, X, y)[0], split.bound_indices),
        mean_net_train_error=net_error(apply_fn, q.mean, X, y),
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
            mean_net_test_error=net_error(apply_fn, q.mean, Xt, yt),
            prior_net_test_error=net_error(apply_fn, prior_mean, Xt, yt),
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
