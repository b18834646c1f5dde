"""scikit-learn's handwritten digits (8x8 images, 10 classes), shipped with scikit-learn."""

from __future__ import annotations

import numpy as np

from ._dataset import Pool


def digits_pool() -> Pool:
    """All 1797 digits images, pixel values 0..16 scaled to [0, 1] (divided by 16).

    The data are the UCI "Optical Recognition of Handwritten Digits" test set as bundled in
    `sklearn.datasets.load_digits`; it has no official train/test split.
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    X = (np.asarray(raw.images, dtype=np.float32) / np.float32(16.0))[..., None]
    y = np.asarray(raw.target, dtype=np.int32)
    return Pool(
        X=X,
        y=y,
        image_shape=(8, 8, 1),
        num_classes=10,
        source="sklearn.datasets.load_digits (UCI optical digits, 1797 images of 8x8, /16)",
    )
