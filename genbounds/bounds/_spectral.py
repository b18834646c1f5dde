"""Bartlett, Foster & Telgarsky (2017): spectral complexity and the spectrally-normalised margin
bound."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import check_delta, check_positive, checked_result
from genbounds.core._grid import grid_ratio, union_grid
from genbounds.core._logspace import exp_or_inf
from genbounds.linalg._method import OPTIONS as NORM_OPTIONS
from genbounds.linalg._method import NormMethod, as_norm_method
from genbounds.losses._margins import ramp_loss, training_margins
from genbounds.network._bound_inputs import data_chain, reference_layers
from genbounds.network._layers import ConvSpec, Layer, augment_biases, check_fits
from genbounds.network._network import as_network
from genbounds.network._norms import (
    layer_norm_21,
    log_sum_exp,
    measure_layers,
    output_positions,
    spectral_norms,
)

BFT_REFERENCE = (
    "Bartlett, Foster & Telgarsky, 'Spectrally-normalized margin bounds for neural networks', "
    "NeurIPS 2017, arXiv:1706.08498"
)


@checked_result
def spectral_complexity(
    params: Any,
    *,
    reference: Any = None,
    method: str | NormMethod = "certified",
    key: jax.Array | None = None,
    failure_probability: float = 1e-6,
    layers: Sequence[str] | None = None,
    conv: ConvSpec | Mapping[str, ConvSpec] | None = None,
    lipschitz: Sequence[float] | float | None = None,
    apply_fn: Callable[[Any, Any], Any] | None = None,
    X: Any = None,
    **options: Any,
) -> Bound:
    r"""The spectral complexity $R_A$ of Bartlett, Foster & Telgarsky (2017), eq. (1.2).

    $$R_A = \Big(\prod_{i=1}^L \rho_i \|A_i\|_\sigma\Big)
            \Big(\sum_{i=1}^L \frac{\|A_i^\top - M_i^\top\|_{2,1}^{2/3}}
                                   {\|A_i\|_\sigma^{2/3}}\Big)^{3/2}$$

    $A_i$ is layer $i$'s weight matrix (the transpose of a Flax (in, out) kernel; for a
    convolution, the operator on its input), $M_i$ its reference matrix (`reference`, default 0),
    $\rho_i$ the Lipschitz constant of what follows layer $i$ (activation, pooling; read from a
    traced network, 1 for a ReLU chain read from parameters), $\|\cdot\|_\sigma$ the spectral
    norm and
    $\|A^\top\|_{2,1}$ the sum over output units of the 2-norm of each unit's incoming weights.
    Biases do not enter (BFT's networks have none). The product is accumulated in log space, so
    a 100-layer network neither overflows nor underflows.

    With the default ``method="certified"`` every $\|A_i\|_\sigma$ is an upper bound on the true
    norm, and $R_A$ is increasing in each $\|A_i\|_\sigma$ (it equals
    $\rho\, C\, (a\, s_i^{2/3} + b_i^{2/3})^{3/2}$ as a function of $s_i$), so the value returned
    is an upper bound on the true $R_A$ except with probability ``result.terms
    ["failure_probability"]``.

    Args:
      params: the network's parameters (Flax linen, nnx, or a plain pytree), or a `Network`.
      reference: parameters of the same network giving the $M_i$ (e.g. the initial
        parameters), or None for $M_i = 0$.
      apply_fn, X: the network's function and example inputs: the network is then traced
        (`Network.trace`), which reads conv geometry, activations and structure.
      method: spectral-norm method (see `spectral_norms`), a name or a
        `genbounds.linalg.NormMethod`.
      key: PRNG key for the certified method's random starts.
      failure_probability: per-layer failure probability of the certified norms.
      layers: explicit layer order (see `read_layers`).
      conv: geometry of the convolution layers (their (2,1) norm needs the input shape).
      lipschitz: $\rho_i$, one number for all layers or one per layer; default: read from the
        network (the product of the Lipschitz constants of the maps after each layer).
      **options: the norm method's options (``tol``, ``rtol``, ``max_iter``, ``gram_iters``).

    Returns:
      A `Bound` with ``value=None`` (a measure), ``complexity`` $= R_A$, and terms: the per-layer
      spectral norms, (2,1) norms, ``log_product`` ($\log\prod_i\rho_i\|A_i\|_\sigma$),
      ``product``, ``sum_term`` (the bracket before the 3/2 power), ``log_complexity``.

    Raises:
      ValueError, TypeError: bad parameters, a reference that does not match, bad options; a
        network that is not a chain (residual, branched): $R_A$ is defined for chains.

    Examples:
      >>> import numpy as np
      >>> eye = {"kernel": np.eye(4)}
      >>> b = spectral_complexity({"Dense_0": eye, "Dense_1": eye, "Dense_2": eye})
      >>> round(b.complexity, 7)  # L^{3/2} k with L = 3, k = 4
      20.7846097

    References:
      Bartlett, Foster & Telgarsky, "Spectrally-normalized margin bounds for neural networks",
      NeurIPS 2017, arXiv:1706.08498, eq. (1.2).
    """
    how = as_norm_method(method, {"failure_probability": failure_probability, **options},
                         caller="spectral_complexity")
    net = as_network(params, apply_fn=apply_fn, X=X, layers=layers, conv=conv,
                     caller="spectral_complexity")
    chain = net.chain("spectral_complexity (BFT eq. 1.2)")
    norms = spectral_norms(net, method=how, key=key)
    read = chain.layers
    refs = (reference_layers(reference, net, read) if reference is not None
            else (None,) * len(read))
    rho = list(chain.lipschitz) if lipschitz is None else _per_layer(lipschitz, len(read))

    s = [norms[layer.path] for layer in read]
    b = [layer_norm_21(layer, ref) for layer, ref in zip(read, refs, strict=True)]
    if any(v <= 0.0 for v in s):
        zero = [layer.path for layer, v in zip(read, s, strict=True) if v <= 0.0]
        raise ValueError(f"params: the layers {zero} are all zeros; R_A is 0/0 there")
    log_s = [math.log(v) for v in s]
    log_product = sum(math.log(r) for r in rho) + sum(log_s)
    # Σ_i (b_i / s_i)^{2/3}, in log space: layers with b_i = 0 contribute nothing.
    log_ratios = [(2.0 / 3.0) * (math.log(bi) - ls) for bi, ls in zip(b, log_s, strict=True)
                  if bi > 0.0]
    log_sum = log_sum_exp(log_ratios) if log_ratios else -math.inf
    log_complexity = log_product + 1.5 * log_sum
    complexity = exp_or_inf(log_complexity)

    notes = [f"spectral norms: {how.name}" + (" (estimates)" if norms.estimated else ""),
             "reference M_i = " + ("given parameters" if reference is not None else "0"),
             "biases excluded (BFT 2017 networks have none)", *net.notes]
    if any(layer.kind == "conv" for layer in read):
        notes.append("conv (2,1) norm: positions x per-channel kernel norms (upper bound)")
    if any(r != 1.0 for r in rho):
        notes.append(f"rho_i (Lipschitz constants after each layer): {rho}")
    terms = {
        "spectral_norms": dict(norms),
        "norms_21": {layer.path: v for layer, v in zip(read, b, strict=True)},
        "lipschitz": list(rho),
        "log_product": log_product,
        "product": exp_or_inf(log_product),
        "sum_term": math.exp(log_sum),
        "log_complexity": log_complexity,
        "failure_probability": norms.failure_probability,
    }
    return Bound(name="spectral_complexity", value=None, complexity=complexity, terms=terms,
                 estimated=norms.estimated, reference=BFT_REFERENCE + ", eq. (1.2)",
                 notes=tuple(notes))


def spectral_margin_bound(
    *,
    ramp_loss: float,
    margin: float,
    complexity: float,
    x_norm: float,
    width: int,
    n: int,
    delta: float,
) -> float:
    r"""BFT (2017) margin bound for norms and margin fixed before seeing the data.

    With probability at least $1-\delta$ over an i.i.d. sample of size $n$, every network whose
    layers satisfy $\|A_i\|_\sigma \le s_i$ and $\|A_i^\top - M_i^\top\|_{2,1} \le b_i$ has

    $$\Pr[\arg\max_j F_A(x)_j \ne y] \le \hat R_\gamma(F_A) + \frac{8}{n}
       + \frac{72\, \|X\|_2 \ln(n) \sqrt{\ln(2W^2)}}{\gamma n} R
       + 3\sqrt{\frac{\ln(2/\delta)}{2n}}$$

    where $R = \prod_i \rho_i s_i (\sum_i (b_i/s_i)^{2/3})^{3/2}$ (`complexity`), $\hat R_\gamma$
    the empirical ramp risk at margin $\gamma$ (`ramp_loss`, `margin`), $\|X\|_2$ the Frobenius
    norm of the data matrix (`x_norm`), $W$ the largest dimension of any layer (`width`).

    Derivation (docs/bounds/spectral.md): BFT Lemma 3.1 (Rademacher margin bound, with the
    conservative $\ln(2/\delta)$ of the empirical-Rademacher form, Mohri et al. 2018 Thm 3.3,
    where BFT print $\ln(1/\delta)$), $\Re(F_\gamma|S) \le 4/n + 36\|X\|_2\ln(n)
    \sqrt{\ln 2W^2} R/(\gamma n)$ from Dudley's entropy integral at $\alpha = 1/n$ with BFT
    Theorem 3.3's cover and the $2/\gamma$ Lipschitz constant of the ramp of the margin operator
    (the "Lemma A.8" form of BFT's appendix A).

    Examples:
      >>> round(spectral_margin_bound(ramp_loss=0.0, margin=1.0, complexity=0.0, x_norm=1.0,
      ...                             width=2, n=100, delta=0.05), 6)
      0.48743
    """
    log_term = 72.0 * x_norm * math.log(n) * math.sqrt(math.log(2.0 * width**2))
    return (ramp_loss + 8.0 / n + log_term * complexity / (margin * n)
            + 3.0 * math.sqrt(math.log(2.0 / delta) / (2.0 * n)))


@dataclasses.dataclass(frozen=True)
class SpectralOptions:
    r"""The options of `spectral`, with Bartlett, Foster & Telgarsky's (2017) setting as defaults.

    Attributes:
      margin: $\gamma > 0$, or None to take it from ``margin_quantile``.
      margin_quantile: the quantile of the training margins giving $\gamma$ (0.05 or 0.10 as
        the papers use); None with ``margin=None``: the 10% quantile.
      delta: failure probability, in (0, 1).
      method: how the spectral norms are computed: a `genbounds.linalg.NormMethod` (a name is
        turned into one); default certified upper bounds, failure probability 1e-6 per layer.
      grid_loss: how much the union-bound grid may inflate $R/\gamma$ (default 5%).
      layers: explicit layer order (see `read_layers`).
      conv: geometry of the convolution layers (see `ConvSpec`).
      lipschitz: $\rho_i$ of the spectral complexity (see `spectral_complexity`); default
        read from the network.

    Examples:
      >>> from genbounds.bounds import SpectralOptions
      >>> SpectralOptions(margin_quantile=0.05).method.name
      'certified'
    """

    margin: float | None = None
    margin_quantile: float | None = None
    delta: float = 0.05
    method: NormMethod = NormMethod()
    grid_loss: float = 0.05
    layers: Sequence[str] | None = None
    conv: ConvSpec | Mapping[str, ConvSpec] | None = None
    lipschitz: Sequence[float] | float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.method, NormMethod):
            object.__setattr__(self, "method", as_norm_method(self.method, {},
                                                              caller="SpectralOptions"))


_OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(SpectralOptions))


def _spectral_options(options: SpectralOptions | None, keywords: dict[str, Any]
                      ) -> SpectralOptions:
    """`options` with the keyword arguments of `spectral` applied over it (a keyword wins)."""
    if options is None:
        options = SpectralOptions()
    elif not isinstance(options, SpectralOptions):
        raise TypeError(f"options must be a SpectralOptions, got {type(options).__name__}")
    unknown = sorted(set(keywords) - set(_OPTION_FIELDS) - set(NORM_OPTIONS))
    if unknown:
        raise TypeError(
            f"spectral got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; its "
            f"options are {', '.join(_OPTION_FIELDS)} and the norm options "
            f"{', '.join(NORM_OPTIONS)}"
        )
    norm = {k: keywords[k] for k in NORM_OPTIONS if k in keywords}
    fields = {k: keywords[k] for k in _OPTION_FIELDS if k in keywords}
    options = dataclasses.replace(options, **fields)
    if norm:  # norm options given as keywords refine the method
        options = dataclasses.replace(
            options, method=dataclasses.replace(options.method, **norm))
    return options


@checked_result
def spectral(
    params: Any,
    *,
    X: Any = None,
    y: Any = None,
    apply_fn: Callable[[Any, Any], Any] | None = None,
    logits: Any = None,
    reference: Any = None,
    key: jax.Array | None = None,
    options: SpectralOptions | None = None,
    **keywords: Any,
) -> Bound:
    r"""Bartlett, Foster & Telgarsky (2017): spectral complexity and margin bound.

    **Parameters alone** (``X=None``): returns the spectral complexity $R_A$ of BFT eq. (1.2) as
    ``.complexity`` with ``value=None`` (a measure); see `spectral_complexity` for the formula
    and norm conventions.

    **With data** (``X``, ``y`` and ``apply_fn`` or ``logits``): ``.value`` is an upper bound
    on the 0-1 test error, holding with probability at least $1-\delta$ simultaneously for every
    margin and every network:

    $$\Pr[\arg\max_j f(x)_j \ne y] \le \hat R_{\bar\gamma} + \frac{8}{n}
      + \frac{72 \|\tilde X\|_2 \ln(n) \sqrt{\ln(2W^2)}}{\bar\gamma n} R_{\bar s, \bar b}
      + 3 \sqrt{\frac{\ln(2/\delta') + \sum_j \ln(1/p(k_j))}{2n}}$$

    This is `spectral_margin_bound` made data-dependent by a union bound: every spectral norm
    $s_i$ and (2,1) norm $b_i$ is rounded up, and the margin $\gamma$ down, to the geometric grid
    $\{(1+r)^k : k \in \mathbb{Z}\}$, and the grid point with index $k$ gets prior weight
    $p(k) = 2/(3(|k|+1)(|k|+2))$ (which sums to 1 over $\mathbb{Z}$), one index per norm and one
    for $\gamma$. $r$ is set so that rounding loses at most a factor $1 + g$, $g$ = ``grid_loss``, in
    $R/\gamma$. $\delta'$ is $\delta$ minus the failure probability of the certified spectral
    norms. Biases enter by the augmentation $x \mapsto [x; 1]$, $\tilde A_i = [[A_i, b_i],
    [0, 1]]$, so $\|\tilde X\|_2^2 = \|X\|_2^2 + n$. A single-logit binary network is read as the
    two scores $(0, f(x))$. The derivation is in docs/bounds/spectral.md.

    Args:
      params: the network's parameters.
      X: training inputs, shape (n, ...), flattened per example for $\|X\|_2$.
      y: integer training labels, shape (n,).
      apply_fn: ``apply_fn(params, X) -> logits``; or give ``logits`` directly.
      logits: training logits, shape (n, k) (or (n,) for one binary score).
      reference: reference parameters $M_i$ (e.g. the initialisation), default 0.
      key: PRNG key for the certified method's random starts.
      options: a `SpectralOptions` (margin, margin_quantile, delta, norm method, grid_loss,
        layers, conv, lipschitz), default the paper's setting.
      **keywords: any field of `SpectralOptions` (``margin``, ``margin_quantile``, ``delta``,
        ``method``, ``grid_loss``, ``layers``, ``conv``, ``lipschitz``) or norm option of
        `genbounds.linalg.NormMethod` (``failure_probability``, ``tol``, ``rtol``,
        ``max_iter``, ``gram_iters``), applied over ``options``:
        ``margin`` $\gamma > 0$; or ``margin_quantile`` in (0, 1): $\gamma$ is that quantile
        of the training margins (0.05 or 0.10 as the papers use), default the 10% quantile;
        ``delta`` the failure probability, in (0, 1); ``method`` a norm method name or
        `NormMethod`; ``grid_loss`` how much the union-bound grid may inflate $R/\gamma$
        (default 5%).

    Returns:
      A `Bound`; without data a measure (``value=None``). Terms: the complexity terms plus, with
      data, ``margin``, ``ramp_loss``, ``x_norm``, ``width``, ``complexity_term``,
      ``confidence_term``, ``grid`` (the rounded norms and indices) and ``delta_bound``.

    Raises:
      ValueError, TypeError: bad parameters or data, delta outside (0, 1), margin <= 0, a
        quantile margin that is not positive, convolution layers with data; TypeError names a
        keyword that is neither an option nor a norm option.

    Examples:
      >>> import numpy as np
      >>> b = spectral({"Dense_0": {"kernel": 2 * np.eye(3)}, "Dense_1": {"kernel": np.eye(3)}})
      >>> round(b.complexity, 6)  # 2 · (3^{2/3} + 3^{2/3})^{3/2}
      16.970563

    References:
      Bartlett, Foster & Telgarsky, "Spectrally-normalized margin bounds for neural networks",
      NeurIPS 2017, arXiv:1706.08498 (eq. (1.2), Lemma 3.1, Theorem 3.3, Lemma A.8).
      Mohri, Rostamizadeh & Talwalkar, "Foundations of Machine Learning", 2nd ed. 2018, Thm 3.3.
    """
    opts = _spectral_options(options, keywords)
    margin, margin_quantile, delta = opts.margin, opts.margin_quantile, opts.delta
    how, grid_loss, layers, conv = opts.method, opts.grid_loss, opts.layers, opts.conv
    if X is None:
        for name, v in (("y", y), ("apply_fn", apply_fn), ("logits", logits),
                        ("margin", margin), ("margin_quantile", margin_quantile)):
            if v is not None:
                raise ValueError(f"spectral: {name} was given without X; the bound needs X")
        result = spectral_complexity(params, reference=reference, method=how, key=key,
                                     layers=layers, conv=conv, lipschitz=opts.lipschitz)
        return Bound(name="spectral", value=None, complexity=result.complexity,
                     terms=result.terms, estimated=result.estimated, reference=BFT_REFERENCE,
                     notes=result.notes)

    delta = check_delta(delta)
    check_positive(grid_loss, "grid_loss")
    data = training_margins(params, X=X, y=y, apply_fn=apply_fn, logits=logits, margin=margin,
                            margin_quantile=margin_quantile, caller="spectral")
    X2, logits, m, gamma, margin_note = data
    n = X2.shape[0]

    net, chain = data_chain(params, X=X, X2=X2, logits=logits, apply_fn=apply_fn,
                            layers=layers, conv=conv, caller="spectral")
    plain = spectral_complexity(net, reference=reference, method=how, key=key,
                                lipschitz=opts.lipschitz)
    read = chain.layers
    check_fits(read, X2, logits, "spectral")
    refs = (reference_layers(reference, net, read) if reference is not None
            else (None,) * len(read))
    binary = np.ndim(logits) == 1 or np.shape(logits)[-1] == 1
    s, b, units, fail, est = _augmented(net, read, refs, method=how, key=key)
    # The constant unit of the augmentation passes each hidden map unchanged, so the augmented
    # maps are max(rho_i, 1)-Lipschitz.
    rho_aug = [max(r, 1.0) for r in chain.rho] + [1.0]
    width = max(units + ([2] if binary else []))
    x_norm = math.sqrt(float(np.sum(X2 * X2)) + n)
    delta_bound = delta - fail
    if delta_bound <= 0.0:
        raise ValueError(
            f"delta={delta} is not larger than the failure probability of the certified "
            f"spectral norms ({fail:g}); lower failure_probability"
        )

    # Union bound over the grid (1+r)^k: R (degree L in s, 1 in b) and 1/γ each lose < (1+r).
    L = len(read)
    r = grid_ratio(grid_loss, L + 2)
    # b_i = 0 (A_i = M_i) is rounded up to the grid point k = 0 like any other value.
    grid = union_grid(("up", s, r), ("down", [gamma], r), ("up", b, r))
    (ks, (kg,), kb), (s_bar, (gamma_bar,), b_bar) = grid.k, grid.values
    ks, kb, s_bar, b_bar = list(ks), list(kb), list(s_bar), list(b_bar)
    log_prior = grid.log_prior

    log_R = sum(math.log(v) for v in s_bar) + sum(math.log(v) for v in rho_aug)
    ratios = [(2.0 / 3.0) * (math.log(bv) - math.log(sv)) for bv, sv in zip(b_bar, s_bar,
                                                                                strict=True)]
    R_bar = math.exp(log_R + 1.5 * log_sum_exp(ratios))
    ramp = float(ramp_loss(m, gamma_bar))
    complexity_term = (72.0 * x_norm * math.log(n) * math.sqrt(math.log(2.0 * width**2))
                       * R_bar / (gamma_bar * n))
    confidence_term = 3.0 * math.sqrt((math.log(2.0 / delta_bound) + log_prior) / (2.0 * n))
    value = ramp + 8.0 / n + complexity_term + confidence_term

    terms = dict(plain.terms)
    terms.update(
        margin=gamma, margin_grid=gamma_bar, ramp_loss=ramp, x_norm=x_norm, width=width,
        complexity_augmented=R_bar, complexity_term=complexity_term,
        confidence_term=confidence_term, delta_bound=delta_bound, grid_ratio=r,
        grid={"s": s_bar, "b": b_bar, "k_s": ks, "k_b": kb, "k_gamma": kg},
        lipschitz_augmented=rho_aug,
        failure_probability=fail + plain.terms["failure_probability"],
    )
    notes = plain.notes + (margin_note, "biases by augmentation x -> [x; 1]",
                           "ln(2/delta) in the confidence term (conservative vs BFT's ln(1/delta))")
    return Bound(name="spectral", value=value, complexity=plain.complexity, terms=terms, n=n,
                 delta=delta, estimated=plain.estimated or est,
                 reference=BFT_REFERENCE + "; Lemma 3.1, Thm 3.3, Lemma A.8; union bound: "
                 "docs/bounds/spectral.md", notes=notes)


def _augmented(net: Any, read: Sequence[Layer], refs: Sequence[Layer | None], *,
               method: NormMethod, key: Any):
    r"""Norms of the bias-free network on $[x; 1]$: per layer an upper bound on
    $\|\tilde A_i\|_\sigma$ and on $\|\tilde A_i^\top - \tilde M_i^\top\|_{2,1}$, the unit counts,
    the certificates' total failure probability and whether any norm is an estimate.

    Dense layers are augmented explicitly (`augment_biases`) and their norms computed on the
    matrices. A convolution's operator $A$ with bias vector $\beta$ (its channel bias repeated
    over the $P$ output positions, $\|\beta\|_2 = \sqrt P \|b\|_2$) becomes
    $\tilde A = [[A, \beta], [0, 1]]$ (hidden) or $[A, \beta]$ (last). The norm of a block matrix
    is at most the norm of the matrix of its block norms, so
    $\|\tilde A\|_\sigma \le \sigma_{\max}([[s, \|\beta\|], [0, 1]])$ and
    $\|[A, \beta]\|_\sigma \le \sqrt{s^2 + \|\beta\|^2}$ with $s \ge \|A\|_\sigma$ certified. Each
    row of $[A, \beta]$ (output position $p$, channel $c$) holds a subset of the taps of channel
    $c$'s kernel and $b_c$, so its 2-norm is at most $\sqrt{\|K_c - M_c\|^2 + (b_c - b^M_c)^2}$,
    and the (2,1) norm at most $P$ times their sum over channels (plus 1 for the constant row
    of a hidden layer when $M = 0$).

    The norms are kept in the network's cache: a second bound on the same network (``reference``
    changes only the (2,1) norms) and the convolutions' norms already measured for the spectral
    complexity are not computed again.
    """
    last = len(read) - 1
    s, b, units = [], [], []
    fail, est = 0.0, False
    keys = jax.random.split(jax.random.key(0) if key is None else key, len(read))
    for i, (layer, ref) in enumerate(zip(read, refs, strict=True)):
        hidden = i != last
        if layer.kind == "dense":
            one = _augment_one(layer, hidden)
            one_ref = _augment_one(ref, hidden) if ref is not None else None
            nr = measure_layers(net, [dataclasses.replace(one, path="0")], method=method,
                                key=keys[i])
            s.append(float(nr["0"]))
            fail += nr.failure_probability
            est = est or nr.estimated
            b.append(layer_norm_21(one, one_ref))
            units += [one.fan_in, one.fan_out]
            continue
        nr = measure_layers(net, [dataclasses.replace(layer, path="0")], method=method,
                            key=keys[i])
        sv = float(nr["0"])
        fail += nr.failure_probability
        est = est or nr.estimated
        P = output_positions(layer)
        bias = np.zeros(layer.fan_out) if layer.bias is None else np.asarray(layer.bias,
                                                                               np.float64)
        beta = math.sqrt(P) * float(np.linalg.norm(bias))
        if hidden:
            t = sv * sv + beta * beta + 1.0
            s.append(math.sqrt(0.5 * (t + math.sqrt(max(t * t - 4.0 * sv * sv, 0.0)))))
        else:
            s.append(math.sqrt(sv * sv + beta * beta))
        k = np.asarray(layer.kernel, np.float64).reshape(-1, layer.fan_out)
        bb = bias
        if ref is not None:
            k = k - np.asarray(ref.kernel, np.float64).reshape(-1, layer.fan_out)
            rb = np.zeros(layer.fan_out) if ref.bias is None else np.asarray(ref.bias, np.float64)
            bb = bias - rb
        col = np.sqrt(np.sum(k * k, axis=0) + bb * bb)
        b.append(float(P * np.sum(col)) + (1.0 if hidden and ref is None else 0.0))
        n_in = int(np.prod(layer.conv.input_shape)) * layer.fan_in
        units += [n_in + 1, P * layer.fan_out + (1 if hidden else 0)]
    return s, b, units, fail, est


def _augment_one(layer: Layer, hidden: bool) -> Layer:
    """`augment_biases` for one dense layer: [[A, b], [0, 1]] (hidden) or [A, b] (last)."""
    if hidden:
        dummy = dataclasses.replace(layer, kernel=jnp.zeros((layer.fan_out, 1),
                                                            layer.kernel.dtype), bias=None)
        return augment_biases([layer, dummy])[0]
    return augment_biases([layer])[0]


def _per_layer(x: Sequence[float] | float, num: int) -> list[float]:
    if isinstance(x, (int, float)):
        vals = [float(x)] * num
    else:
        vals = [float(v) for v in x]
        if len(vals) != num:
            raise ValueError(f"lipschitz must have one value per layer ({num}), got {len(vals)}")
    if any(not (v > 0.0 and math.isfinite(v)) for v in vals):
        raise ValueError(f"lipschitz must hold finite numbers > 0, got {vals}")
    return vals
