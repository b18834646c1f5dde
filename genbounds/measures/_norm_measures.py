"""Norm-based complexity measures that are not bounds: distance from initialisation, sums and
products of layer norms, stable ranks, parameter counts, the path norm (computed in
`_path_norm`), and Jiang et al. (2020)'s normalisation of them.

Every function here returns `Bound` objects with ``value=None`` (measures): the numbers rank
networks, they do not bound a test error. Conventions follow Jiang et al. (2020) as implemented
by Dziugaite et al. (2020) (nitarshan/robust-generalization-measures, ``measures.py``), see
docs/measures/norms.md:

* BatchNorm is folded into the layer before it first (`read_layers` does this);
* "weights" are the kernels: biases are excluded from every measure except the path norm, which
  squares *every* parameter as Jiang's code does (``biases=False`` gives the bias-free one);
* a convolution's Frobenius norm is that of its kernel (the reshaped (c_out, c_in·k·k) matrix);
  its spectral norm is the operator norm of the convolution (`spectral_norms`; Jiang's FFT
  variant), an upper bound when the input shape is unknown.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from genbounds.bounds._vc import vc_dimension_bound
from genbounds.core._bound import Bound
from genbounds.core._checks import (
    NotBoundable,
    check_choice,
    check_margin,
    check_n,
    check_positive,
    checked_result,
)
from genbounds.core._logspace import exp_or_inf
from genbounds.linalg._conv import reshaped_kernel_norm
from genbounds.linalg._method import NormMethod, as_norm_method
from genbounds.network._bound_inputs import reference_layers
from genbounds.network._layers import ConvSpec, Layer
from genbounds.network._network import as_network
from genbounds.network._norms import layer_frobenius, measure_layers, spectral_norms

from ._path_norm import path_norm
from ._references import JIANG_REFERENCE

# ----------------------------------------------------------------------------------------------
# Layer norms and distance from initialisation.


def _diff_spectral(net: Any, read: Sequence[Layer], refs: Sequence[Layer], *, method: Any,
                   key: Any, failure_probability: float, **options: Any) -> Any:
    """Spectral norms of W_i - W_i^0, with the same geometry as the layers (kept in the
    network's norm cache)."""
    how = as_norm_method(method, {"failure_probability": failure_probability, **options},
                         caller="spectral norms of W - W0")
    diff = [dataclasses.replace(layer, kernel=layer.kernel - ref.kernel, bias=None)
            for layer, ref in zip(read, refs, strict=True)]
    return measure_layers(net, diff, method=how, key=key)


@checked_result
def distance_from_init(
    params: Any,
    *,
    reference: Any,
    method: str | NormMethod = "certified",
    key: jax.Array | None = None,
    failure_probability: float = 1e-6,
    layers: Sequence[str] | None = None,
    conv: ConvSpec | Mapping[str, ConvSpec] | None = None,
    **options: Any,
) -> Bound:
    r"""Distance of the weights from a reference (the initialisation), per layer and in total.

    Per layer $\|W_i - W_i^0\|_F$ and $\|W_i - W_i^0\|_2$ (spectral; the operator norm for a
    convolution). ``complexity`` is the Euclidean distance of the weight vectors,
    $\sqrt{\sum_i \|W_i - W_i^0\|_F^2}$; Jiang et al. (2020)'s eq. (40) is its square
    (``terms["fro_dist"]``) and eq. (41) is $\sum_i \|W_i - W_i^0\|_2^2$
    (``terms["spec_dist"]``). Biases are excluded (Jiang et al.'s "weights").

    Args:
      params: the network's parameters.
      reference: parameters of the same network (e.g. at initialisation); BatchNorm folded the
        same way.
      method, key, failure_probability, options: spectral-norm options (see `spectral_norms`);
        the default gives upper bounds on the true norms.
      layers, conv: layer order and convolution geometry (see `read_layers`).

    Returns:
      A measure with terms ``frobenius`` and ``spectral`` (per layer), ``fro_dist``,
      ``spec_dist``, ``sum_frobenius``, ``sum_spectral``.

    Raises:
      ValueError, TypeError: bad parameters or a reference that does not match.

    Examples:
      >>> import numpy as np
      >>> w0 = {"Dense_0": {"kernel": np.zeros((2, 2))}, "Dense_1": {"kernel": np.zeros((2, 1))}}
      >>> w = {"Dense_0": {"kernel": np.diag([3.0, 4.0])}, "Dense_1": {"kernel": np.zeros((2, 1))}}
      >>> b = distance_from_init(w, reference=w0)
      >>> b.complexity, round(b.terms["spec_dist"], 9)
      (5.0, 16.0)

    References:
      Jiang et al., ICLR 2020, arXiv:1912.02178, eqs. (40), (41).
    """
    net = as_network(params, layers=layers, conv=conv, caller="distance_from_init")
    read = net.layers
    refs = reference_layers(reference, net, read, "distance_from_init")
    fro = [layer_frobenius(layer, ref) for layer, ref in zip(read, refs, strict=True)]
    spec = _diff_spectral(net, read, refs, method=method, key=key,
                          failure_probability=failure_probability, **options)
    s = [float(spec[layer.path]) for layer in read]
    fro_dist = float(sum(v * v for v in fro))
    terms = {
        "frobenius": {layer.path: v for layer, v in zip(read, fro, strict=True)},
        "spectral": {layer.path: v for layer, v in zip(read, s, strict=True)},
        "fro_dist": fro_dist,
        "spec_dist": float(sum(v * v for v in s)),
        "sum_frobenius": float(sum(fro)),
        "sum_spectral": float(sum(s)),
        "failure_probability": spec.failure_probability,
    }
    return Bound(name="distance_from_init", value=None, complexity=math.sqrt(fro_dist),
                 terms=terms, estimated=spec.estimated,
                 reference=JIANG_REFERENCE + ", eqs. (40), (41)",
                 notes=(f"spectral norms: {method}", "biases excluded"))


# ----------------------------------------------------------------------------------------------
# Jiang et al.'s normalisation and the collection of measures.


def jiang_normalise(mu: float, *, n: int, log: bool) -> float:
    r"""Jiang et al. (2020)'s adjustment of a measure for the training-set size.

    A measure whose name starts with ``LOG_`` in their code becomes $\frac12(\mu - \ln n)$
    (``log=True``); every other one becomes $\sqrt{\mu / n}$ (verified in
    nitarshan/robust-generalization-measures ``measures.py``).

    Args:
      mu: the raw measure (>= 0 unless `log`).
      n: training-set size $m$, >= 1.
      log: whether the measure is a logarithm.

    Returns:
      The adjusted measure.

    Raises:
      ValueError, TypeError: n < 1, NaN, a negative non-log measure.

    Examples:
      >>> jiang_normalise(400.0, n=100, log=False)
      2.0
      >>> round(jiang_normalise(10.0, n=100, log=True), 6)
      2.697415
    """
    n = check_n(n)
    if log:
        v = float(mu)
        if math.isnan(v):
            raise ValueError("mu must not be NaN")
        return 0.5 * (v - math.log(n))
    v = check_positive(mu, "mu", allow_zero=True) if mu != math.inf else math.inf
    return math.sqrt(v / n)


# name -> (Jiang et al. 2020 equation, is a log measure)
_JIANG = {
    "num_weights": (20, False), "inverse_margin": (22, False), "log_spec_init": (29, True),
    "log_spec_orig": (30, True), "log_prod_spec_over_margin": (31, True),
    "log_prod_spec": (32, True), "fro_over_spec": (33, False),
    "log_sum_spec_over_margin": (34, True), "log_sum_spec": (35, True),
    "log_prod_fro_over_margin": (36, True), "log_prod_fro": (37, True),
    "log_sum_fro_over_margin": (38, True), "log_sum_fro": (39, True), "fro_dist": (40, False),
    "spec_dist": (41, False), "param_norm": (42, False), "path_norm_over_margin": (43, False),
    "path_norm": (44, False), "vc_dim": (19, False),
    # Not numbered in Jiang et al.; the extra measures L2 and L2_DIST of the reference code
    # (Dziugaite et al. 2020), adjusted like every non-log measure.
    "l2": (None, False), "l2_dist": (None, False),
}


def _vc_measure(read: Sequence[Layer]) -> tuple[float, dict, tuple[str, ...]]:
    """Jiang et al.'s eq. (19) for the layers read: an upper bound on the VC dimension."""
    if any(layer.kind != "dense" for layer in read):
        return math.nan, {}, ("not computed: vc_dimension_bound covers dense ReLU chains only",)
    sizes = [read[0].fan_in] + [layer.fan_out for layer in read]
    bias = [layer.bias is not None for layer in read]
    h = vc_dimension_bound(sizes, bias=bias)
    return float(h), {"layer_sizes": sizes}, (
        "VC-dimension upper bound of the architecture (vc_dimension_bound; ReLU, 2 pieces)",)


def norm_measures(
    params: Any,
    *,
    reference: Any = None,
    margin: float | None = None,
    n: int | None = None,
    jiang: bool = False,
    method: str | NormMethod = "certified",
    key: jax.Array | None = None,
    failure_probability: float = 1e-6,
    layers: Sequence[str] | None = None,
    conv: ConvSpec | Mapping[str, ConvSpec] | None = None,
    conv_norm: str = "operator",
    **options: Any,
) -> dict[str, Bound]:
    r"""Every norm-based measure of one network, as a dict of measures (``value=None``).

    With $s_i$ the spectral norm of layer $i$ (an upper bound by default, see `spectral_norms`),
    $f_i = \|W_i\|_F$, $W_i^0$ the `reference`, $d$ the number of layers, $\gamma$ = `margin`
    and $\omega$ the number of weights, the raw measures $\mu$ (Jiang et al. 2020's equation
    numbers in brackets) are:

    * ``num_weights`` $\omega$ (20; kernels only) and ``num_params`` (biases included);
    * ``param_norm`` $\sum_i f_i^2$ (42), ``fro_over_spec`` $\sum_i f_i^2/s_i^2$ (33: the sum of
      the stable ranks, per layer in its terms);
    * ``log_prod_spec`` $\sum_i \ln s_i^2$ (32), ``log_sum_spec`` $\ln d + \frac1d\sum_i\ln
      s_i^2$ (35), and the Frobenius analogues ``log_prod_fro`` (37), ``log_sum_fro`` (39);
    * ``sum_fro`` $\sum_i f_i$, ``sum_spec`` $\sum_i s_i$, ``prod_fro`` $\prod_i f_i$,
      ``prod_spec`` $\prod_i s_i$ (products from log space, the log in their terms);
    * ``path_norm`` $\mu_{44} = \sum_\pi\prod w^2$ (44, biases included as Jiang's code does)
      and ``l2_path_norm`` $\sqrt{\mu_{44}}$ (see `path_norm`);
    * ``l2`` $\|w\|_2 = (\sum_i f_i^2)^{1/2}$ (kernels only) and, with a `reference`,
      ``l2_dist`` $\|w - w_0\|_2$: not numbered in Jiang et al.; the plain vector norms that
      Dziugaite et al. (2020)'s reference code adds to their list;
    * ``vc_dim`` (19): Jiang et al. take Bartlett, Harvey, Liaw & Mehrabian (2019)'s upper
      bound on the VC dimension of the architecture; here `vc_dimension_bound` of the layer
      sizes read (dense chains; ``nan`` with the reason in the notes for convolutions);
    * with a `reference`: ``fro_dist`` $\sum_i\|W_i - W_i^0\|_F^2$ (40), ``spec_dist``
      $\sum_i\|W_i - W_i^0\|_2^2$ (41);
    * with a `margin`: ``inverse_margin`` $1/\gamma^2$ (22), ``log_prod_spec_over_margin`` (31)
      $= \mu_{32} - 2\ln\gamma$, ``log_sum_spec_over_margin`` (34) $= \ln d + (\mu_{32} -
      2\ln\gamma)/d$, ``log_spec_orig`` (30) $= \mu_{31} + \ln\mu_{33}$, the Frobenius
      analogues (36, 38), ``path_norm_over_margin`` $\mu_{44}/\gamma^2$ (43); with both,
      ``log_spec_init`` (29) $= \mu_{31} + \ln\sum_i\|W_i - W_i^0\|_F^2/s_i^2$.

    With ``jiang=True`` only the measures with an equation number are returned, each adjusted by
    `jiang_normalise` with $n$ = `n` (``LOG_`` measures $\frac12(\mu - \ln n)$, the others
    $\sqrt{\mu/n}$), the raw value in ``terms["raw"]``. Jiang et al. take $\gamma$ as the 10th
    percentile of the training margins (``genbounds.select_margin(..., margin_quantile=0.1)``
    computes the same order statistic; their code then takes ``abs()``).

    A measure that cannot be computed (a path norm of a convolution without its input shape, a
    VC dimension of a CNN) is left out of the result, and every returned measure's notes name it
    with the reason, so one unreadable measure neither hides the others nor passes as NaN.

    Args:
      params: the network's parameters.
      reference: parameters at initialisation (or any reference), or None.
      margin: $\gamma > 0$ for the margin-normalised measures, or None.
      n: training-set size, needed for ``jiang=True``.
      jiang: apply Jiang et al.'s normalisation and keep only their measures.
      method, key, failure_probability, options: spectral-norm options (see `spectral_norms`).
      layers, conv: layer order and convolution geometry (see `read_layers`).
      conv_norm: the $s_i$ of a convolution: ``"operator"`` (default; the norm of the
        convolution as a linear map, with the traced geometry) or ``"reshaped"`` (the spectral
        norm of the kernel reshaped to a (window·in, out) matrix, as other code computes it; not
        the operator's norm, which can exceed it by up to $\sqrt{\prod \mathrm{window}}$), so
        the dependence of a ranking on that choice can be seen.

    Returns:
      A dict from measure name to a `Bound` measure (``value=None``, ``complexity`` = the
      measure, ``reference`` = its source).

    Raises:
      ValueError, TypeError: bad parameters, margin <= 0, ``jiang=True`` without `n`, a zero
        layer (its log norm is undefined).

    Examples:
      >>> import numpy as np
      >>> params = {"Dense_0": {"kernel": 2.0 * np.eye(2)}, "Dense_1": {"kernel": np.ones((2, 1))}}
      >>> m = norm_measures(params, margin=0.5)
      >>> round(m["log_prod_spec"].complexity, 6)  # ln(2^2 * 2)
      2.079442
      >>> m["path_norm"].complexity  # paths 2*1 and 2*1: 4 + 4
      8.0

    References:
      Jiang, Neyshabur, Mobahi, Krishnan & Bengio, "Fantastic Generalization Measures and Where
      to Find Them", ICLR 2020, arXiv:1912.02178, Section 7 and Appendix C.
    """
    if jiang and n is None:
        raise ValueError("norm_measures: jiang=True needs n, the training-set size")
    if n is not None:
        n = check_n(n)
    gamma = None if margin is None else check_margin(margin)
    net = as_network(params, layers=layers, conv=conv, caller="norm_measures")
    try:
        read = net.chain("norm_measures (products over a chain of layers)").layers
        not_chain = None
    except NotBoundable as e:
        # Sums over the layers need no structure; products along a chain do.
        read, not_chain = net.layers, str(e)
    d = len(read)
    check_choice(conv_norm, "conv_norm", ("operator", "reshaped"))
    spec = spectral_norms(net, method=method, key=key, failure_probability=failure_probability,
                          **options)
    s = [float(spec[layer.path]) if layer.kind == "dense" or conv_norm == "operator"
         else float(reshaped_kernel_norm(layer.kernel)) for layer in read]
    f = [layer_frobenius(layer) for layer in read]
    zero = [layer.path for layer, v in zip(read, f, strict=True) if v == 0.0]
    if zero:
        raise ValueError(f"params: the layers {zero} are all zeros; their log norms are -inf")
    paths = [layer.path for layer in read]
    log_s2 = [2.0 * math.log(v) for v in s]
    log_f2 = [2.0 * math.log(v) for v in f]
    est = spec.estimated
    raw: dict[str, tuple[float, dict, tuple[str, ...]]] = {}

    def put(name: str, mu: float, terms: dict | None = None, notes: tuple[str, ...] = ()) -> None:
        raw[name] = (float(mu), terms or {}, notes)

    per_s = {"spectral": dict(zip(paths, s, strict=True))}
    per_f = {"frobenius": dict(zip(paths, f, strict=True))}
    omega = sum(layer.num_weights for layer in read)
    put("num_weights", omega)
    put("num_params", sum(layer.num_params for layer in read))
    put("param_norm", sum(v * v for v in f), per_f)
    stable = {p_: fv * fv / (sv * sv) for p_, fv, sv in zip(paths, f, s, strict=True)}
    put("fro_over_spec", sum(stable.values()), {"stable_rank": stable})
    chain_only = ("log_prod_spec", "log_sum_spec", "log_prod_fro", "log_sum_fro", "prod_fro",
                  "prod_spec", "path_norm", "l2_path_norm", "vc_dim", "log_prod_spec_over_margin",
                  "log_sum_spec_over_margin", "log_spec_orig", "log_prod_fro_over_margin",
                  "log_sum_fro_over_margin", "path_norm_over_margin", "log_spec_init")
    put("log_prod_spec", sum(log_s2), per_s)
    put("log_sum_spec", math.log(d) + sum(log_s2) / d, per_s)
    put("log_prod_fro", sum(log_f2), per_f)
    put("log_sum_fro", math.log(d) + sum(log_f2) / d, per_f)
    put("sum_fro", sum(f), per_f)
    put("sum_spec", sum(s), per_s)
    put("prod_fro", exp_or_inf(0.5 * sum(log_f2)), {"log": 0.5 * sum(log_f2), **per_f})
    put("prod_spec", exp_or_inf(0.5 * sum(log_s2)), {"log": 0.5 * sum(log_s2), **per_s})
    try:
        pn = path_norm(net, p=2.0, power=True, biases=True)
        mu44, pn_terms, pn_notes = float(pn.complexity), dict(pn.terms), pn.notes
    except ValueError as e:
        mu44, pn_terms, pn_notes = math.nan, {}, (f"not computed: {e}",)
    put("path_norm", mu44, pn_terms, pn_notes)
    put("l2_path_norm", math.sqrt(mu44), pn_terms, pn_notes)
    put("l2", math.sqrt(sum(v * v for v in f)), per_f)
    put("vc_dim", *_vc_measure(read))

    dist_f2 = None
    if reference is not None:
        refs = reference_layers(reference, net, read, "norm_measures")
        df = [layer_frobenius(layer, ref) for layer, ref in zip(read, refs, strict=True)]
        dspec = _diff_spectral(net, read, refs, method=method, key=key,
                               failure_probability=failure_probability, **options)
        ds = [float(dspec[p_]) for p_ in paths]
        est = est or dspec.estimated
        dist_f2 = [v * v for v in df]
        put("fro_dist", sum(dist_f2), {"frobenius": dict(zip(paths, df, strict=True))})
        put("spec_dist", sum(v * v for v in ds), {"spectral": dict(zip(paths, ds, strict=True))})
        put("l2_dist", math.sqrt(sum(dist_f2)), {"frobenius": dict(zip(paths, df, strict=True))})

    if gamma is not None:
        lg = 2.0 * math.log(gamma)
        put("inverse_margin", 1.0 / (gamma * gamma), {"margin": gamma})
        mu31 = sum(log_s2) - lg
        put("log_prod_spec_over_margin", mu31, {"margin": gamma})
        put("log_sum_spec_over_margin", math.log(d) + mu31 / d, {"margin": gamma})
        put("log_spec_orig", mu31 + math.log(raw["fro_over_spec"][0]), {"margin": gamma})
        put("log_prod_fro_over_margin", sum(log_f2) - lg, {"margin": gamma})
        put("log_sum_fro_over_margin", math.log(d) + (sum(log_f2) - lg) / d, {"margin": gamma})
        put("path_norm_over_margin", mu44 / (gamma * gamma), {"margin": gamma}, pn_notes)
        if dist_f2 is not None:
            ratio = sum(df2 / math.exp(ls2) for df2, ls2 in zip(dist_f2, log_s2, strict=True))
            put("log_spec_init", mu31 + (math.log(ratio) if ratio > 0.0 else -math.inf),
                {"margin": gamma})

    if not_chain is not None:
        for name in chain_only:
            if name in raw:
                raw[name] = (math.nan, {}, ("products along a chain of layers; not a chain: "
                                            + not_chain,))
    out: dict[str, Bound] = {}
    conv_note = ("conv spectral norms: operator norm (Jiang's FFT variant)"
                 if any(layer.kind == "conv" for layer in read) else None)
    # A measure that cannot be computed here is left out, never returned as NaN; every
    # returned measure names the ones left out and why.
    missing = {name: notes[0] for name, (mu, _, notes) in raw.items() if math.isnan(mu)}
    missing_note = (("not computed: " + "; ".join(f"{k} ({v})" for k, v in missing.items()),)
                    if missing else ())
    for name, (mu, terms, notes) in raw.items():
        eq = _JIANG.get(name)
        if (jiang and eq is None) or name in missing:
            continue
        notes = notes + missing_note
        ref = (f"{JIANG_REFERENCE}, eq. ({eq[0]})" if eq is not None and eq[0] is not None
               else JIANG_REFERENCE)
        all_notes = notes + ((f"spectral norms: {method}",) if "spec" in name else ())
        if conv_note and "spec" in name:
            all_notes += (conv_note,)
        value = mu
        terms = dict(terms)
        if jiang:
            terms["raw"] = mu
            value = math.nan if math.isnan(mu) else jiang_normalise(mu, n=n, log=eq[1])
            all_notes += ("Jiang et al. normalisation: " + ("0.5 (mu - ln m)" if eq[1]
                                                            else "sqrt(mu / m)"),)
        out[name] = Bound(name=name, value=None, complexity=value, terms=terms, n=n,
                          estimated=est and "spec" in name, reference=ref,
                          notes=tuple(all_notes))
    return out
