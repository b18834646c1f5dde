"""Neyshabur, Bhojanapalli & Srebro (2018): the PAC-Bayesian spectrally-normalised margin bound."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import check_delta, check_positive, checked_result
from genbounds.core._grid import union_grid
from genbounds.linalg._matrix_norms import frobenius_norm
from genbounds.linalg._method import NormMethod, as_norm_method
from genbounds.losses._margins import margin_loss, training_margins
from genbounds.network._bound_inputs import data_chain, reference_layers
from genbounds.network._layers import augment_biases, check_fits, has_biases
from genbounds.network._norms import measure_layers

NEYSHABUR_REFERENCE = (
    "Neyshabur, Bhojanapalli & Srebro, 'A PAC-Bayesian Approach to Spectrally-Normalized Margin "
    "Bounds for Neural Networks', ICLR 2018, arXiv:1707.09564, Theorem 1 (Lemmas 1 and 2)"
)


def pac_bayes_margin_bound(*, margin_loss: float, kl: float, n: int, delta: float) -> float:
    r"""Neyshabur et al. (2018) Lemma 1: the margin PAC-Bayes bound for one posterior.

    If $P_u[\max_x |f_{w+u}(x) - f_w(x)|_\infty < \gamma/4] \ge 1/2$ for a prior $P$ fixed
    before the data, then with probability at least $1-\delta$ over $n$ examples

    $$L_0(f_w) \le \hat L_\gamma(f_w) + 4\sqrt{\frac{KL(w+u\,\|\,P) + \ln(6n/\delta)}{n-1}}.$$

    Examples:
      >>> round(pac_bayes_margin_bound(margin_loss=0.0, kl=10.0, n=1001, delta=0.05), 6)
      0.589186
    """
    return margin_loss + 4.0 * math.sqrt((kl + math.log(6.0 * n / delta)) / (n - 1.0))


@checked_result
def pac_bayes(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Callable[[Any, Any], Any] | None = None,
    logits: Any = None,
    margin: float | None = None,
    margin_quantile: float | None = None,
    delta: float = 0.05,
    reference: Any = None,
    input_bound: float | None = None,
    method: str | NormMethod = "certified",
    key: jax.Array | None = None,
    failure_probability: float = 1e-6,
    grid_loss: float = 0.05,
    layers: Sequence[str] | None = None,
    **options: Any,
) -> Bound:
    r"""Neyshabur, Bhojanapalli & Srebro (2018), Theorem 1, with the constants of its proof.

    An upper bound on the 0-1 test error of a ReLU network of depth $d$ and width $h$, holding
    with probability at least $1-\delta$:

    $$L_0(f_w) \le \hat L_{\bar\gamma}(f_w) + 4\sqrt{\frac{KL + \ln(6n/\delta_{k})}{n-1}},\qquad
      KL = \frac{\sum_i \|\tilde W_i - M_i\|_F^2}{2\sigma^2},\qquad
      \sigma = \frac{\bar\gamma}{42\, d\, B\, \tilde\beta^{d-1}\sqrt{h \ln(4hd)}}.$$

    * $\hat L_{\bar\gamma}$: fraction of training examples with margin $\le\bar\gamma$.
    * $\tilde W_i = W_i\, \beta / s_i$: the network rescaled (ReLU homogeneity leaves its
      function unchanged) so that every layer has spectral norm at most
      $\beta = (\prod_i s_i)^{1/d}$, with $s_i \ge \|W_i\|_2$ the certified spectral norms.
    * Prior $N(M, \sigma^2 I)$, posterior $N(\tilde w, \sigma^2 I)$: $M_i$ = `reference` (e.g.
      the initialisation: the "distance from initialisation" variant) or 0.
    * Perturbation (Lemma 2): $|f_{w+u}(x) - f_w(x)|_2 \le e B \beta^{d-1}\sum_i\|U_i\|_2$ when
      $\|U_i\|_2 \le \beta/d$ (the proof only needs $\|\tilde W_i\|_2 \le \beta$, so upper bounds
      $s_i$ suffice). Tropp's bound gives $\|U_i\|_2 \le \sigma\sqrt{2h\ln(4hd)}$ for all $i$
      with probability $\ge 1/2$, and $e^2\sqrt2/42 < 1/4$ makes the change $< \bar\gamma/4$.
    * Union bound (our grid; the paper's is not stated with constants): $\tilde\beta$ is the
      largest point of $\{(1+1/d)^k\}$ below $\beta$, so $\beta \le \tilde\beta(1+1/d)$ and
      $\beta^{d-1} \le e\tilde\beta^{d-1}$ as the proof needs; $\bar\gamma$ the largest point of
      $\{(1+r)^k\}$ below $\gamma$; each index $k$ costs $\ln(1/p(k))$, $p(k) = 2/(3(|k|+1)
      (|k|+2))$, so $\delta_k = \delta' p(k_\beta) p(k_\gamma)$ with $\delta'$ = `delta` minus the
      spectral-norm certificates' failure probability.
    * Biases by the augmentation $x \mapsto [x; 1]$ (see `augment_biases`), so $B$ becomes
      $\sqrt{B^2+1}$ and $d$, $h$ are those of the augmented network. A network whose biases
      are all zero (or absent) is bias-free and is bounded as it is, without augmentation.
    * $B$ (`input_bound`) must bound $\|x\|_2$ on the whole input distribution (the theorem's
      $\mathcal X_{B,n}$); by default it is the largest training norm, which is read off the
      sample: the result is then marked ``estimated`` (not certified) and says so in its notes.

    Derivation and the constants' provenance: docs/bounds/pac_bayes.md (Lemma 1's 4, $6m$,
    $m-1$; $\sigma$'s 42 and $\ln(4hd)$: the proof of their Theorem 1 [V-secondary, V-num]).

    Args:
      params: the network's parameters (dense ReLU layers).
      X: training inputs (n, ...); flattened per example.
      y: integer labels (n,).
      apply_fn: ``apply_fn(params, X) -> logits``; or pass ``logits``.
      logits: training logits (n, k), or (n,) for a single binary score read as $(0, f)$.
      margin, margin_quantile: the margin $\gamma > 0$, or the training-margin quantile that
        gives it (default: the 10% quantile).
      delta: failure probability in (0, 1).
      reference: prior mean $M$ (parameters of the same network), default 0.
      input_bound: $B$, a bound on $\|x\|_2$ over the input distribution's support. Without
        it, $B$ is the largest training-input norm: a number read off the sample, so the result
        is marked ``estimated`` and its notes say it is not certified.
      method, key, failure_probability, layers, options: spectral-norm options
        (see `spectral_norms`); ``method`` may be a `genbounds.linalg.NormMethod`.
      grid_loss: the margin grid's ratio $r$: rounding $\gamma$ down loses at most $1+r$.

    Returns:
      A `Bound` whose ``complexity`` is the KL divergence and whose terms hold $\sigma$,
      $\beta$, $\tilde\beta$, $d$, $h$, $B$, the margin loss and the grid indices.

    Raises:
      ValueError, TypeError: bad inputs (delta, margins, shapes, NaN), conv layers, an
        `input_bound` below a training norm, n < 2.

    Examples:
      >>> import numpy as np
      >>> params = {"Dense_0": {"kernel": np.eye(2)}, "Dense_1": {"kernel": np.eye(2)}}
      >>> X = np.array([[1.0, 0.0], [0.0, 1.0]] * 50); y = np.array([0, 1] * 50)
      >>> b = pac_bayes(params, X=X, y=y, logits=X @ np.eye(2), margin=0.5)
      >>> b.vacuous
      True

    References:
      Neyshabur, Bhojanapalli & Srebro, ICLR 2018, arXiv:1707.09564.
      Tropp, "User-friendly tail bounds for sums of random matrices", 2012, arXiv:1004.4389.
    """
    delta = check_delta(delta)
    check_positive(grid_loss, "grid_loss")
    how = as_norm_method(method, {"failure_probability": failure_probability, **options},
                         caller="pac_bayes")
    data = training_margins(params, X=X, y=y, apply_fn=apply_fn, logits=logits, margin=margin,
                            margin_quantile=margin_quantile, caller="pac_bayes")
    X2, logits, m, gamma, margin_note = data
    n = X2.shape[0]
    if n < 2:
        raise ValueError(f"pac_bayes needs n >= 2 training examples (it divides by n - 1), got {n}")

    net, chain = data_chain(params, X=X, X2=X2, logits=logits, apply_fn=apply_fn,
                            layers=layers, conv=None, caller="pac_bayes (Neyshabur et al. 2018)",
                            homogeneous=True, dense_only=True)
    read = chain.layers
    check_fits(read, X2, logits, "pac_bayes")
    biased = has_biases(read)  # zero biases are no biases: augment only for nonzero ones
    aug = augment_biases(read) if biased else tuple(read)
    refs = (reference_layers(reference, net, read, "pac_bayes") if reference is not None
            else None)
    if refs is not None and biased:
        refs = augment_biases(refs)

    max_norm = float(np.sqrt(np.max(np.sum(X2 * X2, axis=1))))
    notes = [margin_note, "biases by augmentation x -> [x; 1]" if biased
             else "no nonzero biases: no augmentation"]
    if input_bound is None:
        B = max_norm
        notes.append(f"NOT CERTIFIED: input_bound B = largest training norm ({B:.6g}), read off "
                     "the sample; the theorem needs ||x|| <= B on the whole distribution, so "
                     "pass input_bound (e.g. sqrt(dim) for inputs in [0, 1]) for a bound")
    else:
        B = check_positive(input_bound, "input_bound")
        if B < max_norm * (1.0 - 1e-12):
            raise ValueError(
                f"input_bound must bound every input norm; got {B!r} but a training input has "
                f"norm {max_norm:.6g}"
            )
    B_aug = math.sqrt(B * B + 1.0) if biased else B

    # The augmented layers' norms, kept in the network's cache (shared with other bounds).
    norms = measure_layers(net, [dataclasses.replace(a, path=str(i)) for i, a in enumerate(aug)],
                           method=how, key=key)
    s = np.asarray(list(norms.values()), dtype=np.float64)
    if np.any(s <= 0.0):
        raise ValueError("params: a layer is all zeros; the network is constant")
    d = len(aug)
    binary = np.ndim(logits) == 1 or np.shape(logits)[-1] == 1
    h = max([aug[0].fan_in] + [a.fan_out for a in aug] + ([2] if binary else []))
    log_beta = float(np.mean(np.log(s)))
    beta = math.exp(log_beta)
    delta_bound = delta - norms.failure_probability
    if delta_bound <= 0.0:
        raise ValueError(
            f"delta={delta} is not larger than the spectral-norm certificates' failure "
            f"probability ({norms.failure_probability:g}); lower failure_probability"
        )

    # Grids: beta~ <= beta <= beta~ (1 + 1/d); gamma_bar <= gamma.
    grid = union_grid(("down", [beta], 1.0 / d), ("down", [gamma], grid_loss))
    ((k_beta,), (k_gamma,)), ((beta_t,), (gamma_bar,)) = grid.k, grid.values
    log_prior = grid.log_prior
    log_delta_k = math.log(delta_bound) - log_prior

    # sigma = gamma / (42 d B beta~^{d-1} sqrt(h ln(4hd)))  (proof of Theorem 1)
    log_sigma = (math.log(gamma_bar) - math.log(42.0 * d * B_aug) - (d - 1) * math.log(beta_t)
                 - 0.5 * math.log(h * math.log(4.0 * h * d)))
    sq_dist = 0.0
    for i, a in enumerate(aug):
        w = np.asarray(a.kernel, np.float64) * (beta / s[i])  # rescaled: ||W~_i|| <= beta
        if refs is not None:
            w = w - np.asarray(refs[i].kernel, np.float64)
        sq_dist += float(frobenius_norm(w)) ** 2
    kl = sq_dist / 2.0 * math.exp(-2.0 * log_sigma)
    loss = float(margin_loss(m, gamma_bar))
    value = pac_bayes_margin_bound(margin_loss=loss, kl=kl, n=n, delta=math.exp(log_delta_k))
    sqrt_term = value - loss

    terms = {
        "margin": gamma, "margin_grid": gamma_bar, "margin_loss": loss, "kl": kl,
        "sigma": math.exp(log_sigma), "beta": beta, "beta_grid": beta_t, "depth": d, "width": h,
        "input_bound": B, "sq_distance": sq_dist, "spectral_norms": list(s),
        "complexity_term": sqrt_term, "log_prior": log_prior, "delta_bound": delta_bound,
        "failure_probability": norms.failure_probability,
        "k_beta": k_beta, "k_gamma": k_gamma,
    }
    return Bound(name="pac_bayes", value=value, complexity=kl, terms=terms, n=n, delta=delta,
                 estimated=norms.estimated or input_bound is None,
                 reference=NEYSHABUR_REFERENCE,
                 notes=tuple(notes + ["prior mean: " + ("reference" if reference is not None
                                                        else "0")]))
