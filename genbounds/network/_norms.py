"""Norms of every layer of a network, keyed by layer path, in the order the layers are applied."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from genbounds.core._checks import NotBoundable, check_delta, check_key
from genbounds.linalg._conv import CONV_METHOD, conv_operator_norm
from genbounds.linalg._host import host_exact_is_cheaper
from genbounds.linalg._matrix_norms import frobenius_norm, norm_21
from genbounds.linalg._method import NormMethod, as_norm_method
from genbounds.linalg._spectral_norm import NormResult, spectral_norm

from ._layers import ConvSpec, Layer, read_layers
from ._network import as_network


class SpectralNorms(Mapping):
    """The spectral norm of each weight layer, keyed by path, in application order.

    A read-only mapping ``path -> float``; it also records how the numbers were obtained.

    Attributes:
      method: the name of the method asked for.
      norm_method: the `NormMethod` (name and options) the norms were computed with.
      estimated: True if any value may lie below the true norm (an iterative estimate).
      failure_probability: probability, over the random start vectors, that some certified value
        lies below the true norm (the sum over layers; 0 for deterministic methods). A bound built
        on these norms must charge it to its delta.
      results: per-layer `NormResult` (which method ran, iterations, lower estimates).
      layers: the `Layer` objects read from the parameters.
    """

    def __init__(self, values: dict[str, float], results: dict[str, NormResult],
                 layers: Sequence[Layer], method: str | NormMethod, notes: Sequence[str] = ()):
        self._values = values
        self.notes = tuple(notes)
        self.results = results
        self.layers = tuple(layers)
        self.norm_method = method if isinstance(method, NormMethod) else NormMethod(method)
        self.method = self.norm_method.name
        self.estimated = any(r.estimated for r in results.values())
        self.failure_probability = float(sum(r.failure_probability for r in results.values()))

    def __getitem__(self, key: str) -> float:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {v:.6g}" for k, v in self._values.items())
        kind = "estimated" if self.estimated else "certified upper bounds"
        if self.method == "exact":
            kind = "exact"
        note = "".join(f"; {n}" for n in self.notes if "geometry" in n)
        return f"SpectralNorms({{{inner}}}; method={self.method!r}, {kind}{note})"


def _runs_exact(layer: Layer, method: NormMethod) -> bool:
    """A small dense layer asked for a certified norm gets the exact one (float64 LAPACK):
    cheaper than compiling the Krylov kernel, and deterministic (failure probability 0)."""
    return (layer.kind == "dense" and method.name == "certified"
            and host_exact_is_cheaper(layer.kernel.shape))


def _draws_start(layer: Layer, method: NormMethod) -> bool:
    """Whether the layer's norm can depend on the random start (which depends on its shape and
    the method alone, never on the weights)."""
    if layer.kind == "dense":
        return method.uses_key and not _runs_exact(layer, method)
    return CONV_METHOD[method.name] == "power"


def layer_spectral_norm(layer: Layer, *, method: str | NormMethod, key: jax.Array | None,
                        failure_probability: float = 1e-6, **options: Any) -> NormResult:
    """The spectral norm of one layer's linear map (the convolution operator for conv layers).

    Dense layers with ``m * n * min(m, n) <= 2^27`` asked for ``"certified"`` get the exact
    float64 SVD instead (an exact value is a certified one, with failure probability 0).
    """
    method = as_norm_method(method, {"failure_probability": failure_probability, **options},
                            caller="layer_spectral_norm")
    if _runs_exact(layer, method):
        return spectral_norm(layer.kernel, method="exact")
    if layer.kind == "dense":
        return spectral_norm(layer.kernel, method=method, key=key)
    spec = layer.conv or ConvSpec()
    return conv_operator_norm(layer.kernel, input_shape=spec.input_shape, strides=spec.strides,
                              padding=spec.padding, method=method, key=key)


def _matrix_key(layer: Layer, method: NormMethod, key: jax.Array | None) -> tuple:
    """What a layer's norm depends on: the kernel's values (a digest of its bytes), shape and
    dtype, a convolution's geometry, the method with its options, and the start vector's key
    where one is drawn."""
    kernel = np.ascontiguousarray(np.asarray(layer.kernel))
    digest = hashlib.blake2b(kernel.tobytes(), digest_size=20).hexdigest()
    geometry = None if layer.kind == "dense" else repr(layer.conv or ConvSpec())
    bits = (bytes(np.asarray(jax.random.key_data(key)).tobytes())
            if key is not None and _draws_start(layer, method) else None)
    return ("layer_norm", layer.kind, kernel.shape, str(kernel.dtype), digest, geometry, method,
            bits)


def measure_layers(network: Any, layers: Sequence[Layer], *, method: NormMethod,
                   key: jax.Array | None, notes: Sequence[str] = ()) -> SpectralNorms:
    """The spectral norms of `layers` (of `network`, or matrices derived from its layers: with
    biases appended, minus a reference), each computed at most once per network.

    Layer ``i`` draws its random start (if any) from ``jax.random.split(key, len(layers))[i]``
    (``key=None``: ``jax.random.key(0)``), as `spectral_norms` does for a parameter tree of
    these layers, so the numbers are those of `spectral_norms`. Every result is kept in the
    network's ``norm_cache`` under `_matrix_key`: a bound asking again for the same matrix with
    the same method, options and start gets the stored `NormResult`.
    """
    store = network.norm_cache
    if key is not None:
        key = check_key(key)
    # One key per layer, split only when some layer draws a random start (which layers do
    # depends on their shapes alone): a network of small layers never touches the PRNG.
    keys: list[Any] | None = None
    results = {}
    for i, layer in enumerate(layers):
        k = None
        if not (layer.kind == "dense" and (method.name in ("exact", "gram")
                                           or _runs_exact(layer, method))):
            if keys is None:
                keys = list(jax.random.split(jax.random.key(0) if key is None else key,
                                             len(layers)))
            k = keys[i]
        memo = _matrix_key(layer, method, k)
        if memo not in store:
            try:
                store[memo] = layer_spectral_norm(layer, method=method, key=k)
            except ValueError as e:  # name the layer of params the kernel error is about
                raise ValueError(f"params, layer {layer.path!r}: {e}") from None
        results[layer.path] = store[memo]
    values = {p: float(r.value) for p, r in results.items()}
    return SpectralNorms(values, results, layers, method, notes=notes)


def spectral_norms(
    params: Any,
    *,
    method: str | NormMethod = "certified",
    key: jax.Array | None = None,
    failure_probability: float = 1e-6,
    layers: Sequence[str] | None = None,
    conv: ConvSpec | Mapping[str, ConvSpec] | None = None,
    apply_fn: Any = None,
    X: Any = None,
    **options: Any,
) -> SpectralNorms:
    r"""The spectral norm $\|A_i\|_\sigma$ (largest singular value) of every weight layer.

    For a Flax ``Dense`` kernel of shape (in, out) this is the largest singular value of the
    kernel. For a convolution it is the operator norm of the convolution as a linear map on its
    input (Sedghi et al. 2019), not the norm of the reshaped kernel; see `conv_operator_norm`.

    Methods:

    * ``"certified"`` (default): never below the true norm. The exact float64 SVD for dense
      layers with $m\,n\,\min(m, n) \le 2^{27}$ (up to about 512 x 512: cheaper than compiling a
      kernel, and exact, so with failure probability 0; docs/benchmarks.md); for
      large ones a Lanczos estimate raised by a randomised certificate that fails with probability
      at most ``failure_probability`` per layer over the random start (docs/spectral_norms.md);
      deterministic FFT bounds for convolutions.
    * ``"exact"``: SVD (float64 when x64 is on and the weights are float64).
    * ``"lanczos"``, ``"power"``: fast estimates, which approach the norm from below.
    * ``"gram"``: Gram iteration (Delattre et al. 2023), a deterministic upper bound.

    The norms of one `Network` are computed once per matrix, method, options and start: every
    later call (from another bound of a `report`, say) reads them from the network's cache.

    Args:
      params: the network's parameters (Flax linen, nnx State/Module, or a plain pytree), or a
        `Network` (from `Network.trace`: convolutions then get their real strides, padding and
        input size).
      method: one of the methods above, or a `genbounds.linalg.NormMethod` holding the name
        and its options.
      key: PRNG key for the random start vectors; it must not depend on the weights. Defaults to
        ``jax.random.key(0)``.
      failure_probability: per-layer failure probability of the certified method, in (0, 1).
      layers: optional explicit layer order (see `read_layers`).
      conv: geometry of convolution layers (see `ConvSpec`). Without it (and without a traced
        network), a convolution's value is a bound valid for every stride, padding and input
        size, and the result's ``notes`` say so.
      apply_fn, X: the network's function and example inputs; the network is then traced.
      **options: the method's options (``tol``, ``max_iter``, ``rtol``, ``gram_iters``; see
        `NormMethod`), when ``method`` is a name.

    Returns:
      A `SpectralNorms` mapping from layer path to norm, in application order.

    Raises:
      ValueError, TypeError: bad parameters (see `read_layers`) or options; TypeError names
        an option that no method knows.

    Examples:
      >>> import numpy as np
      >>> norms = spectral_norms({"Dense_0": {"kernel": np.diag([3.0, 1.0])},
      ...                         "Dense_1": {"kernel": np.ones((2, 1))}})
      >>> [round(v, 6) for v in norms.values()]
      [3.0, 1.414214]

    References:
      Sedghi, Gupta & Long, "The Singular Values of Convolutional Layers", ICLR 2019,
      arXiv:1805.10408. Delattre, Barthélemy, Araujo & Allauzen, "Efficient Bound of Lipschitz
      Constant for Convolutional Layers by Gram Iteration", ICML 2023, arXiv:2305.16173.
      Kuczyński & Woźniakowski, "Estimating the largest eigenvalue by the power and Lanczos
      algorithms with a random start", SIAM J. Matrix Anal. Appl. 13(4), 1992.
    """
    check_delta(failure_probability, "failure_probability")
    how = as_norm_method(method, {"failure_probability": failure_probability, **options},
                         caller="spectral_norms")
    if key is not None:
        key = check_key(key)
    net = as_network(params, apply_fn=apply_fn, X=X, layers=layers, conv=conv,
                     caller="spectral_norms")
    # The whole mapping is kept too, so that a second call returns the same object.
    key_bits = None if key is None else bytes(np.asarray(jax.random.key_data(key)).tobytes())
    memo = ("spectral_norms", how, key_bits)
    if memo not in net.norm_cache:
        net.norm_cache[memo] = measure_layers(net, net.layers, method=how, key=key,
                                              notes=net.notes)
    return net.norm_cache[memo]


def output_positions(layer: Layer) -> int:
    """Number of spatial output positions of a conv layer (needs its input shape)."""
    spec = layer.conv or ConvSpec()
    if spec.input_shape is None:
        raise NotBoundable(
            f"the convolution {layer.path!r} needs its input shape for this quantity: pass "
            f"conv={{{layer.path!r}: ConvSpec(input_shape=..., strides=..., padding=...)}}"
        )
    window = layer.window
    strides = (spec.strides,) * len(window) if isinstance(spec.strides, int) else spec.strides
    total = 1
    for i, (n, k, s) in enumerate(zip(spec.input_shape, window, strides, strict=True)):
        if spec.padding in ("SAME", "CIRCULAR"):
            out = -(-n // s)
        elif spec.padding == "VALID":
            out = -(-(n - k + 1) // s)
        else:
            lo, hi = spec.padding[i]
            out = (n + lo + hi - k) // s + 1
        total *= max(out, 0)
    return total


def layer_norm_21(layer: Layer, reference: Layer | None = None) -> float:
    r"""$\|A^\top - M^\top\|_{2,1}$: the sum, over output units, of the 2-norm of each unit's
    incoming weights (BFT 2017's convention; for a Flax kernel (in, out): over its columns).

    For a convolution the output units are (position, channel) pairs; each sees at most the full
    kernel slice of its channel, so the value returned is ``positions × Σ_c ||K[..., c]||_2``, an
    upper bound (exact with circular padding) that needs the layer's input shape.
    """
    delta = layer.kernel if reference is None else layer.kernel - reference.kernel
    if layer.kind == "dense":
        return float(norm_21(delta))
    return float(output_positions(layer) * norm_21(delta.reshape(-1, delta.shape[-1])))


def layer_frobenius(layer: Layer, reference: Layer | None = None) -> float:
    """Frobenius norm of the kernel (minus the reference's)."""
    delta = layer.kernel if reference is None else layer.kernel - reference.kernel
    return float(frobenius_norm(delta.reshape(-1, delta.shape[-1])))


def read_reference(reference: Any, layers: Sequence[Layer]) -> tuple[Layer, ...]:
    """Reads reference matrices M_i (e.g. the initial parameters) matching `layers` by path.

    The reference is read in the order of `layers` (so no ordering question arises) and with
    the same BatchNorm folding as the parameters.
    """
    try:
        ref = read_layers(reference, layers=[layer.path for layer in layers])
    except ValueError as e:
        if "normalisation" not in str(e):
            raise ValueError(f"reference does not match params: {e}") from e
        ref = read_layers(reference)  # creation order known; BatchNorm placed by it
    by_path = {layer.path: layer for layer in ref}
    out = []
    for layer in layers:
        m = by_path.get(layer.path)
        if m is None:
            raise ValueError(
                f"reference has no layer at {layer.path!r}; its layers are {list(by_path)}"
            )
        if tuple(m.kernel.shape) != tuple(layer.kernel.shape):
            raise ValueError(
                f"reference: the kernel at {layer.path!r} has shape {tuple(m.kernel.shape)}, "
                f"expected {tuple(layer.kernel.shape)} as in params"
            )
        out.append(m)
    return tuple(out)


def log_sum_exp(xs: Sequence[float]) -> float:
    """log Σ exp(x_i) in float64, stable for very large or small terms."""
    arr = np.asarray(xs, dtype=np.float64)
    top = float(np.max(arr))
    if not math.isfinite(top):
        return top
    return top + math.log(float(np.sum(np.exp(arr - top))))
