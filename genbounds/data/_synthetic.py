"""Synthetic tasks with a chosen sample size n and input dimension d.

- ``task="teacher"``: a random ReLU teacher network labels points that lie on a random
  low-dimensional subspace of R^d. The latent z ~ N(0, I_k) is embedded as
  x = sqrt(d/k) z A with A (k x d) having orthonormal rows, so every coordinate of x has
  variance 1 on average and ||x|| is about sqrt(d); optional isotropic noise of standard
  deviation ``input_noise`` is added off the subspace. The label is
  argmax_c (relu(z W1 + b1) W2 - o)_c, with o the teacher's mean logit on a reference sample of
  10000 latents (so no class is starved). The labels are a deterministic function of x when
  ``input_noise`` = 0: the task is realisable, its Bayes error is 0.
- ``task="mixture"``: a Gaussian mixture; the class c has probability 1/K and x ~ N(mu_c, I_d),
  with means mu_c ~ N(0, (separation^2 / d) I_d) drawn once, so ||mu_c - mu_c'|| is about
  separation * sqrt(2).

The task (subspace, teacher weights, means) is drawn from ``task_seed``; the examples from
``seed``, so several samples of one task are obtained by changing ``seed`` only. The inputs are
made directly in float32 in chunks: the memory is that of the output (n = 55000, d = 784 takes
about 0.2 GB and well under a second or two).
"""

from __future__ import annotations

import numpy as np

from ._dataset import Pool

_TASKS = ("teacher", "mixture")


def _teacher(rng: np.random.Generator, k: int, width: int, num_classes: int):
    W1 = rng.standard_normal((k, width)) * np.sqrt(2.0 / k)  # He initialisation
    b1 = 0.1 * rng.standard_normal(width)
    W2 = rng.standard_normal((width, num_classes)) / np.sqrt(width)

    def logits(z: np.ndarray) -> np.ndarray:
        return np.maximum(z @ W1 + b1, 0.0) @ W2

    offset = logits(rng.standard_normal((10000, k))).mean(axis=0)
    return lambda z: np.argmax(logits(z) - offset, axis=1)


def synthetic_pool(
    *,
    n: int,
    n_test: int,
    d: int,
    num_classes: int,
    task: str,
    latent_dim: int,
    teacher_width: int,
    separation: float,
    input_noise: float,
    task_seed: int,
    seed: int,
    chunk: int = 8192,
) -> Pool:
    """Draws n + n_test examples of a synthetic task; the first n are the training set."""
    total = n + n_test
    task_rng = np.random.default_rng([task_seed, 7001])
    data_rng = np.random.default_rng([seed, 7002])
    X = np.empty((total, d), dtype=np.float32)
    if task == "teacher":
        if latent_dim > d:
            raise ValueError(f"latent_dim must be <= d = {d}, got {latent_dim}")
        Q, _ = np.linalg.qr(task_rng.standard_normal((d, latent_dim)))
        embed = (np.sqrt(d / latent_dim) * Q.T).astype(np.float32)  # (k, d), orthogonal rows
        label_fn = _teacher(task_rng, latent_dim, teacher_width, num_classes)
        z = data_rng.standard_normal((total, latent_dim))
        y = label_fn(z).astype(np.int32)
        z32 = z.astype(np.float32)
        for s in range(0, total, chunk):
            X[s : s + chunk] = z32[s : s + chunk] @ embed
        meta = {"latent_dim": latent_dim, "teacher_width": teacher_width}
    else:
        means = task_rng.standard_normal((num_classes, d)) * (separation / np.sqrt(d))
        means = means.astype(np.float32)
        y = data_rng.integers(0, num_classes, size=total).astype(np.int32)
        X[:] = means[y]
        meta = {"separation": separation}
    if task == "mixture" or input_noise > 0:
        scale = 1.0 if task == "mixture" else input_noise
        for s in range(0, total, chunk):
            e = min(s + chunk, total)
            X[s:e] += np.float32(scale) * data_rng.standard_normal((e - s, d), dtype=np.float32)
    return Pool(
        X=X,
        y=y,
        image_shape=(d,),
        num_classes=num_classes,
        source=f"synthetic {task} task (genbounds.data), d={d}",
        official_split=(np.arange(n), np.arange(n, total)),
        metadata={
            "task": task,
            "d": d,
            "task_seed": task_seed,
            "input_noise": input_noise,
            **meta,
        },
    )
