"""Lipschitz-margin training (Tsuzuku, Sato & Sugiyama 2018): the differentiable estimate of the
network's Lipschitz constant, the product of its layers' spectral norms by power iteration."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

WARM_ITERS = 20


def kernels(params: Any) -> list[tuple[jax.Array, float]]:
    """The weight matrices of a parameter tree (leaves named ``kernel``, rank >= 2), each as
    (matrix (fan_in, fan_out), factor): a conv kernel (*window, in, out) is reshaped to
    (prod(window) * in, out) with factor sqrt(prod(window)), an upper bound on the ratio of
    the convolution's operator norm to the reshaped kernel's (each input position meets at
    most prod(window) outputs, for every stride and padding)."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        last = path[-1]
        name = getattr(last, "key", getattr(last, "name", None))
        if name == "kernel" and leaf.ndim >= 2:
            window = math.prod(leaf.shape[:-2]) if leaf.ndim > 2 else 1
            out.append((leaf.reshape(-1, leaf.shape[-1]), math.sqrt(window)))
    return out


def power_step(params: Any, us: list[jax.Array]) -> tuple[jax.Array, list[jax.Array]]:
    """One power iteration per weight matrix (vectors carried across steps, as in spectral
    normalisation, Miyato et al. 2018) and the differentiable product of the estimated norms:
    sigma_i = v_i^T W_i u_i with u_i, v_i held fixed (stop_gradient)."""
    log_l = jnp.float32(0.0)
    new = []
    for (w, factor), u in zip(kernels(params), us, strict=True):
        w32 = w.astype(jnp.float32)
        v = w32 @ u
        v = jax.lax.stop_gradient(v / jnp.maximum(jnp.linalg.norm(v), 1e-12))
        u2 = w32.T @ v
        u2 = jax.lax.stop_gradient(u2 / jnp.maximum(jnp.linalg.norm(u2), 1e-12))
        sigma = v @ (w32 @ u2)
        log_l = log_l + jnp.log(jnp.maximum(sigma, 1e-12) * factor)
        new.append(u2)
    return jnp.exp(log_l), new


def power_start(params: Any) -> list[jax.Array]:
    """Start vectors (a fixed key, so a resumed run repeats the computation), warmed up by
    `WARM_ITERS` iterations on the current weights."""
    ks = kernels(params)
    keys = jax.random.split(jax.random.key(17), max(len(ks), 1))
    us = [jax.random.normal(k, (w.shape[1],), jnp.float32) for (w, _), k in zip(ks, keys[:len(ks)], strict=True)]
    us = [u / jnp.linalg.norm(u) for u in us]
    fixed = jax.lax.stop_gradient(params)
    return jax.lax.fori_loop(0, WARM_ITERS, lambda _, u: power_step(fixed, u)[1], us)
