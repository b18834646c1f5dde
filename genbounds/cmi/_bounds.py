"""Evaluated conditional-mutual-information bounds on the expected generalisation gap.

Setting (Steinke & Zakynthinou 2020): a supersample $\\tilde Z \\in \\mathcal Z^{n \\times 2}$ of
n pairs drawn i.i.d., a mask $U \\sim \\mathrm{Unif}\\{0,1\\}^n$ independent of it; the algorithm
trains on $S_U = (\\tilde Z_{i, U_i})_i$ and the other element of each pair is a fresh test
example. With $L_i^u = \\ell(W, \\tilde Z_{i,u}) \\in [0, 1]$, the generalisation gap of one run is
$\\frac1n \\sum_i (L_i^{1-U_i} - L_i^{U_i})$, and its expectation over $\\tilde Z$, $U$ and the
algorithm's randomness is the algorithm's expected gap $E[L_\\mathcal{D}(W) - L_S(W)]$.

Each bound below is a statement about that **expectation**, not a high-probability bound on one
trained network. The bounds are disintegrated: conditional on the drawn supersample(s), with the
mutual informations $I^{\\tilde z}(\\cdot\\,; U_i)$ estimated by the plug-in estimator over the K
masks (`_mi.py`); averaged over the supersamples when several were drawn. Because the
information terms are estimates (biased, from K runs), every result is ``estimated=True`` and
reports a bootstrap over the masks (K runs resampled with replacement within each supersample,
the whole bound recomputed) as ``bootstrap_std`` and ``bootstrap_interval`` (5th, 95th
percentiles): a measure of the estimate's spread over masks, not a confidence interval for the
true information.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from genbounds.cmi._mi import bootstrap_weights, plugin_mi, symbols
from genbounds.core._bound import Bound
from genbounds.core._checks import NotBoundable, check_array, check_int
from genbounds.pacbayes._kl import kl_inverse

REFERENCES = {
    "fcmi": "Harutyunyan, Raginsky, Ver Steeg, Galstyan. Information-theoretic generalization "
            "bounds for black-box learning algorithms. NeurIPS 2021, arXiv:2110.01584 (sample-wise f-CMI bound)",
    "ecmi": "Hellström, Durisi. A new family of generalization bounds using samplewise evaluated "
            "CMI. NeurIPS 2022, arXiv:2210.06422 (square-root e-CMI bound)",
    "ldcmi": "Wang, Mao. Tighter information-theoretic generalization bounds from supersamples. "
             "ICML 2023, arXiv:2302.02432 (loss-difference CMI bound)",
    "interpolating": "Wang, Mao. Tighter information-theoretic generalization bounds from "
                     "supersamples. ICML 2023, arXiv:2302.02432 (interpolating regime)",
    "binary_kl": "Hellström, Durisi. A new family of generalization bounds using samplewise "
                 "evaluated CMI. NeurIPS 2022, arXiv:2210.06422 (binary-kl e-CMI bound)",
}
_COMMON_NOTES = (
    "bounds the expected generalisation gap of the training algorithm (expectation over masks, "
    "training randomness and supersamples), not one trained network with probability 1 - delta",
    "disintegrated: conditional on the drawn supersample(s); loss in [0, 1]",
    "information terms are plug-in estimates over K masks (biased); bootstrap over masks in "
    "terms['bootstrap_std'], terms['bootstrap_interval']",
)


def _as_stack(x: Any, name: str, rank: int) -> np.ndarray:
    """An array of rank `rank` (one supersample) or `rank + 1` (S supersamples), as S-first."""
    a = np.asarray(check_array(x, name, ndim=(rank, rank + 1)))
    return a[None] if a.ndim == rank else a


def _check_masks(masks: Any, shape: tuple[int, ...]) -> np.ndarray:
    m = _as_stack(masks, "masks", 2)
    if m.shape != shape:
        raise ValueError(f"masks must have shape {shape} (supersamples, masks K, pairs n) to match "
                         f"the losses, got {m.shape}")
    if not np.all((m == 0) | (m == 1)):
        raise ValueError("masks must hold only 0 and 1 (which element of each pair trains)")
    if m.shape[1] < 2:
        raise ValueError(f"masks: at least 2 masks are needed to estimate an information, got "
                         f"{m.shape[1]}")
    return m.astype(np.int64)


def _check_losses(losses: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    L = _as_stack(losses, "losses", 3).astype(np.float64)
    if L.shape[-1] != 2:
        raise ValueError(f"losses must have shape (S, K, n, 2) or (K, n, 2) (the loss on both "
                         f"elements of each pair), got {L.shape}")
    if np.any(L < 0) or np.any(L > 1):
        raise ValueError(f"losses must lie in [0, 1] (the bounds assume a loss in [0, 1]), got "
                         f"range [{L.min():g}, {L.max():g}]")
    return L, _check_masks(masks, L.shape[:3])


def zero_one_losses(predictions: Any, labels: Any) -> np.ndarray:
    """0-1 losses (S, K, n, 2) of predicted labels (S, K, n, 2) against labels (S, n, 2)."""
    p = _as_stack(predictions, "predictions", 3)
    y = np.asarray(check_array(labels, "labels", ndim=(2, 3)))
    y = y[None] if y.ndim == 2 else y
    if y.shape != (p.shape[0], p.shape[2], 2):
        raise ValueError(f"labels must have shape {(p.shape[0], p.shape[2], 2)} to match "
                         f"predictions of shape {p.shape}, got {y.shape}")
    return (p != y[:, None]).astype(np.float64)


def _errors(L: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training and test loss of each run: (S, K) each."""
    train = np.take_along_axis(L, m[..., None], axis=-1)[..., 0].mean(axis=-1)
    test = np.take_along_axis(L, (1 - m)[..., None], axis=-1)[..., 0].mean(axis=-1)
    return train, test


def _assemble(name: str, mi_of: Callable[[np.ndarray | None], np.ndarray], L: np.ndarray,
              m: np.ndarray, gap_bound_of: Callable[[np.ndarray, np.ndarray], np.ndarray],
              *, num_bootstrap: int, seed: int, variable: str, extra_notes: tuple[str, ...] = (),
              value_is_test_bound: bool = False) -> Bound:
    """Estimate, bootstrap and package one bound.

    `mi_of(weights)` gives the plug-in MI (S, n) or, with weights (B, S, K), (B, S, n);
    `gap_bound_of(mi, train)` maps MI (..., S, n) and the mean training loss (...) to the gap
    bound (...), or to the test-loss bound when `value_is_test_bound`.
    """
    num_bootstrap = check_int(num_bootstrap, "num_bootstrap", minimum=0)
    S, K, n = m.shape
    train, test = _errors(L, m)
    train_mean, test_mean = float(train.mean()), float(test.mean())
    mi = mi_of(None)
    out = float(gap_bound_of(mi, np.asarray(train_mean)))
    if value_is_test_bound:
        value, gap_bound = out, out - train_mean
    else:
        value, gap_bound = train_mean + out, out
    terms: dict[str, Any] = {
        "gap_bound": gap_bound, "train_error": train_mean, "test_error": test_mean,
        "mean_gap": test_mean - train_mean, "mean_mi": float(mi.mean()), "max_mi": float(mi.max()),
        "mi": mi.mean(axis=0), "num_masks": K, "num_supersamples": S,
        "gap_std_over_masks": float((test - train).std(ddof=1)) if K > 1 else float("nan"),
        "num_bootstrap": num_bootstrap, "information": variable,
    }
    if num_bootstrap:
        w = bootstrap_weights(np.random.default_rng(seed), num_bootstrap, S, K)
        mi_b = mi_of(w)
        train_b = np.einsum("bsk,sk->b", w, train) / (S * K)
        outs = np.asarray(gap_bound_of(mi_b, train_b), np.float64)
        vals = outs if value_is_test_bound else train_b + outs
        terms["bootstrap_std"] = float(vals.std(ddof=1)) if num_bootstrap > 1 else float("nan")
        terms["bootstrap_interval"] = [float(np.quantile(vals, 0.05)),
                                       float(np.quantile(vals, 0.95))]
    return Bound(name=name, value=value, complexity=float(mi.mean()), terms=terms, n=n,
                 delta=None, estimated=True, reference=REFERENCES[name.removeprefix("cmi_")],
                 notes=_COMMON_NOTES + extra_notes)


def _mi_fn(sym: np.ndarray, m: np.ndarray, k: int) -> Callable[[np.ndarray | None], np.ndarray]:
    return lambda w: plugin_mi(sym, m, k, w)


def _sqrt_gap(mi: np.ndarray, train: np.ndarray) -> np.ndarray:
    # mean_i sqrt(2 I_i), averaged over supersamples: the 1-sub-Gaussian step of each bound.
    return np.sqrt(2.0 * mi).mean(axis=(-2, -1))


def fcmi_bound(predictions: Any, labels: Any, masks: Any, *, num_bootstrap: int = 200,
               seed: int = 0) -> Bound:
    """The sample-wise f-CMI bound (Harutyunyan et al. 2021) on the expected 0-1 gap.

    $$\\big|E[L_\\mathcal{D}(W) - L_S(W)]\\big| \\le \\frac1n \\sum_{i=1}^n
      E_{\\tilde Z} \\sqrt{2\\, I^{\\tilde Z}(F_i; U_i)},$$

    with $F_i = (f_W(\\tilde X_{i,0}), f_W(\\tilde X_{i,1}))$ the pair of predicted labels
    (C² symbols) and the loss a function of the prediction and the label with values in [0, 1]
    (here the 0-1 loss). The proof: $(-1)^{U_i}(\\ell(F_i, 1) - \\ell(F_i, 0))$ lies in
    [-1, 1], hence is 1-sub-Gaussian under the product of the marginals, and Donsker-Varadhan
    gives the square root.

    Args:
      predictions: predicted labels, shape (K, n, 2) or (S, K, n, 2): run k's prediction on both
        elements of each pair, for S supersamples and K masks.
      labels: true labels, (n, 2) or (S, n, 2).
      masks: (K, n) or (S, K, n) in {0, 1}: which element of each pair run k trained on.
      num_bootstrap: bootstrap resamples of the masks for the spread (0 to skip).
      seed: seed of the bootstrap.

    Returns:
      A `Bound`: ``value`` = mean training error + the gap bound (a bound on the algorithm's
      expected test error), ``complexity`` = mean plug-in MI (nats); ``terms``: ``gap_bound``,
      ``mean_gap`` (measured), ``train_error``, ``test_error``, ``mi`` per pair, bootstrap spread.

    Raises:
      ValueError, TypeError: shapes that do not match, masks not in {0, 1}, fewer than 2 masks.

    Examples:
      >>> import numpy as np
      >>> masks = np.array([[0], [1]]); labels = np.array([[0, 1]])
      >>> preds = np.array([[[0, 0]], [[1, 1]]])  # each run predicts its training label
      >>> round(fcmi_bound(preds, labels, masks, num_bootstrap=0).terms["gap_bound"], 6)
      1.17741

    References:
      Harutyunyan, Raginsky, Ver Steeg & Galstyan, Information-theoretic generalization bounds
      for black-box learning algorithms, NeurIPS 2021, arXiv:2110.01584 (the sample-wise f-CMI
      bound); Steinke &
      Zakynthinou, Reasoning about generalization via conditional mutual information, COLT 2020,
      arXiv:2001.09122.
    """
    L = zero_one_losses(predictions, labels)
    P = _as_stack(predictions, "predictions", 3)
    if not np.issubdtype(P.dtype, np.integer):
        raise TypeError(f"predictions must be integer labels, got dtype {P.dtype}")
    m = _check_masks(masks, P.shape[:3])
    sym, k = symbols(P, axis_pairs=True)
    return _assemble("fcmi", _mi_fn(sym, m, k), L, m, _sqrt_gap, num_bootstrap=num_bootstrap,
                     seed=seed, variable="pair of predicted labels (f-CMI)")


def ecmi_bound(losses: Any, masks: Any, *, num_bootstrap: int = 200, seed: int = 0) -> Bound:
    """The square-root e-CMI bound (Hellström & Durisi 2022) on the expected gap.

    $$\\big|E[L_\\mathcal{D}(W) - L_S(W)]\\big| \\le \\frac1n \\sum_{i=1}^n
      E_{\\tilde Z} \\sqrt{2\\, I^{\\tilde Z}(\\Lambda_i; U_i)}, \\qquad
      \\Lambda_i = (L_i^0, L_i^1),$$

    the pair of losses in [0, 1] on the two elements of pair i (a function of the f-CMI pair, so
    never larger than f-CMI by data processing). The losses must take finitely many values
    (the MI is a plug-in over discrete symbols): the 0-1 loss, or a quantised loss.

    Args:
      losses: (K, n, 2) or (S, K, n, 2) in [0, 1], run k's loss on both elements of pair i.
      masks: (K, n) or (S, K, n) in {0, 1}.
      num_bootstrap: bootstrap resamples of the masks (0 to skip).
      seed: seed of the bootstrap.

    Returns:
      A `Bound` as in `fcmi_bound` (``value`` = training error + gap bound).

    References:
      Hellström & Durisi, A new family of generalization bounds using samplewise evaluated CMI,
      NeurIPS 2022, arXiv:2210.06422.
    """
    L, m = _check_losses(losses, masks)
    sym, k = symbols(L, axis_pairs=True)
    return _assemble("ecmi", _mi_fn(sym, m, k), L, m, _sqrt_gap, num_bootstrap=num_bootstrap,
                     seed=seed, variable="pair of losses (e-CMI)")


def ldcmi_bound(losses: Any, masks: Any, *, num_bootstrap: int = 200, seed: int = 0) -> Bound:
    """The loss-difference CMI bound (Wang & Mao 2023) on the expected gap.

    $$\\big|E[L_\\mathcal{D}(W) - L_S(W)]\\big| \\le \\frac1n \\sum_{i=1}^n
      E_{\\tilde Z} \\sqrt{2\\, I^{\\tilde Z}(\\Delta_i; U_i)}, \\qquad
      \\Delta_i = L_i^1 - L_i^0 \\in [-1, 1].$$

    The gap of pair i is $E[(-1)^{U_i} \\Delta_i]$, and $(-1)^{U_i}\\Delta_i$ is 1-sub-Gaussian
    under the product of the marginals. $\\Delta_i$ is a function of $\\Lambda_i$, so this is
    never larger than the e-CMI bound (three symbols for the 0-1 loss).

    Args, Returns: as `ecmi_bound`.

    References:
      Wang & Mao, Tighter information-theoretic generalization bounds from supersamples, ICML
      2023, arXiv:2302.02432 (the ld-CMI bound).
    """
    L, m = _check_losses(losses, masks)
    sym, k = symbols(L[..., 1] - L[..., 0], axis_pairs=False)
    return _assemble("ldcmi", _mi_fn(sym, m, k), L, m, _sqrt_gap, num_bootstrap=num_bootstrap,
                     seed=seed, variable="loss difference (ld-CMI)")


def interpolating_bound(losses: Any, masks: Any, *, num_bootstrap: int = 200,
                        seed: int = 0) -> Bound:
    """The interpolating ld-CMI bound: with zero training loss, $E[L_\\mathcal{D}] \\le \\frac{1}{n\\ln 2}\\sum_i I(\\Delta_i; U_i)$.

    When every run has training loss 0 (an interpolating algorithm), the sign of
    $\\Delta_i = L_i^1 - L_i^0$ reveals $U_i$ whenever $\\Delta_i \\ne 0$, so
    $I(\\Delta_i; U_i) = \\ln 2 - P(\\Delta_i = 0) H(U_i | \\Delta_i = 0) \\ge \\ln 2 \\cdot
    P(\\Delta_i \\ne 0) \\ge \\ln 2 \\cdot E|\\Delta_i|$, and $E|\\Delta_i|$ is pair i's expected
    test loss. Hence (Wang & Mao 2023, interpolating regime; the same right-hand side as the
    authors' ``estimate_interp_bound_classification``, here with the smaller ld-CMI)

    $$E[L_\\mathcal{D}(W)] = E[L_\\mathcal{D}(W) - L_S(W)] \\le \\frac{1}{n \\ln 2}
      \\sum_{i=1}^n I^{\\tilde Z}(\\Delta_i; U_i),$$

    linear in the information (a fast rate) and an equality when the algorithm treats the two
    elements of each pair symmetrically.

    Args, Returns: as `ecmi_bound`; ``value`` is the bound on the expected test loss.

    Raises:
      NotBoundable: some run has a non-zero training loss (the premise fails).

    References:
      Wang & Mao, Tighter information-theoretic generalization bounds from supersamples, ICML
      2023, arXiv:2302.02432.
    """
    L, m = _check_losses(losses, masks)
    train, _ = _errors(L, m)
    if np.any(train > 0):
        bad = int(np.count_nonzero(train > 0))
        raise NotBoundable(f"interpolating_bound: {bad} of {train.size} runs have a non-zero "
                           f"training loss (largest {train.max():g}); the bound needs every "
                           "training loss to be 0")
    sym, k = symbols(L[..., 1] - L[..., 0], axis_pairs=False)
    return _assemble(
        "cmi_interpolating", _mi_fn(sym, m, k), L, m,
        lambda mi, tr: mi.mean(axis=(-2, -1)) / math.log(2.0),
        num_bootstrap=num_bootstrap, seed=seed, variable="loss difference (ld-CMI)",
        extra_notes=("assumes training loss 0 in every run (checked on the K runs)",),
        value_is_test_bound=True)


def binary_kl_bound(losses: Any, masks: Any, *, num_bootstrap: int = 200, seed: int = 0) -> Bound:
    """The binary-kl e-CMI bound (Hellström & Durisi 2022) on the expected test loss.

    With $\\hat L = E[L_S(W)]$ the expected training loss and $L = E[L_\\mathcal{D}(W)]$,

    $$\\mathrm{kl}\\Big(\\hat L \\,\\Big\\|\\, \\frac{\\hat L + L}{2}\\Big) \\le \\frac1n
      \\sum_{i=1}^n E_{\\tilde Z}\\, I^{\\tilde Z}(\\Lambda_i; U_i),$$

    so $L \\le 2\\,\\mathrm{kl}^{-1}(\\hat L, \\bar I) - \\hat L$ (`genbounds.kl_inverse`). Proof
    for one pair (docs/cmi.md): under the product of the marginals $U'_i$ is independent of
    $\\Lambda_i$ and the training loss $L_i^{U'_i}$ has mean $(L_i^0 + L_i^1)/2$; data processing
    of the KL divergence through a Bernoulli($L_i^{U_i}$) draw gives
    $\\mathrm{kl}(E L_i^{U_i} \\| E (L_i^0 + L_i^1)/2) \\le I(\\Lambda_i; U_i)$, and joint
    convexity of kl averages over pairs and supersamples. Also the form of the authors'
    ``estimate_kl_bound_classification`` (Wang & Mao 2023's code), here with the e-CMI.

    Args, Returns: as `ecmi_bound`; ``value`` is the bound on the expected test loss.

    References:
      Hellström & Durisi, A new family of generalization bounds using samplewise evaluated CMI,
      NeurIPS 2022, arXiv:2210.06422.
    """
    L, m = _check_losses(losses, masks)
    sym, k = symbols(L, axis_pairs=True)

    def test_bound(mi: np.ndarray, train: np.ndarray) -> np.ndarray:
        ibar = mi.mean(axis=(-2, -1))
        p = np.asarray(kl_inverse(np.broadcast_to(train, ibar.shape), ibar), np.float64)
        return 2.0 * p - train

    return _assemble("cmi_binary_kl", _mi_fn(sym, m, k), L, m, test_bound,
                     num_bootstrap=num_bootstrap, seed=seed, variable="pair of losses (e-CMI)",
                     value_is_test_bound=True)


def cmi_bounds(predictions: Any, labels: Any, masks: Any, *, num_bootstrap: int = 200,
               seed: int = 0) -> dict[str, Bound]:
    """Every evaluated-CMI bound of one supersample experiment, on the 0-1 loss.

    Returns ``{"fcmi", "ecmi", "ldcmi", "cmi_binary_kl", "cmi_interpolating"}`` -> `Bound`; the
    interpolating bound only when every run has training error 0 (otherwise its key is absent).
    """
    L = zero_one_losses(predictions, labels)
    kw = dict(num_bootstrap=num_bootstrap, seed=seed)
    out = {"fcmi": fcmi_bound(predictions, labels, masks, **kw),
           "ecmi": ecmi_bound(L, masks, **kw), "ldcmi": ldcmi_bound(L, masks, **kw),
           "cmi_binary_kl": binary_kl_bound(L, masks, **kw)}
    try:
        out["cmi_interpolating"] = interpolating_bound(L, masks, **kw)
    except NotBoundable:
        pass
    return out
