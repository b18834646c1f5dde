"""The `Dataset` container returned by every loader in `genbounds.data`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A supervised classification task split into a training and a test set.

    Every loader in `genbounds.data` returns one. The arrays are plain numpy arrays, so a
    `Dataset` can be handed to `genbounds.train.train`, to the bounds, or to any other library.

    Attributes:
      X_train: float32 inputs of shape ``(n_train, *input_shape)``.
      y_train: int32 labels in ``[0, num_classes)`` of shape ``(n_train,)``. These are the
        labels the network is trained on, *after* any label corruption.
      X_test: float32 inputs of shape ``(n_test, *input_shape)``.
      y_test: int32 labels of shape ``(n_test,)``. Label corruptions never touch them: test
        error is always measured against the true labels (Zhang et al. 2017).
      num_classes: the number of classes K.
      input_shape: the shape of one example, e.g. ``(64,)`` (flattened digits) or
        ``(8, 8, 1)`` (digits as an image, channels last).
      name: the dataset's name as given to `genbounds.data.load`.
      metadata: provenance and everything needed to reproduce or audit the task: ``source``,
        ``seed``, the split (``split``, ``train_indices``/``test_indices`` into the source
        pool), ``binary``, ``label_noise``, ``corruption``, ``corrupted_indices`` (positions in
        ``y_train`` whose label was redrawn), ``y_train_clean`` (labels before corruption), and
        dataset-specific entries.

    Examples:
      >>> from genbounds.data import load
      >>> ds = load("digits", seed=0)
      >>> ds.X_train.shape, ds.X_test.shape, ds.num_classes
      ((1437, 64), (360, 64), 10)
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_train(self) -> int:
        """The number of training examples, n."""
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        """The number of test examples."""
        return int(self.X_test.shape[0])

    def __repr__(self) -> str:
        extra = []
        for key in ("binary", "label_noise", "corruption", "seed"):
            if key in self.metadata:
                extra.append(f"{key}={self.metadata[key]!r}")
        return (
            f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}"
            + "".join(", " + e for e in extra)
            + ")"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Pool:
    """What a source hands to `load`: all its examples, before any split or corruption.

    Attributes:
      X: float32 inputs, shape ``(N, *image_shape)``, already scaled.
      y: integer labels, shape ``(N,)``.
      image_shape: the per-example shape of X (``(8, 8, 1)``, ``(28, 28, 1)``, ``(40, 1)``).
      num_classes: K.
      source: a human-readable provenance string.
      official_split: ``(train_indices, test_indices)`` into X when the source defines a split
        (MNIST, MNIST-1D), else None.
      metadata: extra entries copied into `Dataset.metadata`.
    """

    X: np.ndarray
    y: np.ndarray
    image_shape: tuple[int, ...]
    num_classes: int
    source: str
    official_split: tuple[np.ndarray, np.ndarray] | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
