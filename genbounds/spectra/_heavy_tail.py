r"""`heavy_tail`: Martin & Mahoney's layer metrics of a network's weight spectra.

Martin & Mahoney (2021), "Implicit self-regularization in deep neural networks: evidence from
random matrix theory and implications for learning", JMLR 22(165), arXiv:1810.01075; Martin,
Peng & Mahoney (2021), "Predicting trends in the quality of state-of-the-art neural networks
without access to training or testing data", Nature Communications 12, arXiv:2002.06716. Their
claims (empirical, not theorems): well-trained layers have heavy-tailed ESDs with tail exponent
$\alpha$ roughly in [2, 6], smaller for better-trained layers, and the weighted average
$\hat\alpha = \alpha \log_{10}\lambda_{\max}$ over layers tracks test accuracy across models of
one family. The three alphas of this subject are kept apart by name: ``alpha`` is the tail
exponent, the *load* is $N/M$ of a training set (samples per parameter, see
`genbounds.experiments.run_load_sweep`), and ``Q`` is the aspect ratio $N/M$ of one matrix.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import NotBoundable, check_int, check_key, check_unit_interval
from genbounds.spectra._eigen import singular_values
from genbounds.spectra._marchenko_pastur import mp_fit as _mp_fit
from genbounds.spectra._matrices import (
    LayerMatrices,
    collect_kernels,
    genbounds_matrices,
    weightwatcher_matrices,
)
from genbounds.spectra._powerlaw import bootstrap_alpha_start, fit_power_law
from genbounds.spectra._randomize import jensen_shannon_distance, random_spectra
from genbounds.spectra._result import HeavyTail, LayerSpectrum

PRESETS = ("genbounds", "weightwatcher")
REFERENCE = ("Martin & Mahoney, 'Implicit self-regularization in deep neural networks', JMLR "
             "22(165) 2021, arXiv:1810.01075; Martin, Peng & Mahoney, Nature Communications 12 "
             "2021, arXiv:2002.06716")
_EPS64 = np.finfo(np.float64).eps


def _norm_metrics(evals: np.ndarray, alpha: float, N: int) -> dict[str, Any]:
    """weightwatcher.py ``apply_norm_metrics`` with RMT_Util ``matrix_rank``/``matrix_entropy``."""
    norm = np.sum(evals)
    spectral = np.max(evals)
    log_spectral = np.log10(spectral)
    with np.errstate(all="ignore"):
        log_alpha_norm = np.log10(np.sum(evals ** alpha)) if math.isfinite(alpha) else math.nan
    sv = np.sqrt(evals)
    rank = int(np.count_nonzero(sv > np.max(sv) * N * _EPS64))
    with np.errstate(all="ignore"):
        p = sv * sv / np.sum(sv * sv) + 1e-10
        entropy = -np.sum(p * np.log(p)) / np.log(rank + 1e-10)
    return {"norm": float(norm), "log_norm": float(np.log10(norm)),
            "spectral_norm": float(spectral), "log_spectral_norm": float(log_spectral),
            "alpha_weighted": float(alpha * log_spectral), "log_alpha_norm": float(log_alpha_norm),
            "stable_rank": float(norm / spectral), "matrix_rank": rank,
            "entropy": float(entropy)}


def _mp_columns(evals: np.ndarray, layer: LayerMatrices, prefix: str) -> dict[str, Any]:
    f = _mp_fit(evals, Q=layer.Q, M=layer.M)
    cols = {"num_spikes": f.num_spikes, "sigma_mp": f.sigma_mp, "mp_softrank": f.softrank,
            "bulk_max": f.bulk_max, "bulk_min": f.bulk_min}
    out = {prefix + k: v for k, v in cols.items()}
    if prefix:
        out["num_traps"] = f.num_spikes
    return out


def _check_options(preset: str, dtype: Any, method: str, conv_spectrum: str, bootstrap: int,
                   confidence: float, min_tail: int, min_evals: int) -> Any:
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    if method not in ("auto", "svd", "gram", "eigh"):
        raise ValueError(f"method must be 'auto', 'svd', 'gram' or 'eigh', got {method!r}")
    if conv_spectrum not in ("slices", "operator"):
        raise ValueError(f"conv_spectrum must be 'slices' or 'operator', got {conv_spectrum!r}")
    check_int(bootstrap, "bootstrap", minimum=0)
    check_int(min_tail, "min_tail", minimum=2)
    check_int(min_evals, "min_evals", minimum=1)
    check_unit_interval(confidence, "confidence", closed=False)
    if dtype is None:
        return np.float64 if jax.config.jax_enable_x64 else np.float32
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64 (half precision is too coarse for "
                         f"the small eigenvalues), got {dtype!r}")
    if preset == "weightwatcher" and dt != np.dtype(np.float64):
        raise ValueError("preset='weightwatcher' computes in float64, as WeightWatcher does; "
                         f"got dtype={dtype!r}")
    return dt.type


def heavy_tail(
    params: Any,
    *,
    preset: str = "genbounds",
    key: jax.Array | None = None,
    mp_fit: bool = False,
    randomize: bool = False,
    bootstrap: int = 200,
    confidence: float = 0.95,
    min_tail: int = 10,
    min_evals: int = 8,
    max_evals: int | None = None,
    max_N: int | None = None,
    dtype: Any = None,
    method: str = "auto",
    conv_spectrum: str = "slices",
    conv_input_shape: Any = None,
    on_failure: str = "report",
    seed: int = 0,
) -> HeavyTail:
    r"""Heavy-tailed self-regularisation metrics of every weight layer (Martin & Mahoney).

    For each layer's matrices $W$ (a Dense kernel; one matrix per kernel position of a
    convolution; see docs/measures/heavy_tail.md) the ESD is the set of eigenvalues of
    $W^\top W$ (squared singular values, not divided by $N$). Per layer:

    * ``alpha``: the **tail exponent** of $p(\lambda) \propto \lambda^{-\alpha}$ for
      $\lambda \ge x_{\min}$, the continuous MLE $1 + n/\sum \ln(\lambda_j/x_{\min})$ with
      $x_{\min}$ minimising the KS distance ``D`` (Clauset, Shalizi & Newman 2009); ``xmin``,
      ``D``, ``num_pl_spikes`` (tail size), ``sigma`` = $(\alpha-1)/\sqrt{n}$;
    * ``alpha_weighted`` = $\alpha \log_{10}\lambda_{\max}$; ``log_norm`` =
      $\log_{10}\sum\lambda$; ``log_spectral_norm`` = $\log_{10}\lambda_{\max}$;
      ``log_alpha_norm`` = $\log_{10}\sum\lambda^\alpha$; ``stable_rank`` =
      $\sum\lambda/\lambda_{\max}$; ``entropy`` (the matrix entropy);
    * ``mp_fit=True``: the Marchenko-Pastur fit of the bulk (``sigma_mp``, ``bulk_max``,
      ``num_spikes``, ``mp_softrank``) with the aspect ratio ``Q`` = $N/M$;
    * ``randomize=True``: the ESD of the entry-shuffled matrices, its MP fit
      (``rand_num_spikes`` = ``num_traps``, the correlation traps), ``rand_distance``,
      ``ww_softrank``, ``ww_maxdist``. WeightWatcher's replica rule (5 shuffles of every
      matrix below 100 components, else 1) sets the pooled spectrum; the default preset takes
      the distance's spectrum from the first of those shuffles (WeightWatcher and its preset
      draw one more).

    Presets. ``"weightwatcher"`` reproduces WeightWatcher 0.7.7's ``analyze()`` defaults
    exactly (float32 read, float64 SVD; conv slices with their eigenvalues halved and its N/M
    exchange; its size filter ``8 <= M*rf <= 15000, N <= 50000``; its small-N fit; a failed fit
    as ``alpha = -1`` averaged into the summary; the shuffles drawn from
    ``np.random.RandomState(seed)``). ``"genbounds"`` (default) differs where WeightWatcher is
    wrong or silent: N >= M always, conv eigenvalues not rescaled, candidates $x_{\min}$ with a
    tail of at least ``min_tail``, the two-sided KS distance, a failed fit reported (or raised)
    and left out of the means, an explicit key, float32/float64 only, a bootstrap interval of
    alpha (``alpha_low``, ``alpha_high``, ``alpha_se``), and optionally the exact spectrum of
    the circular convolution operator (``conv_spectrum="operator"``); for speed it takes the
    eigenvalues from the Gram matrix (``method="auto"``, below) and the randomised distance
    from the first pooled shuffle.

    These are measures, not bounds: nothing here bounds the test error.

    Args:
      params: Flax linen variables or params, an nnx Module/State, a pytree of kernels, or a
        list of Dense ``(in, out)`` and conv ``(*window, in, out)`` kernels.
      preset: ``"genbounds"`` or ``"weightwatcher"``.
      key: PRNG key of the default preset's shuffles and bootstrap (default ``key(0)``).
      mp_fit: add the Marchenko-Pastur fit.
      randomize: add the randomised ESD and the correlation traps.
      bootstrap: resamples for alpha's interval (default preset; 0 turns it off).
      confidence: coverage of that interval, in (0, 1).
      min_tail: smallest tail an $x_{\min}$ may leave (default preset), >= 2.
      min_evals: layers with fewer eigenvalues are skipped (listed in ``skipped``).
      max_evals, max_N: optional upper size limits (WeightWatcher's 15000 and 50000 under its
        preset).
      dtype: ``float32`` or ``float64`` (default: float64 when ``jax_enable_x64``, else
        float32).
      method: how the layers' eigenvalues are computed. ``"auto"`` (default): ``"svd"`` under
        the ``"weightwatcher"`` preset (WeightWatcher's LAPACK ``gesdd``), ``"gram"`` under the
        default one. ``"svd"``: the squared singular values (each eigenvalue to a relative
        error of about $\varepsilon\,\sigma_{\max}/\sigma$). ``"gram"``: the eigenvalues of
        the smaller Gram matrix (BLAS ``syrk`` and LAPACK ``syevd``, in float64 on a CPU;
        1.7-3.9x faster than the SVD on 600-1024 matrices), each within an absolute error of
        order $n\,\varepsilon\,\lambda_{\max}$ ($n$ the larger side), so the smallest
        eigenvalues lose relative accuracy; a matrix whose smallest eigenvalue is not above
        $2^{10} n\,\varepsilon\,\lambda_{\max}$ is decomposed by the SVD instead (so the
        rank columns, and the values near the $10^{-5}$ threshold of the fit, are the SVD's
        there). ``"eigh"``: the jitted batched ``eigvalsh`` of the Gram matrix in the given
        dtype, unchecked. The randomised ESDs always take the Gram route.
      conv_spectrum: ``"slices"`` or ``"operator"`` (default preset).
      conv_input_shape: spatial input shape for ``"operator"``: one tuple, or a mapping from
        layer path to tuple.
      on_failure: ``"report"`` (status ``"failed: ..."``, alpha NaN) or ``"raise"``.
      seed: the ``"weightwatcher"`` preset's shuffle seed.

    Returns:
      A `HeavyTail`: ``.layers``, ``.summary()``, ``.to_records()``, ``.to_pandas()``,
      ``.plot(layer)``.

    Raises:
      ValueError: an unknown preset or option, a dtype other than float32/float64, no weight
        layer, NaN/inf weights, or (``on_failure="raise"``) a failed fit, named.

    Examples:
      >>> import numpy as np
      >>> W = np.random.default_rng(0).standard_normal((300, 100))
      >>> r = heavy_tail([W], bootstrap=0)
      >>> r.layers[0]["Q"], r.layers[0]["num_evals"], r.layers[0]["status"]
      (3.0, 100, 'success')

    References:
      Martin & Mahoney, JMLR 22(165) 2021, arXiv:1810.01075; Martin, Peng & Mahoney, Nature
      Communications 12, 2021, arXiv:2002.06716; Clauset, Shalizi & Newman, SIAM Review 51,
      2009, arXiv:0706.1062.
    """
    dt = _check_options(preset, dtype, method, conv_spectrum, bootstrap, confidence, min_tail,
                        min_evals)
    if on_failure not in ("report", "raise"):
        raise ValueError(f"on_failure must be 'report' or 'raise', got {on_failure!r}")
    ww = preset == "weightwatcher"
    if ww:
        max_evals = 15000 if max_evals is None else max_evals
        max_N = 50000 if max_N is None else max_N
    key = jax.random.key(0) if key is None else check_key(key)
    kernels = collect_kernels(params)
    if not kernels:
        raise ValueError("params holds no weight array with 2 or more dimensions")
    for name, k in kernels:
        if not np.all(np.isfinite(np.asarray(k, np.float64))):
            raise ValueError(f"params[{name!r}] has NaN or inf entries")
    layers: list[LayerMatrices] = []
    skipped: list[tuple[str, str]] = []
    for name, k in kernels:
        if ww:
            lm = weightwatcher_matrices(name, k)
        else:
            shape = conv_input_shape.get(name) if isinstance(conv_input_shape, dict) \
                else conv_input_shape
            lm = genbounds_matrices(name, k, dtype=dt, conv_spectrum=conv_spectrum,
                                    input_shape=shape)
        if isinstance(lm, str):
            skipped.append((name, lm))
            continue
        size = lm.M * lm.rf if ww else lm.num_evals
        if size < min_evals:
            skipped.append((name, f"{size} eigenvalues, fewer than min_evals = {min_evals}"))
        elif max_evals is not None and size > max_evals:
            skipped.append((name, f"{size} eigenvalues, more than max_evals = {max_evals}"))
        elif max_N is not None and lm.N > max_N:
            skipped.append((name, f"N = {lm.N} > max_N = {max_N}"))
        else:
            layers.append(lm)
    if method == "auto":
        method = "svd" if ww else "gram"
    svals = singular_values([x.mats for x in layers], method=method, resolve=method == "gram")
    rand = None
    if randomize:
        rng = np.random.RandomState(seed) if ww else jax.random.fold_in(key, 1)
        rand = random_spectra(layers, rng=rng, method=method, share_fresh=not ww)
    # the point fits, then every layer's bootstrap dispatched to JAX, which runs them off this
    # thread while the MP fits and the norm metrics proceed (after the randomised spectra:
    # LAPACK's threads want both cores; the point fits first: they would queue behind them)
    fits = [_fit_layer(lm, sv, ww=ww, min_tail=min_tail, on_failure=on_failure)
            for lm, sv in zip(layers, svals, strict=True)]
    boot = [i for i, f in enumerate(fits)
            if not ww and bootstrap > 0 and f[1]["status"] == "success"]
    # every layer's seed at once, before any bootstrap is dispatched (a JAX op issued after
    # one would wait for it): layer i's generator is seeded by fold_in(fold_in(key, 2), i)
    seeds = np.asarray(_layer_seeds(key, np.asarray(boot, np.int32))) if boot else ()
    for i, bits in zip(boot, seeds, strict=True):
        f = fits[i]
        rng = np.random.default_rng(bits.astype(np.uint32).ravel())
        f[2] = bootstrap_alpha_start(f[0], rng, num_resamples=bootstrap, confidence=confidence,
                                     min_tail=min_tail)
        # the columns' place (filled when the bootstrap is collected, in `_layer`)
        f[1].update(dict.fromkeys(("alpha_low", "alpha_high", "alpha_se", "bootstrap_failed")))
    out = [_layer(lm, *f, ww=ww, mp=mp_fit, rand=None if rand is None else rand[i])
           for i, (lm, f) in enumerate(zip(layers, fits, strict=True))]
    notes = ((f"preset {preset!r}",)
             + (("conv eigenvalues halved (WeightWatcher's conv2d_norm)",) if ww else ()))
    opts = {"preset": preset, "mp_fit": mp_fit, "randomize": randomize, "bootstrap": bootstrap,
            "confidence": confidence, "min_tail": min_tail, "min_evals": min_evals,
            "max_evals": max_evals, "max_N": max_N, "dtype": np.dtype(dt).name,
            "method": method, "conv_spectrum": conv_spectrum, "seed": seed}
    return HeavyTail(layers=tuple(out), skipped=tuple(skipped), preset=preset, options=opts,
                     notes=notes)


@jax.jit
def _layer_seeds(key: jax.Array, layers: jax.Array) -> jax.Array:
    """The key data of ``fold_in(fold_in(key, 2), i)`` for each layer index i, one row each."""
    k2 = jax.random.fold_in(key, 2)
    return jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(k2, i)))(layers)


def _fit_layer(lm: LayerMatrices, sv: np.ndarray, *, ww: bool, min_tail: int,
               on_failure: str) -> list[Any]:
    """``[evals, row, None]``: the ESD, the spectral columns and the power-law fit of one layer
    (the None is the place of its pending bootstrap)."""
    n_comp = lm.M * lm.rf
    per = [s[-n_comp:] for s in sv]  # WW: np.sort(sv)[-n_comp:] per matrix
    evals = np.sort(np.concatenate([s * s for s in per]))
    rank_loss = sum(int(len(s) - np.count_nonzero(s > np.max(s) * lm.N * _EPS64)) for s in per)
    row: dict[str, Any] = {
        "kind": lm.kind, "shape": list(lm.shape), "N": lm.N, "M": lm.M, "Q": lm.Q, "rf": lm.rf,
        "num_evals": int(evals.size), "lambda_max": float(np.max(evals)),
        "sv_max": float(max(np.max(s) for s in per)),
        "sv_min": float(max(np.min(s) for s in per)),  # sic: WeightWatcher's max of the minima
        "rank_loss": rank_loss, "weak_rank_loss": int(np.sum(evals < 1e-6)),
    }
    fit = fit_power_law(evals, rule="weightwatcher" if ww else "genbounds", min_tail=min_tail)
    if fit.ok:
        alpha = fit.alpha
        row.update(alpha=alpha, xmin=fit.xmin, xmax=fit.xmax, D=fit.D, sigma=fit.sigma,
                   num_pl_spikes=int(np.sum(evals >= fit.xmin)), status="success")
    elif on_failure == "raise":
        raise ValueError(f"heavy_tail: the power-law fit of layer {lm.name!r} failed: "
                         f"{fit.status}")
    else:
        alpha = -1.0 if ww else math.nan  # WeightWatcher's sentinel under its preset only
        fill = -1 if ww else math.nan
        row.update(alpha=alpha, xmin=fill, xmax=fit.xmax, D=fill, sigma=fill,
                   num_pl_spikes=-1 if ww else 0, status=fit.status)
    row["warning"] = ("over-trained" if alpha < 2.0 else "under-trained" if alpha > 6.0 else "") \
        if (ww or fit.ok) else ""
    return [evals, row, None]


def _layer(lm: LayerMatrices, evals: np.ndarray, row: dict[str, Any], pending: Any, *,
           ww: bool, mp: bool, rand: Any) -> LayerSpectrum:
    if mp:
        row.update(_mp_columns(evals, lm, ""))
    if rand is not None:
        row["max_rand_eval"] = float(np.max(rand.pooled))
        row["rand_distance"] = jensen_shannon_distance(evals, rand.fresh)
        row["ww_softrank"] = float(np.max(rand.fresh) / np.max(evals))
        row["ww_maxdist"] = float(np.max(evals) - np.max(rand.fresh))
        row.update(_mp_columns(rand.pooled, lm, "rand_"))
    row.update(_norm_metrics(evals, row["alpha"], lm.N))
    if pending is not None:
        ci = pending()
        row.update(alpha_low=ci.low, alpha_high=ci.high, alpha_se=ci.se,
                   bootstrap_failed=ci.num_failed)
    return LayerSpectrum(name=lm.name, metrics=row, evals=evals,
                         rand_evals=None if rand is None else rand.pooled)


def heavy_tail_measures(params: Any, **options: Any) -> dict[str, Bound]:
    """The model summary of `heavy_tail` as measures (``value=None``), one per metric, for
    `genbounds.report`; the per-layer alphas and their intervals are in ``terms``."""
    try:
        res = heavy_tail(params, **options)
    except (ValueError, TypeError) as e:
        raise NotBoundable(f"heavy_tail: the weights could not be read as layers ({e})") from e
    if not res.layers:
        raise NotBoundable("heavy_tail: no layer has enough eigenvalues "
                           f"({'; '.join(f'{n}: {w}' for n, w in res.skipped)})")
    s = res.summary()
    per_layer = {x.name: {k: x.metrics.get(k) for k in
                          ("alpha", "alpha_low", "alpha_high", "xmin", "status")}
                 for x in res.layers}
    out = {}
    for m in ("alpha", "alpha_weighted", "log_alpha_norm", "log_norm", "log_spectral_norm",
              "stable_rank"):
        name = f"ht_{m}"
        out[name] = Bound(name=name, value=None, complexity=s.get(m, math.nan),
                          terms={"layers": per_layer, "num_failed": res.num_failed},
                          estimated=True, reference=REFERENCE,
                          notes=(f"mean of the layers' {m} ({res.preset} preset); a measure, "
                                 "not a bound",))
    return out
