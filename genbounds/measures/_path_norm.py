"""The l_p path norm of a ReLU network (Neyshabur, Tomioka & Srebro 2015), a measure, not a bound.

Computed as Jiang et al. (2020)'s code does: every parameter replaced by $|w|^p$, an all-ones
input through the resulting linear network, the outputs summed. A traced network is re-evaluated
on its own graph (skip connections, pooling and reshapes included); a network read from its
parameters alone is a plain chain, its activations rescaled by powers of two so that deep
networks neither overflow nor underflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import check_choice, check_positive, checked_result
from genbounds.core._logspace import exp_or_inf
from genbounds.network._layers import ConvSpec, Layer
from genbounds.network._network import as_network
from genbounds.network._path_lifting import CONVENTIONS, lifted_path_sum

from ._references import JIANG_REFERENCE, NEYSHABUR_2015_REFERENCE


def _conv_forward(kernel: jax.Array, x: jax.Array, spec: ConvSpec) -> jax.Array:
    """One linear convolution of x (1, *spatial, c_in) with a non-negative kernel, Flax layout."""
    rank = kernel.ndim - 2
    strides = (spec.strides,) * rank if isinstance(spec.strides, int) else tuple(spec.strides)
    padding: Any = spec.padding
    if padding == "CIRCULAR":  # flax.linen.Conv: wrap-pad ((k-1)//2, k//2), then VALID
        pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in kernel.shape[:-2]] + [(0, 0)]
        x = jnp.pad(x, pads, mode="wrap")
        padding = "VALID"
    elif not isinstance(padding, str):
        padding = tuple(tuple(int(v) for v in p) for p in padding)
    spatial = "DHW"[-rank:] if rank <= 3 else None
    if spatial is None:
        raise ValueError(f"path_norm handles 1-, 2- and 3-D convolutions, got a {rank}-D kernel")
    dn = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=strides, padding=padding, dimension_numbers=dn,
        precision=jax.lax.Precision.HIGHEST,
    )


def _path_sum(layers: Sequence[Layer], p: float, biases: bool) -> tuple[float, int]:
    """(s, e) with sum over paths of prod |w|^p = s 2^e: the |w|^p network on an all-ones input.

    The activations are rescaled by a power of two (exact in floating point) after every layer
    and the exponent is kept apart, so deep or large networks neither overflow nor underflow.
    """
    first = layers[0]
    if first.kind == "conv":
        spec = first.conv or ConvSpec()
        if spec.input_shape is None:
            raise ValueError(
                f"path_norm needs the input shape of the first convolution {first.path!r}: pass "
                f"conv={{{first.path!r}: ConvSpec(input_shape=..., strides=..., padding=...)}}"
            )
        shape = (1, *spec.input_shape, first.fan_in)
    else:
        shape = (first.fan_in,)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    v: Any = np.ones(shape, dtype=np.float64)
    scale = 0
    prev = None
    for layer in layers:
        kp = np.abs(np.asarray(layer.kernel, dtype=np.float64)) ** p
        if layer.kind == "dense":
            if prev is not None and prev.kind == "conv":
                v = np.asarray(v, dtype=np.float64).reshape(-1)  # Flax flattens (H, W, C)
            if v.shape != (layer.fan_in,):
                raise ValueError(
                    f"path_norm: {layer.path!r} has fan-in {layer.fan_in} but the layers before "
                    f"it produce {int(np.prod(v.shape))} values; path_norm assumes a plain "
                    "feed-forward stack of the layers read (no pooling, reshape or skip "
                    "connection that the parameters cannot show)"
                )
            v = kp.T @ v
        else:
            if prev is not None and prev.kind == "dense":
                raise ValueError(
                    f"path_norm: a convolution {layer.path!r} follows the dense layer "
                    f"{prev.path!r}; the reshape between them is not known"
                )
            spec = layer.conv or ConvSpec()
            if (prev is not None and spec.input_shape is not None
                    and tuple(spec.input_shape) != tuple(v.shape[1:-1])):
                raise ValueError(
                    f"path_norm: {layer.path!r} expects input shape {tuple(spec.input_shape)} "
                    f"but the previous layer gives {tuple(v.shape[1:-1])}; a pooling or "
                    "reshaping layer in between cannot be seen in the parameters"
                )
            out = _conv_forward(jnp.asarray(kp, dtype), jnp.asarray(v, dtype), spec)
            v = np.asarray(out, dtype=np.float64)
        # v holds the true activations divided by 2^scale; powers of two rescale exactly.
        exps = [scale + _exponent(v)]
        c = None
        if biases and layer.bias is not None:
            # a bias is the weight of a path that starts at a constant unit of value 1
            c = np.abs(np.asarray(layer.bias, dtype=np.float64)) ** p
            exps.append(_exponent(c))
        new_scale = max(exps)
        if new_scale <= -_NO_EXP // 2:
            return 0.0, 0  # every activation is zero: no path carries weight
        v = np.ldexp(v, scale - new_scale)
        if c is not None:
            v = v + np.ldexp(c, -new_scale)
        scale = new_scale
        prev = layer
    return float(np.sum(v)), scale


_NO_EXP = 10**9


def _path_sum_traced(net: Any, p: float, biases: bool, convention: str = "jiang"
                     ) -> tuple[float, int]:
    """(s, e) as `_path_sum`, for a network of any structure: its records re-evaluated, in
    float64, on an all-ones input with every weight w replaced by |w|^p (kernels, biases,
    per-channel scales, pooling factors, the coefficients of residual adds); the forward pass of
    `genbounds.network` (_path_lifting.py), under Jiang et al.'s or Gonon et al.'s convention
    for max pooling and activations."""
    return lifted_path_sum(net, p, biases=biases, convention=convention, caller="path_norm")


def _exponent(x: np.ndarray) -> int:
    """The binary exponent of max(x) (x >= 0), or -_NO_EXP when x is all zeros."""
    top = float(np.max(x))
    return int(np.frexp(top)[1]) if top > 0.0 else -_NO_EXP


@checked_result
def path_norm(
    params: Any,
    *,
    p: float = 2.0,
    power: bool = False,
    biases: bool = True,
    layers: Sequence[str] | None = None,
    conv: ConvSpec | Mapping[str, ConvSpec] | None = None,
    convention: str = "jiang",
) -> Bound:
    r"""The $\ell_p$ path norm of a feed-forward ReLU network.

    $$\phi_p(w) = \Big(\sum_{\text{paths } \pi} \prod_{e \in \pi} |w_e|^p\Big)^{1/p},$$

    the sum running over every input-to-output path through the weights (Neyshabur, Tomioka &
    Srebro 2015). It is computed as Jiang et al.'s code does: replace every parameter by
    $|w|^p$, feed an all-ones input through the *linear* network (all entries are non-negative,
    so ReLU is the identity), and sum the outputs. With ``power=True`` the $1/p$ root is not
    taken: for $p = 2$ that is Jiang et al. (2020)'s path-norm measure $\mu_{44}$ (eq. 44).

    **Convention** for what is not a linear map. ``"jiang"`` (default): Jiang et al.'s code,
    which runs the model on the $|w|^p$ weights, so a max pool stays a max and an activation is
    applied as it is. ``"gonon"``: the path lifting of Gonon, Brisebarre, Riccietti & Gribonval
    (2024), the norm their generalisation bound (`genbounds.bounds.gonon`) is stated for: a
    max-pooling neuron has an edge of weight 1 from every input of its window (the pool becomes
    a sum), a positively homogeneous activation $g$ is the ReLU pair
    $g(1)\,\mathrm{relu}(t) + g(-1)\,\mathrm{relu}(-t)$, and anything that is not an operation
    of a DAG ReLU network is refused by name (`NotBoundable`). On a ReLU network without max
    pooling the two agree.

    With ``biases=True`` (the default, as in Jiang's code, which squares every parameter) a bias
    is the weight of a path from a constant unit: the result is the path norm of the bias-free
    network on $[x; 1]$ (`augment_biases`). ``biases=False`` ignores them.

    **Structure.** The layers read from `params` are applied in order with nothing in between
    (no pooling, skip connection or reshape other than flattening before the first dense layer
    after a convolution); shapes that do not fit raise. Convolutions use their `ConvSpec`
    (strides, padding) and need the first convolution's input shape. The path norm is invariant
    under the ReLU rescaling $W_i \to cW_i$, $b_i \to cb_i$, $W_{i+1} \to W_{i+1}/c$ ($c > 0$),
    and homogeneous of degree 1 in each bias-free layer.

    Args:
      params: the network's parameters (Flax linen, nnx, or a plain pytree).
      p: the exponent $p > 0$ (1 and 2 are the usual ones).
      power: return $\sum_\pi \prod |w|^p$ instead of its $p$-th root.
      biases: include the biases as paths from a constant input.
      layers: explicit layer order (see `read_layers`).
      conv: geometry of the convolution layers (see `ConvSpec`).
      convention: ``"jiang"`` or ``"gonon"`` (above); a network read from parameter names is a
        chain of dense or convolution layers with ReLU, where the two agree.

    Returns:
      A measure (``value=None``) with ``complexity`` the path norm (or its $p$-th power) and
      terms ``log_path_sum`` ($\ln \sum_\pi \prod|w|^p$), ``p``, ``power``, ``biases``.

    Raises:
      ValueError, TypeError: bad parameters, p <= 0, a structure the forward pass cannot follow,
        a convolution without its input shape.

    Examples:
      >>> import numpy as np
      >>> params = [np.array([[3.0]]), np.array([[-2.0]])]  # x -> -2 relu(3 x)
      >>> path_norm(params).complexity  # |3 * (-2)|
      6.0
      >>> path_norm(params, power=True).complexity  # Jiang et al.'s mu_44 = (3 * 2)^2
      36.0

    References:
      Neyshabur, Tomioka & Srebro, "Norm-Based Capacity Control in Neural Networks", COLT 2015,
      arXiv:1503.00036. Jiang et al., "Fantastic Generalization Measures and Where to Find
      Them", ICLR 2020, arXiv:1912.02178, eq. (44).
    """
    p = check_positive(p, "p")
    check_choice(convention, "convention", CONVENTIONS)
    net = as_network(params, layers=layers, conv=conv, caller="path_norm")
    if not net.structure_assumed:
        mant, scale = _path_sum_traced(net, p, bool(biases), convention)
    else:
        read = net.chain("path_norm (sum over the paths of a chain)").layers
        mant, scale = _path_sum(read, p, bool(biases))
    log_sum = math.log(mant) + scale * math.log(2.0) if mant > 0.0 else -math.inf
    total = math.ldexp(mant, scale) if log_sum < 709.0 else math.inf
    if power:
        value = total
    elif math.isfinite(total):
        value = math.sqrt(total) if p == 2.0 else total ** (1.0 / p)
    else:
        value = exp_or_inf(log_sum / p)
    name = f"l{p:g}_path_norm" + ("_power" if power else "")
    name += "_gonon" if convention == "gonon" else ""
    notes = ["biases included as paths from a constant input (Jiang et al.'s code)" if biases
             else "biases excluded",
             "paths of the traced graph (skip connections, pooling and reshapes included)"
             if not net.structure_assumed
             else "assumes a plain feed-forward stack of the layers read, with ReLU "
                  "(positively homogeneous) activations: parameters alone do not show them"]
    return Bound(name=name, value=None, complexity=value,
                 terms={"log_path_sum": log_sum, "p": p, "power": bool(power),
                        "biases": bool(biases), "convention": convention},
                 reference=NEYSHABUR_2015_REFERENCE + "; " + JIANG_REFERENCE + ", eq. (44)",
                 notes=tuple(notes))
