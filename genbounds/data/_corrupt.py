"""The randomisation tests of Zhang et al. (2017) as data corruptions.

Zhang, Bengio, Hardt, Recht, Vinyals, "Understanding deep learning requires rethinking
generalization", ICLR 2017, arXiv:1611.03530, Section 2. Their corruptions:

- *partially corrupted labels*: with probability p each label is replaced by a class drawn
  uniformly from all classes (so it may equal the old one);
- *random labels*: all labels replaced that way;
- *shuffled pixels*: one random permutation of the pixels applied to every image, train and test;
- *random pixels*: an independent random permutation for each image;
- *Gaussian*: every image replaced by a draw from a Gaussian with the data's mean and
  covariance.

Here a label fraction p replaces *exactly* ``floor(p n + 1/2)`` labels (chosen without
replacement) rather than each label independently with probability p, so the corrupted fraction
is exact; the new labels are uniform over all K classes, as in Zhang et al., so about ``1/K`` of
the "replaced" labels keep their old value.
"""

from __future__ import annotations

import numpy as np

# Public names of the input corruptions, plus "random_labels".
CORRUPTIONS = ("random_labels", "shuffled_pixels", "random_pixels", "gaussian")


def num_corrupted(fraction: float, n: int) -> int:
    """The number of labels a fraction replaces: ``floor(fraction * n + 1/2)``."""
    return int(np.floor(fraction * n + 0.5))


def corrupt_labels(
    y: np.ndarray, num_classes: int, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Replaces exactly ``floor(fraction n + 1/2)`` labels by uniform draws over all classes.

    The random numbers are drawn for all n examples whatever the fraction (one permutation, one
    candidate label per example), and the first k positions of the permutation are corrupted:
    for one seed the corrupted sets are nested as the fraction grows, so a sweep over the
    fraction changes one thing at a time.

    Returns:
      The new labels and the sorted positions that were redrawn.
    """
    n = y.shape[0]
    order = rng.permutation(n)
    candidates = rng.integers(0, num_classes, size=n)
    k = num_corrupted(fraction, n)
    idx = np.sort(order[:k])
    y_new = y.copy()
    y_new[idx] = candidates[idx]
    return y_new.astype(y.dtype), idx


def shuffled_pixels(
    X_train: np.ndarray, X_test: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Applies one permutation of the input coordinates to every example, train and test."""
    d = int(np.prod(X_train.shape[1:]))
    perm = rng.permutation(d)

    def apply(X: np.ndarray) -> np.ndarray:
        return X.reshape(X.shape[0], d)[:, perm].reshape(X.shape)

    return apply(X_train), apply(X_test), perm


def random_pixels(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Permutes the coordinates of each example by its own independent permutation."""
    flat = X.reshape(X.shape[0], -1)
    return rng.permuted(flat, axis=1).reshape(X.shape)


def gaussian_moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and (biased, 1/n) covariance of the flattened rows of X, in float64."""
    flat = X.reshape(X.shape[0], -1).astype(np.float64)
    mean = flat.mean(axis=0)
    centred = flat - mean
    cov = centred.T @ centred / flat.shape[0]
    return mean, cov


def gaussian_inputs(
    mean: np.ndarray,
    cov: np.ndarray,
    num: int,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    chunk: int = 8192,
) -> np.ndarray:
    """Draws `num` examples from N(mean, cov) as float32 arrays of the given per-example shape.

    The covariance of image data is singular (constant border pixels), so the square root is
    taken through the symmetric eigendecomposition with the eigenvalues' rounding noise below
    zero set to zero. Samples are made in float64 chunks and stored as float32, so the memory
    is ``num * d`` float32 plus one float64 chunk.
    """
    d = mean.shape[0]
    evals, evecs = np.linalg.eigh(cov)
    root = evecs * np.sqrt(np.clip(evals, 0.0, None))  # cov = root @ root.T
    out = np.empty((num, d), dtype=np.float32)
    for start in range(0, num, chunk):
        stop = min(start + chunk, num)
        z = rng.standard_normal((stop - start, d))
        out[start:stop] = mean + z @ root.T
    return out.reshape((num, *shape))
