"""Flax linen models for the experiments: a ReLU MLP and a small strided CNN.

Both create their layers in the order they apply them, so the linen parameter dict lists the
layers in application order (``Dense_0``, ``Dense_1``, ... or ``Conv_0``, ``Conv_1``,
``Dense_0``), which is what the bound code reads. Neither has normalisation layers or pooling:
every layer is a linear map (Dense, or a convolution with stated stride and SAME padding)
followed by ReLU, so the bounds apply to them without folding.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.linen.dtypes
import jax

from genbounds.core._checks import check_choice
from genbounds.core._dtypes import standard_promotion

MODEL_KINDS = ("mlp", "cnn")


def _check_int(x: Any, name: str, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x!r}")
    return int(x)


def _check_rate(x: Any, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not 0.0 <= float(x) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {x!r}")
    return float(x)


def _promote(*args: Any, dtype: Any = None, inexact: bool = True) -> list[Any]:
    """Flax's ``promote_dtype`` (inputs, kernel and bias to one dtype) by jax's standard
    promotion, explicitly: float32 parameters on float64 data compute in float64, as they do by
    default, also when the caller runs with ``jax_numpy_dtype_promotion="strict"``."""
    with standard_promotion():
        return flax.linen.dtypes.promote_dtype(*args, dtype=dtype, inexact=inexact)


class MLP(nn.Module):
    """A fully connected ReLU network: ``len(features)`` hidden layers, then a linear output.

    Inputs of any shape ``(batch, ...)`` are flattened to ``(batch, d)``.

    Attributes:
      features: the hidden widths, e.g. ``(256, 256)``; ``()`` gives a linear classifier.
      num_classes: the number of outputs (logits).
      use_bias: whether the Dense layers have biases.
      dropout: dropout rate after each hidden ReLU, active only with ``train=True``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> model = MLP(features=(16,), num_classes=3)
      >>> params = model.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
      >>> list(params), params["Dense_0"]["kernel"].shape
      (['Dense_0', 'Dense_1'], (4, 16))
    """

    features: Sequence[int]
    num_classes: int
    use_bias: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for i, f in enumerate(self.features):
            _check_int(f, f"features[{i}] (a layer width)", 1)
        _check_int(self.num_classes, "num_classes", 1)
        _check_rate(self.dropout, "dropout")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for width in self.features:
            x = nn.relu(nn.Dense(width, use_bias=self.use_bias, promote_dtype=_promote)(x))
            if self.dropout > 0.0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, use_bias=self.use_bias, promote_dtype=_promote)(x)


class CNN(nn.Module):
    """A small convolutional ReLU network: strided SAME convolutions, then a linear output.

    Each convolution has a window of side `kernel_size` on every spatial axis, stride `strides`
    and SAME padding; no pooling. On 8x8 digits with the defaults the feature maps are 4x4 then
    2x2, on 28x28 MNIST 14x14 then 7x7.

    Attributes:
      features: channels of the convolutions, e.g. ``(32, 64)``.
      num_classes: the number of outputs (logits).
      kernel_size: the side of the window: an int for a square window over images, or one side
        per spatial axis, e.g. ``(5,)`` for a 1-D convolution over sequences (MNIST-1D).
      strides: the stride of every convolution: an int (the same on every spatial axis) or one
        per spatial axis.
      use_bias: whether the layers have biases.
      dropout: dropout rate after each convolution's ReLU, active only with ``train=True``.

    With an int `kernel_size` the inputs must be images ``(batch, height, width, channels)``:
    load the data with ``flatten=False``. With k sides they are ``(batch, *k spatial axes,
    channels)``; a 1-D network also takes sequences ``(batch, length)`` as one channel.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> model = CNN(features=(4,), num_classes=3, kernel_size=(5,))
      >>> params = model.init(jax.random.key(0), jnp.ones((1, 40)))["params"]
      >>> params["Conv_0"]["kernel"].shape, model.apply({"params": params}, jnp.ones((2, 40))).shape
      ((5, 1, 4), (2, 3))
    """

    features: Sequence[int] = (32, 64)
    num_classes: int = 10
    kernel_size: int | tuple[int, ...] = 3
    strides: int | tuple[int, ...] = 2
    use_bias: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if len(self.features) == 0:
            raise ValueError("features must name at least one convolution, got ()")
        for i, f in enumerate(self.features):
            _check_int(f, f"features[{i}] (a channel count)", 1)
        _check_int(self.num_classes, "num_classes", 1)
        window, strides = self._window()
        for i, k in enumerate(window):
            _check_int(k, "kernel_size" if isinstance(self.kernel_size, int) else
                       f"kernel_size[{i}]", 1)
        if len(strides) != len(window):
            raise ValueError(f"strides must be an int or one stride per spatial axis of "
                             f"kernel_size {self.kernel_size!r}, got {self.strides!r}")
        for i, s in enumerate(strides):
            _check_int(s, "strides" if isinstance(self.strides, int) else f"strides[{i}]", 1)
        _check_rate(self.dropout, "dropout")
        super().__post_init__()

    def _window(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """(window, strides), one entry per spatial axis."""
        k, s = self.kernel_size, self.strides
        window = tuple(k) if isinstance(k, Sequence) else (k, k)
        if len(window) == 0:
            raise ValueError("kernel_size must be an int or name at least one side, got ()")
        strides = tuple(s) if isinstance(s, Sequence) else (s,) * len(window)
        return window, strides

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        window, strides = self._window()
        if len(window) == 1 and x.ndim == 2:
            x = x[..., None]  # a sequence (batch, length): one channel
        if x.ndim != len(window) + 2:
            if len(window) == 2:
                raise ValueError(
                    "CNN inputs must be images of shape (batch, height, width, channels), got "
                    f"shape {tuple(x.shape)}; load the dataset with flatten=False"
                )
            raise ValueError(
                f"CNN inputs with a {len(window)}-D window must have shape (batch, "
                f"{len(window)} spatial axes, channels), got shape {tuple(x.shape)}"
            )
        for channels in self.features:
            x = nn.Conv(channels, window, strides=strides, padding="SAME",
                        use_bias=self.use_bias, promote_dtype=_promote)(x)
            x = nn.relu(x)
            if self.dropout > 0.0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, use_bias=self.use_bias, promote_dtype=_promote)(x)


def make_model(
    kind: str,
    *,
    depth: int,
    width: int,
    num_classes: int,
    use_bias: bool = True,
    dropout: float = 0.0,
    kernel_size: int = 3,
    strides: int = 2,
) -> nn.Module:
    """Builds an `MLP` or a `CNN` of the given depth and width.

    Args:
      kind: ``"mlp"`` or ``"cnn"``.
      depth: the number of hidden layers (MLP, >= 0; 0 is a linear classifier) or of
        convolutions (CNN, >= 1).
      width: the width of every hidden layer (MLP) or the channels of every convolution (CNN),
        >= 1.
      num_classes: the number of outputs, >= 1.
      use_bias: whether the layers have biases.
      dropout: dropout rate in [0, 1) after each hidden ReLU.
      kernel_size: CNN window side.
      strides: CNN stride.

    Returns:
      A linen module whose ``__call__(x, train=False)`` returns logits.

    Raises:
      ValueError: an unknown kind, or a width, depth or rate out of range.

    Examples:
      >>> make_model("mlp", depth=2, width=64, num_classes=10)
      MLP(
          # attributes
          features = (64, 64)
          num_classes = 10
          use_bias = True
          dropout = 0.0
      )
    """
    check_choice(kind, "kind", MODEL_KINDS)
    width = _check_int(width, "width", 1)
    depth = _check_int(depth, "depth", 0 if kind == "mlp" else 1)
    num_classes = _check_int(num_classes, "num_classes", 1)
    if kind == "mlp":
        return MLP(
            features=(width,) * depth, num_classes=num_classes, use_bias=use_bias, dropout=dropout
        )
    return CNN(
        features=(width,) * depth,
        num_classes=num_classes,
        kernel_size=kernel_size,
        strides=strides,
        use_bias=use_bias,
        dropout=dropout,
    )
