"""The VC bound on the test error, and an upper bound on the VC dimension of ReLU networks.

`vc` implements Vapnik's bound in the form of Burges (1998), eq. (3), the seed paper's eq. (1):

$$R \\le R_{\\mathrm{emp}} + \\sqrt{\\frac{h\\,(\\ln(2n/h) + 1) - \\ln(\\delta/4)}{n}}.$$

`vc_dimension_bound` bounds the VC dimension of a fully connected network with a piecewise-linear
activation (ReLU: 2 pieces) from its architecture alone. The bound is *derived* here (not copied
from a printed theorem), following the growth-function argument of Bartlett, Harvey, Liaw &
Mehrabian (JMLR 2019, the proof of their Theorem 7 = arXiv 1703.02930 Theorem 6): partition the
parameter space layer by layer into regions where the network is a polynomial of the
parameters, count the regions with the sign-pattern lemma of Anthony & Bartlett (1999,
Theorem 8.3), and take the largest m with 2^m no larger than the count. The full derivation, its
assumptions and the choices for multiclass outputs are in docs/bounds/vc.md.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import (
    NotBoundable,
    check_delta,
    check_n,
    check_unit_interval,
    checked_result,
)

_VAPNIK = (
    "Vapnik, Statistical Learning Theory, 1998 / The Nature of Statistical Learning Theory, "
    "1995; in the form of Burges, A tutorial on support vector machines for pattern "
    "recognition, 1998, eq. (3)"
)
_VCDIM = (
    "VC dimension bound derived in docs/bounds/vc.md from the growth-function argument of "
    "Bartlett, Harvey, Liaw & Mehrabian, Nearly-tight VC-dimension and pseudodimension bounds "
    "for piecewise linear neural networks, JMLR 20(63), 2019, arXiv:1703.02930, and the "
    "sign-pattern lemma of Anthony & Bartlett, Neural Network Learning, 1999, Theorem 8.3"
)


# ----------------------------------------------------------------------------------------------
# The VC dimension of piecewise-linear networks (derivation: docs/bounds/vc.md).


def _log2_sign_patterns(num_polys: float, degree: int, num_vars: int) -> float:
    """log2 of a bound on the number of sign vectors (1[P_j >= 0])_j of `num_polys` polynomials
    of degree <= `degree` in `num_vars` variables: 2^M always, and 2 (2 e M D / N)^N for M >= N
    (Anthony & Bartlett 1999, Theorem 8.3)."""
    if num_polys < num_vars:
        return float(num_polys)
    warren = 1.0 + num_vars * math.log2(2.0 * math.e * num_polys * degree / num_vars)
    return min(float(num_polys), warren)


def _cumulative_params(sizes: Sequence[int], bias: Sequence[bool]) -> list[int]:
    out, total = [], 0
    for i in range(1, len(sizes)):
        total += sizes[i - 1] * sizes[i] + (sizes[i] if bias[i - 1] else 0)
        out.append(total)
    return out


def _output_polys_per_example(num_outputs: int) -> int:
    # One output: the sign of f. k >= 2 outputs: the argmax loss 1[argmax f != y] is fixed by the
    # signs of the k - 1 differences f_y - f_j (k = 2: one difference, the binary case).
    return 1 if num_outputs <= 2 else num_outputs - 1


def _growth_log2(m: int, sizes: Sequence[int], cum: Sequence[int], pieces: int) -> float:
    """log2 of the bound on the number of loss patterns on m labelled examples (vc.md, eq. (G))."""
    depth = len(sizes) - 1
    total = 0.0
    for i in range(1, depth):  # hidden layer i: m * k_i * (p - 1) polynomials of degree i
        total += _log2_sign_patterns(m * sizes[i] * (pieces - 1), i, cum[i - 1])
    c = _output_polys_per_example(sizes[-1])  # output layer: degree L in all W parameters
    total += _log2_sign_patterns(m * c, depth, cum[-1])
    return total


def _shatterable(m: int, sizes, cum, pieces) -> bool:
    # m examples can only be shattered if 2^m <= the number of patterns; the tiny tolerance keeps
    # rounding from ever lowering the bound (a larger m is the safe side).
    t = _growth_log2(m, sizes, cum, pieces)
    return m <= t * (1.0 + 1e-12) + 1e-9


def _counting_bound(sizes: Sequence[int], bias: Sequence[bool], pieces: int) -> int:
    """The largest m with m <= log2 Pi(m): an upper bound on the VC dimension (vc.md)."""
    cum = _cumulative_params(sizes, bias)
    w = cum[-1]
    # For m >= W the exponent is concave in m and holds at m = W (vc.md), so the m that satisfy
    # it form an interval [W, b]: find b by doubling, then integer bisection.
    lo = w
    if not _shatterable(lo, sizes, cum, pieces):  # pragma: no cover - excluded by vc.md, Step 4
        raise AssertionError("internal error: the counting bound failed at m = W")
    hi = 2 * lo
    while _shatterable(hi, sizes, cum, pieces):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _shatterable(mid, sizes, cum, pieces):
            lo = mid
        else:
            hi = mid
    return lo


def _check_sizes(layer_sizes: Any) -> tuple[int, ...]:
    if isinstance(layer_sizes, (str, bytes)) or not isinstance(layer_sizes, Sequence):
        raise TypeError(
            "layer_sizes must be a sequence (d_in, h_1, ..., h_L, d_out) of positive integers, "
            f"got {layer_sizes!r}"
        )
    sizes = []
    for i, s in enumerate(layer_sizes):
        if isinstance(s, bool) or not isinstance(s, (numbers.Integral, np.integer)):
            raise TypeError(f"layer_sizes[{i}] must be a positive integer, got {s!r}")
        if int(s) < 1:
            raise ValueError(f"layer_sizes[{i}] must be a positive integer, got {s!r}")
        sizes.append(int(s))
    if len(sizes) < 2:
        raise ValueError(
            f"layer_sizes must hold at least (d_in, d_out), got {tuple(layer_sizes)!r}"
        )
    return tuple(sizes)


def _check_bias(bias: Any, num_layers: int) -> tuple[bool, ...]:
    if isinstance(bias, (bool, np.bool_)):
        return (bool(bias),) * num_layers
    if isinstance(bias, Sequence) and not isinstance(bias, (str, bytes)):
        flags = tuple(bias)
        if len(flags) != num_layers or not all(isinstance(b, (bool, np.bool_)) for b in flags):
            raise ValueError(
                f"bias must be True/False or one True/False per weight layer ({num_layers}), "
                f"got {bias!r}"
            )
        return tuple(bool(b) for b in flags)
    raise TypeError(f"bias must be True/False or a sequence of them, got {bias!r}")


# Linear pieces of the piecewise-linear activations a traced network may hold (reshapes and
# non-overlapping max pooling are not activations here: `chain(dense_only=True)` admits no pool).
_PIECES = {"relu": 2, "leaky_relu": 2, "abs": 2, "relu6": 3, "hard_tanh": 3, "reshape": 1}


def _check_pieces(pieces: Any) -> int:
    if isinstance(pieces, bool) or not isinstance(pieces, (numbers.Integral, np.integer)):
        raise TypeError(f"pieces must be an integer >= 1, got {pieces!r}")
    if int(pieces) < 1:
        raise ValueError(f"pieces must be an integer >= 1, got {pieces!r}")
    return int(pieces)


def _vc_dimension_details(sizes, bias, pieces) -> dict[str, Any]:
    cum = _cumulative_params(sizes, bias)
    depth = len(sizes) - 1
    counting = _counting_bound(sizes, bias, pieces)
    out = {
        "vc_dim": counting,
        "counting_bound": counting,
        "num_params": cum[-1],
        "depth": depth,
        "effective_depth": sum(cum) / cum[-1],  # BHLM's L-bar = (1/W) sum_i W_i
        "method": "counting",
    }
    if depth == 1 and sizes[-1] <= 2:
        # A (two-class) linear classifier: halfspaces, VC dimension exactly d + 1 (affine) or d
        # (through the origin); the difference of two linear outputs is one linear output.
        exact = sizes[0] + (1 if bias[0] else 0)
        if exact < counting:
            out.update(vc_dim=exact, method="halfspaces")
    return out


def vc_dimension_bound(layer_sizes: Sequence[int], *, bias: Any = True, pieces: int = 2) -> int:
    r"""Upper bound on the VC dimension of a fully connected piecewise-linear network.

    The architecture $(d_0, d_1, \dots, d_L)$ has $L$ weight layers, hidden layers of $k_i = d_i$
    units with an activation that is piecewise linear with `pieces` = $p$ pieces (ReLU,
    leaky ReLU: $p = 2$; hard tanh: 3), and a linear output layer of $d_L$ units. With $W_i$ the
    number of parameters in layers $1..i$ ($W = W_L$), the number of patterns of the 0-1 loss on
    $m$ labelled examples is at most (docs/bounds/vc.md, eq. (G))

    $$\Pi(m) \le \prod_{i=1}^{L} S\big(M_i, i, W_i\big),\quad M_i = m k_i (p-1)\ (i<L),\
      M_L = m c,$$

    with $S(M, D, N) = \min\{2^M, 2(2eMD/N)^N\}$ for $M \ge N$ and $2^M$ otherwise (Anthony &
    Bartlett 1999, Thm 8.3), and $c = 1$ output polynomial per example when $d_L \le 2$, $c =
    d_L - 1$ otherwise. The returned $h$ is the largest integer $m$ with $2^m \le \Pi(m)$; a set
    of more than $h$ examples cannot be shattered. For a single layer with $d_L \le 2$ outputs
    (a linear classifier) the exact value $d_0 + 1$ ($d_0$ without bias) is returned.

    Outputs: 1 output is read as a score (prediction $\mathbf 1[f \ge 0]$), 2 outputs through
    their argmax (the same class of classifiers), and $k > 2$ outputs through their argmax: then
    $h$ bounds the VC dimension of the loss class $\{(x,y) \mapsto \mathbf 1[\arg\max f(x) \ne y]\}$
    (the graph dimension), which is what Vapnik's bound needs (docs/bounds/vc.md).

    Not covered: convolutions, pooling, skip connections, other activations. The bound is
    $O(W L \log W)$, like BHLM's Theorem 7, and typically exceeds $W$ several times over.

    Args:
      layer_sizes: $(d_0, d_1, \dots, d_L)$: input dimension, hidden widths, number of outputs.
      bias: whether the layers have biases: one flag for all, or one per weight layer.
      pieces: number of linear pieces $p \ge 1$ of the activation (2 for ReLU).

    Returns:
      The bound, a Python int (at least the number of parameters $W$, except for the exact
      linear-classifier case).

    Raises:
      TypeError, ValueError: sizes that are not positive integers, fewer than two sizes, a bias
        sequence of the wrong length, pieces < 1.

    Examples:
      >>> vc_dimension_bound((3, 1))  # affine halfspaces in R^3: exactly 4
      4
      >>> vc_dimension_bound((2, 3, 1))
      169

    References:
      Bartlett, Harvey, Liaw & Mehrabian, Nearly-tight VC-dimension and pseudodimension bounds
      for piecewise linear neural networks, JMLR 20(63), 2019, arXiv:1703.02930 (proof
      technique); Anthony & Bartlett, Neural Network Learning: Theoretical Foundations, 1999,
      Theorem 8.3.
    """
    sizes = _check_sizes(layer_sizes)
    flags = _check_bias(bias, len(sizes) - 1)
    p = _check_pieces(pieces)
    return int(_vc_dimension_details(sizes, flags, p)["vc_dim"])


def _sizes_from_layers(layers: Sequence[Any]) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Architecture of a chain of dense layers (objects with .kernel, .bias, .kind, .path)."""
    if not layers:
        raise ValueError("params holds no weight layer")
    for layer in layers:
        if layer.kind != "dense":
            raise NotBoundable(
                f"vc: the VC-dimension bound from parameters covers fully connected ReLU networks "
                f"only; the layer at {layer.path!r} is a {layer.kind} layer (weight sharing, "
                "pooling and the input geometry are outside the derivation in docs/bounds/vc.md). "
                "Pass vc_dim=... with a bound of your own."
            )
    sizes = [int(layers[0].kernel.shape[0])]
    for prev, layer in zip((None, *layers[:-1]), layers, strict=True):
        fan_in, fan_out = (int(s) for s in layer.kernel.shape)
        if prev is not None and fan_in != sizes[-1]:
            raise ValueError(
                f"vc: the layer at {layer.path!r} takes {fan_in} inputs but the layer before it "
                f"gives {sizes[-1]}"
            )
        sizes.append(fan_out)
    return tuple(sizes), tuple(layer.bias is not None for layer in layers)


def _capacity(h: float, n: int) -> tuple[float, str]:
    """h (ln(2n/h) + 1), Sauer's bound on ln Pi(2n), for h <= 2n; its value 2n at h = 2n beyond."""
    if h == 0.0:
        return 0.0, "sauer"
    if h <= 2 * n:
        # ln(2n/h) as ln 2 + ln n - ln h: finite for any int n (also beyond float range) and
        # for subnormal h, where 2n/h would overflow.
        return h * (math.log(2.0) + math.log(n) - math.log(h) + 1.0), "sauer"  # may be inf
    # Sauer's lemma needs 2n >= h; beyond it h (ln(2n/h) + 1) decreases and turns negative.
    # The growth function is at most 2^(2n), so ln Pi(2n) <= 2n ln 2 <= 2n: use 2n.
    return 2.0 * n, "capped"


def _check_vc_dim(vc_dim: Any) -> float:
    if isinstance(vc_dim, bool) or not isinstance(
        vc_dim, (numbers.Real, np.ndarray, jax.Array, np.generic)
    ):
        raise TypeError(f"vc_dim must be a number >= 0, got {vc_dim!r}")
    if np.ndim(vc_dim) != 0:
        raise TypeError(f"vc_dim must be a scalar, got an array of shape {np.shape(vc_dim)}")
    h = float(vc_dim)
    if not math.isfinite(h) or h < 0:
        raise ValueError(f"vc_dim must be a finite number >= 0, got {vc_dim!r}")
    return h


@checked_result
def vc(
    params: Any = None,
    *,
    n: int,
    delta: float = 0.05,
    train_error: float = 0.0,
    vc_dim: Any = None,
    layers: Sequence[str] | None = None,
    pieces: int = 2,
) -> Bound:
    r"""Vapnik's VC bound on the 0-1 test error.

    With probability at least $1 - \delta$ over the $n$ training examples, simultaneously for
    every classifier of a class of VC dimension $h$ (Vapnik 1995/1998; Burges 1998, eq. (3)):

    $$R \le R_{\mathrm{emp}} + \sqrt{\frac{h\,(\ln(2n/h) + 1) - \ln(\delta/4)}{n}}.$$

    Symbols: $R_{\mathrm{emp}}$ = `train_error`, $h$ = `vc_dim` (or the bound read from
    `params`), $n$ = `n`, $\delta$ = `delta`, natural logarithms. The term $h(\ln(2n/h)+1)$ is
    Sauer's bound on $\ln\Pi(2n)$, valid for $h \le 2n$; for $h > 2n$ it would decrease and turn
    negative, so its value at $h = 2n$, namely $2n \ge \ln 2^{2n}$, is used there (the bound is
    then at least $\sqrt 2$: vacuous). The value is vacuous (>= 1) already for $h$ of order
    $n / \ln n$; it is reported as it is, never clipped.

    With `params` and no `vc_dim`, $h$ = `vc_dimension_bound` of the architecture read from the
    parameters (dense layers with ReLU activations, linear output; BatchNorm folded first). For
    $k > 2$ outputs $h$ bounds the VC dimension of the 0-1 loss class, to which Vapnik's theorem
    applies as it is stated for indicator losses (docs/bounds/vc.md).

    Args:
      params: network parameters (Flax linen/nnx or a plain tree; see `read_layers`), or None.
      n: number of training examples, >= 1.
      delta: failure probability in (0, 1).
      train_error: the training 0-1 error $R_{\mathrm{emp}}$ in [0, 1].
      vc_dim: the VC dimension (or an upper bound on it), >= 0; overrides `params`.
      layers: explicit layer order, passed to `read_layers`.
      pieces: linear pieces of the activation (2 for ReLU), for the bound from `params`.

    Returns:
      A `Bound` named ``"vc"``: ``value`` the bound, ``complexity`` $h$, ``terms`` with
      ``train_error``, ``vc_dim``, ``capacity`` (the $\ln\Pi(2n)$ term used) and
      ``confidence_term`` (the square root).

    Raises:
      TypeError, ValueError: neither `params` nor `vc_dim`; delta outside (0, 1); n < 1;
        train_error outside [0, 1]; vc_dim < 0; convolution layers in `params`.

    Examples:
      >>> b = vc(n=1000, delta=0.05, vc_dim=10)
      >>> round(b.value, 7), b.vacuous
      (0.2595481, False)
      >>> import jax.numpy as jnp
      >>> params = {"Dense_0": {"kernel": jnp.ones((4, 8)), "bias": jnp.zeros(8)},
      ...           "Dense_1": {"kernel": jnp.ones((8, 1)), "bias": jnp.zeros(1)}}
      >>> b = vc(params, n=60_000, train_error=0.01)
      >>> b.complexity, round(b.value, 4)
      (750, 0.2857)

    References:
      Vapnik, The Nature of Statistical Learning Theory, 1995, and Statistical Learning Theory,
      1998; Burges, A tutorial on support vector machines for pattern recognition, Data Mining
      and Knowledge Discovery 2, 1998, eq. (3); Bartlett, Harvey, Liaw & Mehrabian, JMLR 20(63),
      2019, arXiv:1703.02930.
    """
    n = check_n(n)
    delta = check_delta(delta)
    if isinstance(train_error, bool) or not isinstance(
        train_error, (numbers.Real, np.ndarray, jax.Array, np.generic)
    ):
        raise TypeError(f"train_error must be a number in [0, 1], got {train_error!r}")
    if np.ndim(train_error) != 0:
        raise TypeError(f"train_error must be a scalar, got shape {np.shape(train_error)}")
    err = check_unit_interval(float(train_error), "train_error")
    notes: list[str] = []
    terms: dict[str, Any] = {"train_error": err}
    reference = _VAPNIK
    if vc_dim is not None:
        h = _check_vc_dim(vc_dim)
        notes.append("VC dimension given (vc_dim)")
    elif params is not None:
        from genbounds.network._network import as_network

        p = _check_pieces(pieces)
        net = as_network(params, layers=layers, caller="vc")
        chain = net.chain("vc (VC-dimension bound for piecewise-linear networks)",
                          dense_only=True)
        # the linear pieces of each activation, read from its program (exact for
        # piecewise-linear programs, None otherwise)
        pieces_of = {n.activation.name: n.activation.pieces for n in net.nodes
                     if n.op == "activation"}
        for names in chain.between:
            for name in names:
                need = pieces_of[name] if name in pieces_of else _PIECES.get(name.split("(")[0])
                if need is None:
                    raise NotBoundable(
                        f"vc: the activation {name!r} is not piecewise linear; the VC-dimension "
                        "bound (docs/bounds/vc.md) counts sign patterns of piecewise-linear "
                        "networks. Pass vc_dim=... with a bound of your own")
                if need > p:
                    raise NotBoundable(
                        f"vc: the activation {name!r} has {need} linear pieces but pieces={p}; "
                        f"pass pieces={need}")
        sizes, flags = _sizes_from_layers(chain.layers)
        details = _vc_dimension_details(sizes, flags, p)
        h = float(details["vc_dim"])
        terms.update(
            num_params=details["num_params"],
            depth=details["depth"],
            effective_depth=details["effective_depth"],
        )
        kind = (
            "exact VC dimension of halfspaces"
            if details["method"] == "halfspaces"
            else "upper bound on the VC dimension (loss class) by the counting argument"
        )
        notes.append(
            f"h = {int(h)}: {kind} of the {len(sizes) - 1}-layer network {sizes} with "
            f"{pieces}-piece activations (docs/bounds/vc.md)"
        )
        if net.structure_assumed:
            notes.append("read from parameter names: piecewise-linear (ReLU-like) activations "
                         "are assumed, not read; pass a Network from Network.trace to have "
                         "them read from the function")
        reference = _VAPNIK + "; " + _VCDIM
    else:
        raise ValueError("vc needs params (a network) or vc_dim (a VC dimension); got neither")

    capacity, regime = _capacity(h, n)
    if regime == "capped":
        notes.append(
            f"h = {h:g} > 2n = {2 * n}: Sauer's lemma does not apply; ln Pi(2n) <= 2n used "
            "(vacuous)"
        )
    # Burges (1998) eq. (3), in logs: ln(delta/4) = ln delta - ln 4 stays finite for subnormal
    # delta, and the division by n is done as a difference of logs (n may exceed float range).
    # capacity itself may overflow (h near the float maximum): its logarithm does not.
    log_conf_delta = math.log(math.log(4.0) - math.log(delta))
    if capacity == 0.0:
        log_numerator = log_conf_delta
    else:
        log_cap = math.log(h) + math.log(
            math.log(2.0) + math.log(n) - math.log(h) + 1.0) if regime == "sauer" else (
            math.log(2.0) + math.log(n))
        log_numerator = max(log_cap, log_conf_delta) + math.log1p(
            math.exp(-abs(log_cap - log_conf_delta)))
    conf = math.exp(0.5 * (log_numerator - math.log(n)))
    terms.update(vc_dim=h, capacity=capacity, confidence_term=conf,
                 log_confidence_term=0.5 * (log_numerator - math.log(n)))
    complexity = int(h) if float(h).is_integer() else h
    return Bound(
        name="vc",
        value=err + conf,
        complexity=complexity,
        terms=terms,
        n=n,
        delta=delta,
        reference=reference,
        notes=tuple(notes),
    )
