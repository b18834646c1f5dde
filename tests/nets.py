"""Small networks of every common architecture, shared by the tests.

Each ``make_*`` returns a `Net`: ``apply_fn``, ``params`` (linen variables or an nnx Module),
``init_params`` (a second initialisation, for the distance-from-init measures), example inputs
``X`` and labels ``y`` (the network's own predictions on a few examples flipped, so the train
error is small but not zero). All are float64 unless ``dtype`` says otherwise, and small enough
for a test to trace, bound and attack them in a second or two.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from helpers import promoting  # the Flax models below mix float32 and float64 in places


@dataclasses.dataclass
class Net:
    name: str
    apply_fn: Callable[[Any, Any], Any]
    params: Any
    init_params: Any
    X: jax.Array
    y: np.ndarray


def _labels(apply_fn, params, X, flip: int = 1) -> np.ndarray:
    logits = np.asarray(apply_fn(params, X))
    y = np.argmax(logits, axis=1)
    k = logits.shape[1]
    y[:flip] = (y[:flip] + 1) % k
    return y


def _randomise_stats(variables: Any, key: jax.Array) -> Any:
    """BatchNorm running statistics that are not the identity (mean 0, var 1 at init)."""
    if "batch_stats" not in variables:
        return variables
    leaves, tree = jax.tree_util.tree_flatten_with_path(variables["batch_stats"])
    keys = jax.random.split(key, len(leaves))
    new = []
    for (path, leaf), k in zip(leaves, keys, strict=True):
        name = str(path[-1])
        r = jax.random.uniform(k, leaf.shape, leaf.dtype)
        new.append(0.5 + r if "var" in name else 0.2 * (r - 0.5))
    stats = jax.tree_util.tree_unflatten(tree, new)
    return {**variables, "batch_stats": stats}


def _linen(name: str, model: nn.Module, shape: tuple, *, dtype=jnp.float64, n: int = 24,
           seed: int = 0) -> Net:
    key = jax.random.key(seed)
    X = jax.random.normal(jax.random.fold_in(key, 1), (n,) + shape, dtype)
    params = _randomise_stats(promoting(model.init)(jax.random.fold_in(key, 2), X),
                              jax.random.fold_in(key, 4))
    init = _randomise_stats(promoting(model.init)(jax.random.fold_in(key, 3), X),
                            jax.random.fold_in(key, 4))
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    init = jax.tree.map(lambda a: a.astype(dtype), init)
    apply_fn = promoting(model.apply)
    return Net(name, apply_fn, params, init, X, _labels(apply_fn, params, X))


class MLP(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))


class CNN(nn.Module):
    @nn.compact
    @promoting
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class ResBlock(nn.Module):
    features: int
    strides: int = 1

    @nn.compact

    @promoting
    def __call__(self, x):
        bn = lambda: nn.BatchNorm(use_running_average=True)  # noqa: E731
        h = nn.relu(bn()(nn.Conv(self.features, (3, 3), strides=self.strides,
                                 use_bias=False)(x)))
        h = bn()(nn.Conv(self.features, (3, 3), use_bias=False)(h))
        if x.shape[-1] != self.features or self.strides != 1:  # projection shortcut
            x = bn()(nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x))
        return nn.relu(x + h)


class ResNet(nn.Module):
    """A linen ResNet: stem, a block with a projection shortcut (stride 2), an identity block,
    global average pooling and a dense classifier."""

    @nn.compact

    @promoting
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm(use_running_average=True)(
            nn.Conv(4, (3, 3), use_bias=False)(x)))
        x = ResBlock(8, strides=2)(x)
        x = ResBlock(8)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(3)(x)


class MixerBlock(nn.Module):
    tokens_hidden: int
    channels_hidden: int
    layer_norm: bool

    @nn.compact

    @promoting
    def __call__(self, x):
        norm = nn.LayerNorm if self.layer_norm else (lambda: (lambda z: z))
        h = norm()(x)
        h = jnp.swapaxes(h, 1, 2)  # token mixing: a dense map over the token axis
        h = nn.Dense(x.shape[1])(nn.gelu(nn.Dense(self.tokens_hidden)(h)))
        x = x + jnp.swapaxes(h, 1, 2)
        h = norm()(x)
        h = nn.Dense(x.shape[2])(nn.gelu(nn.Dense(self.channels_hidden)(h)))
        return x + h


class Mixer(nn.Module):
    """MLP-Mixer (Tolstikhin et al. 2021): patch embedding, mixer blocks, global average
    pooling over the tokens, a dense head."""

    layer_norm: bool = True
    patch: int = 4
    channels: int = 8

    @nn.compact

    @promoting
    def __call__(self, x):
        x = nn.Conv(self.channels, (self.patch, self.patch), strides=self.patch,
                    padding="VALID")(x)
        b, h, w, c = x.shape
        x = x.reshape((b, h * w, c))
        x = MixerBlock(6, 12, self.layer_norm)(x)
        if self.layer_norm:
            x = nn.LayerNorm()(x)
        return nn.Dense(3)(jnp.mean(x, axis=1))


class Transformer(nn.Module):
    """A one-block pre-LayerNorm transformer encoder on (tokens, features) inputs."""

    dim: int = 8

    @nn.compact

    @promoting
    def __call__(self, x):
        x = nn.Dense(self.dim)(x)
        pos = self.param("pos", nn.initializers.normal(0.1), x.shape[1:], x.dtype)
        x = x + pos
        h = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=self.dim)(
            nn.LayerNorm()(x))
        x = x + h
        h = nn.Dense(self.dim)(nn.gelu(nn.Dense(2 * self.dim)(nn.LayerNorm()(x))))
        x = x + h
        return nn.Dense(3)(jnp.mean(nn.LayerNorm()(x), axis=1))


class NnxCNN(nnx.Module):
    """An nnx CNN with BatchNorm (in evaluation mode once `eval()` is called)."""

    def __init__(self, rngs: nnx.Rngs, dtype=jnp.float64):
        self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs, param_dtype=dtype, dtype=dtype)
        self.bn = nnx.BatchNorm(4, rngs=rngs, param_dtype=dtype, dtype=dtype)
        self.conv2 = nnx.Conv(4, 4, (3, 3), strides=2, rngs=rngs, param_dtype=dtype,
                              dtype=dtype)
        self.head = nnx.Linear(4, 3, rngs=rngs, param_dtype=dtype, dtype=dtype)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x)))
        x = nnx.relu(self.conv2(x))
        return self.head(jnp.mean(x, axis=(1, 2)))


def make_mlp() -> Net:
    return _linen("mlp", MLP(), (5,))


def make_cnn() -> Net:
    return _linen("cnn", CNN(), (8, 8, 2))


def make_resnet() -> Net:
    return _linen("resnet", ResNet(), (8, 8, 3))


def make_mixer(layer_norm: bool = True) -> Net:
    name = "mixer_ln" if layer_norm else "mixer"
    return _linen(name, Mixer(layer_norm=layer_norm), (8, 8, 3))


def make_transformer() -> Net:
    return _linen("transformer", Transformer(), (5, 4))


def make_nnx_cnn() -> Net:
    def build(seed: int) -> NnxCNN:
        m = NnxCNN(nnx.Rngs(seed))
        m.bn.mean.set_value(0.1 * jnp.arange(4, dtype=jnp.float64))
        m.bn.var.set_value(0.5 + 0.25 * jnp.arange(4, dtype=jnp.float64))
        m.eval()
        return m

    model, init = build(0), build(1)
    X = jax.random.normal(jax.random.key(5), (24, 8, 8, 2), jnp.float64)
    apply_fn = lambda m, x: m(x)  # noqa: E731
    return Net("nnx_cnn", apply_fn, model, init, X, _labels(apply_fn, model, X))


ALL = {"mlp": make_mlp, "cnn": make_cnn, "resnet": make_resnet, "nnx_cnn": make_nnx_cnn,
       "mixer": lambda: make_mixer(False), "mixer_ln": lambda: make_mixer(True),
       "transformer": make_transformer}
