"""The geometry of a convolution layer (Flax layout) and the linear map it computes.

A Flax ``Conv`` kernel ``(*window, c_in, c_out)`` with its strides, padding and input spatial
shape: arguments checked in Python (`_check_kernel`, `_geometry`, mirroring
``flax.linen.linear.canonicalize_padding``), and the map itself, ``lax.conv_general_dilated``
on one unbatched input (cross-correlation, NHWC / HWIO), without bias.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_PAD_STRINGS = ("SAME", "SAME_LOWER", "VALID", "CIRCULAR", "CAUSAL")


def _check_kernel(kernel: Any) -> jax.Array:
    if kernel is None:
        raise TypeError("kernel must be an array of shape (*window, in, out), got None")
    if not isinstance(kernel, (jax.Array, np.ndarray)):
        try:
            kernel = np.asarray(kernel)
        except Exception as e:  # noqa: BLE001 - re-raised with the argument's name
            raise TypeError(f"kernel must be array-like, got {type(kernel).__name__}") from e
    dtype = np.dtype(kernel.dtype)
    if dtype.kind == "O" or not (
        np.issubdtype(dtype, np.floating)
        or np.issubdtype(dtype, np.integer)
        or np.issubdtype(dtype, np.bool_)
    ):
        raise TypeError(f"kernel must be a real numeric array, got dtype {dtype}")
    if kernel.ndim < 3:
        raise ValueError(
            "kernel must have rank >= 3, shape (*window, in_channels, out_channels) in Flax "
            f"layout, got shape {tuple(kernel.shape)}"
        )
    if kernel.size == 0:
        raise ValueError(f"kernel must not be empty, got shape {tuple(kernel.shape)}")
    if np.issubdtype(dtype, np.floating) and not bool(np.all(np.isfinite(np.asarray(kernel)))):
        bad = int(kernel.size - np.count_nonzero(np.isfinite(np.asarray(kernel))))
        raise ValueError(f"kernel must be finite, got {bad} NaN or infinite entries")
    if not np.issubdtype(dtype, np.floating):
        kernel = jnp.asarray(kernel, dtype=jnp.result_type(float))
    return jnp.asarray(kernel)


def _check_int_tuple(x: Any, name: str, rank: int, *, what: str) -> tuple[int, ...]:
    """An int (broadcast, if allowed) or a sequence of `rank` ints, each >= 1."""
    if isinstance(x, (numbers.Integral, np.integer)) and not isinstance(x, bool):
        x = (int(x),) * rank
    if not isinstance(x, Sequence) or isinstance(x, str):
        raise TypeError(f"{name} must be {what}, got {x!r}")
    if len(x) != rank:
        raise ValueError(
            f"{name} must have one entry per spatial axis of the kernel ({rank}), got {tuple(x)!r}"
        )
    out = []
    for v in x:
        if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
            raise TypeError(f"{name} must hold integers, got {tuple(x)!r}")
        if int(v) < 1:
            raise ValueError(f"{name} must hold integers >= 1, got {tuple(x)!r}")
        out.append(int(v))
    return tuple(out)


def _check_input_shape(input_shape: Any, rank: int) -> tuple[int, ...] | None:
    if input_shape is None:
        return None
    if isinstance(input_shape, (numbers.Integral, np.integer)) and not isinstance(
        input_shape, bool
    ):
        raise TypeError(
            f"input_shape must be a tuple of {rank} spatial sizes (channels excluded), "
            f"got the int {input_shape!r}"
        )
    return _check_int_tuple(
        input_shape, "input_shape", rank, what=f"a tuple of {rank} spatial sizes"
    )


def _check_padding(padding: Any, window: tuple[int, ...]) -> str | tuple[tuple[int, int], ...]:
    """Canonical padding: one of _PAD_STRINGS except CAUSAL, or explicit (lo, hi) pairs.

    Mirrors ``flax.linen.linear.canonicalize_padding``: an int p means (p, p) on every axis, a
    sequence holds per-axis ints or (lo, hi) pairs; 'CAUSAL' (1-D only) is ((k - 1, 0),).
    """
    rank = len(window)
    if isinstance(padding, str):
        if padding not in _PAD_STRINGS:
            raise ValueError(
                f"padding must be one of {', '.join(map(repr, _PAD_STRINGS))} or explicit "
                f"(lo, hi) pairs per spatial axis; got {padding!r}"
            )
        if padding == "CAUSAL":
            if rank != 1:
                raise ValueError(
                    f"padding 'CAUSAL' is only defined for 1-D convolutions (as in Flax), got a "
                    f"{rank}-D window {window}"
                )
            return ((window[0] - 1, 0),)
        return padding
    if isinstance(padding, (numbers.Integral, np.integer)) and not isinstance(padding, bool):
        return ((int(padding), int(padding)),) * rank
    if isinstance(padding, Sequence) and len(padding) == rank:
        pairs = []
        for p in padding:
            if isinstance(p, (numbers.Integral, np.integer)) and not isinstance(p, bool):
                pairs.append((int(p), int(p)))
            elif (
                isinstance(p, Sequence)
                and len(p) == 2
                and all(
                    isinstance(q, (numbers.Integral, np.integer)) and not isinstance(q, bool)
                    for q in p
                )
            ):
                pairs.append((int(p[0]), int(p[1])))
            else:
                break
        if len(pairs) == rank:
            return tuple(pairs)
    raise ValueError(
        f"padding must be 'SAME', 'VALID', 'CIRCULAR', 'SAME_LOWER', 'CAUSAL', an int, or a "
        f"sequence of {rank} ints or (lo, hi) integer pairs; got {padding!r}"
    )


class _Geometry(NamedTuple):
    window: tuple[int, ...]
    c_in: int
    c_out: int
    strides: tuple[int, ...]
    circular: bool
    # explicit zero-padding pairs (None if circular, or if the input shape is unknown)
    pads: tuple[tuple[int, int], ...] | None
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None

    @property
    def static_padding(self) -> str | tuple[tuple[int, int], ...]:
        return "CIRCULAR" if self.circular else self.pads


def _geometry(kernel: jax.Array, input_shape: Any, strides: Any, padding: Any) -> _Geometry:
    window = tuple(int(k) for k in kernel.shape[:-2])
    rank = len(window)
    c_in, c_out = int(kernel.shape[-2]), int(kernel.shape[-1])
    strides = _check_int_tuple(strides, "strides", rank, what="an int or a tuple of ints")
    padding = _check_padding(padding, window)
    input_shape = _check_input_shape(input_shape, rank)
    circular = padding == "CIRCULAR"
    pads = out = None
    if input_shape is not None:
        if circular:
            # Flax pads with wrap by ((k-1)//2, k//2), then convolves with 'VALID'.
            out = tuple((n - 1) // s + 1 for n, s in zip(input_shape, strides, strict=True))
        else:
            if isinstance(padding, str):
                pads = tuple(
                    (int(lo), int(hi))
                    for lo, hi in lax.padtype_to_pads(input_shape, window, strides, padding)
                )
            else:
                pads = padding
            out = tuple(
                (n + lo + hi - k) // s + 1 if n + lo + hi >= k else 0
                for n, k, s, (lo, hi) in zip(input_shape, window, strides, pads, strict=True)
            )
            if min(out) < 1:
                raise ValueError(
                    f"input_shape {input_shape} is too small for a window {window} with padding "
                    f"{padding!r}: the convolution has no output (output shape {out})"
                )
    return _Geometry(window, c_in, c_out, strides, circular, pads, input_shape, out)


# --------------------------------------------------------------------------------------------
# The convolution map (what Flax's Conv computes, without batch or bias).
# --------------------------------------------------------------------------------------------


def _dimension_numbers(rank: int) -> lax.ConvDimensionNumbers:
    # As flax.linen.linear._conv_dimension_numbers: NHWC input, HWIO kernel.
    ndim = rank + 2
    lhs = (0, ndim - 1) + tuple(range(1, ndim - 1))
    rhs = (ndim - 1, ndim - 2) + tuple(range(0, ndim - 2))
    return lax.ConvDimensionNumbers(lhs, rhs, lhs)


def _conv_map(kernel: jax.Array, x: jax.Array, strides, padding) -> jax.Array:
    """The layer's linear map on one unbatched input ``x`` of shape (*input_shape, c_in)."""
    window = kernel.shape[:-2]
    x = x[None]
    if padding == "CIRCULAR":
        pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in window] + [(0, 0)]
        x = jnp.pad(x, pads, mode="wrap")
        padding = "VALID"
    y = lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=padding,
        dimension_numbers=_dimension_numbers(len(window)),
        precision=lax.Precision.HIGHEST,
    )
    return y[0]

