"""Which matrices a layer's ESD is made of, under each preset.

A layer of the parameter tree (Flax linen / nnx / plain pytree, read by the same walker as
`genbounds.network.read_layers`, without BatchNorm folding and without requiring the layers to
chain, so that any architecture works) gives:

* a Dense kernel ``(in, out)``, or an embedding table ``(num, features)``: one matrix;
* a convolution kernel ``(*window, in, out)`` (Flax's HWIO): one ``in x out`` matrix per kernel
  position (WeightWatcher's "pooled" slices; Martin & Mahoney 2021, section 4), or, with
  ``conv_spectrum="operator"`` and the input's spatial shape, the matrices
  $\\hat K(2\\pi u/n)$ whose singular values are exactly those of the circular stride-1
  convolution operator (Sedghi, Gupta & Long 2019, arXiv:1805.10408).

``N >= M`` are the larger and smaller dimension of each matrix and ``Q = N/M`` its aspect ratio.
Under ``preset="weightwatcher"`` the conventions of WeightWatcher 0.7.7 are kept, its defects
included (``WWLayer.conv2D_Wmats``): 2-D conv kernels only, the slices ``W[:, :, i, j]`` of the
torch layout ``(out, in, kh, kw)`` in ``i``-outer order, ``N`` and ``M`` exchanged once per
transposed slice (so swapped when ``out < in`` and ``kh*kw`` is even), and every conv slice
multiplied by $\\sqrt{1/2}$ (its eigenvalues halved).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class LayerMatrices:
    """The matrices of one layer, ready for the spectrum.

    Attributes:
      name: the layer's path in the tree.
      kind: ``"dense"``, ``"embedding"`` or ``"conv"``.
      shape: the kernel's shape as stored (Flax layout).
      mats: array ``(count, rows, cols)`` of the matrices (float64 or float32).
      N, M: the dimensions the metrics use (WeightWatcher's, possibly swapped, under its preset).
      rf: number of matrices per layer from the kernel window (1 for dense).
      scale: factor the matrices were multiplied by (WeightWatcher's conv normalisation).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    mats: np.ndarray
    N: int
    M: int
    rf: int
    scale: float = 1.0

    @property
    def Q(self) -> float:
        return self.N / self.M

    @property
    def num_evals(self) -> int:
        return int(self.mats.shape[0] * min(self.mats.shape[1:]))


def collect_kernels(params: Any) -> list[tuple[str, np.ndarray]]:
    """(path, kernel) for every weight array of ndim >= 2 in the tree, in application order
    (the rule of `genbounds.network.read_layers`); normalisation modules and biases skipped."""
    from genbounds.network._layers import _collect, _normalise, _path_str

    if isinstance(params, (list, tuple)) and params and all(
            hasattr(p, "shape") and np.ndim(p) >= 2 for p in params):
        return [(str(i), np.asarray(p)) for i, p in enumerate(params)]
    tree = _normalise(params)
    found: list = []
    _collect(tree, (), found, [])
    out = []
    for path, node, kernel_key in found:
        if kernel_key is None:
            continue  # BatchNorm/LayerNorm statistics: no weight matrix (WeightWatcher skips)
        out.append((_path_str(path), np.asarray(node[kernel_key])))
    return out


def _is_embedding(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in ("embedding", "embed") or "embed" in name.lower()


def weightwatcher_matrices(name: str, kernel: np.ndarray) -> LayerMatrices | str:
    """WeightWatcher 0.7.7's matrices for one layer, or the reason it has none."""
    # torch_T_to_np reads float32; W.astype(float) later.
    k = np.asarray(kernel).astype(np.float32)
    if k.ndim == 2:
        kind = "embedding" if _is_embedding(name) else "dense"
        W = k if kind == "embedding" else k.T  # torch Linear weight is (out, in)
        N, M = max(W.shape), min(W.shape)
        return LayerMatrices(name, kind, tuple(kernel.shape), W.astype(np.float64)[None],
                             int(N), int(M), 1)
    if k.ndim != 4:
        return (f"a {k.ndim}-D kernel: WeightWatcher 0.7.7 analyses Linear, Embedding and Conv2d "
                "weights only (its Conv1d path hands the 3-D tensor to the SVD)")
    t = np.transpose(k, (3, 2, 0, 1))  # HWIO -> torch (out, in, kh, kw)
    N, M, imax, jmax = t.shape
    mats = []
    if N + M >= imax + jmax:  # channels LAST, the branch torch layers take
        for i in range(imax):
            for j in range(jmax):
                W = t[:, :, i, j]
                if W.shape[0] < W.shape[1]:
                    N, M = M, N  # sic: once per slice (WeightWatcher 0.7.7)
                    W = W.T
                mats.append(W)
    else:  # detected FIRST but declared LAST: WeightWatcher's "flip" branch
        out_c, in_c = N, M
        for i in range(imax):
            for j in range(jmax):
                W = t[:, :, i, j]
                if out_c < in_c:
                    W = W.T
                mats.append(W)
    rf = imax * jmax
    # conv2d_norm: W * sqrt(conv2d_count / 2), conv2d_count = 1, in float64 (numpy promotes
    # the float32 slice by the float64 scalar).
    norm = np.sqrt(1 / 2.0)
    stacked = np.stack([m * norm for m in mats]).astype(np.float64)
    return LayerMatrices(name, "conv", tuple(kernel.shape), stacked, int(N), int(M), rf,
                         float(norm))


def genbounds_matrices(name: str, kernel: np.ndarray, *, dtype: Any,
                       conv_spectrum: str, input_shape: Any) -> LayerMatrices | str:
    """The default preset's matrices: N >= M always, no rescaling, any window dimension."""
    k = np.asarray(kernel)
    if k.ndim == 2:
        kind = "embedding" if _is_embedding(name) else "dense"
        W = k.astype(dtype)
        return LayerMatrices(name, kind, tuple(k.shape), W[None], max(W.shape), min(W.shape), 1)
    window, cin, cout = k.shape[:-2], k.shape[-2], k.shape[-1]
    if conv_spectrum == "operator":
        if input_shape is None:
            return ("conv_spectrum='operator' needs the input's spatial shape: pass "
                    "conv_input_shape=(H, W) (or a mapping from layer path to shape)")
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != len(window) or any(s < w for s, w in zip(shape, window, strict=True)):
            return (f"conv_input_shape {shape} does not fit the window {window} (one size per "
                    "window axis, each at least the window)")
        # Sedghi et al. 2019: the operator's singular values are those of the DFT of the kernel,
        # zero-padded to the input size, at every frequency (circular padding, stride 1).
        kf = np.fft.fftn(k.astype(np.float64), s=shape, axes=tuple(range(len(window))))
        mats = kf.reshape(-1, cin, cout)
        mats = mats.astype(np.complex128 if dtype == np.float64 else np.complex64)
        return LayerMatrices(name, "conv", tuple(k.shape), mats, max(cin, cout), min(cin, cout),
                             int(np.prod(shape)))
    mats = k.reshape(-1, cin, cout).astype(dtype)
    return LayerMatrices(name, "conv", tuple(k.shape), mats, max(cin, cout), min(cin, cout),
                         int(np.prod(window)))
