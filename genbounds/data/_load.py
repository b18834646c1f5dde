"""`load`: one entry point for every dataset, split, binary variant and corruption."""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np

from genbounds.core._checks import check_choice, check_n, check_positive, check_unit_interval
from genbounds.data import _corrupt

from ._dataset import Dataset, Pool

DATASETS = ("digits", "mnist1d", "synthetic", "mnist")
CORRUPTIONS = _corrupt.CORRUPTIONS
# Datasets whose labels are the digits 0..9 (binary=True maps them to 1[digit >= 5]).
_DIGIT_LABELS = ("digits", "mnist1d", "mnist")
_DEFAULT_TEST_FRACTION = 0.2

# Independent random streams, one per stage, so that e.g. changing the label noise never
# changes the split: numpy.random.default_rng([seed, stage]).
_SPLIT, _SUBSAMPLE_TRAIN, _SUBSAMPLE_TEST, _LABELS, _INPUTS = 0, 1, 2, 3, 4

_OPTIONS: dict[str, dict[str, Any]] = {
    "digits": {},
    "mnist1d": {"mnist1d_args": None},
    "mnist": {"cache_dir": None, "download": True, "checksums": None},
    "synthetic": {
        "task": "teacher",
        "d": 784,
        "num_classes": 10,
        "latent_dim": 10,
        "teacher_width": 100,
        "separation": 3.0,
        "input_noise": 0.0,
        "task_seed": 0,
    },
}


def _check_seed(seed: Any, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {seed!r}")
    return int(seed)


def _rng(seed: int, stage: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage])


def _pool(name: str, seed: int, n: int | None, n_test: int | None, options: dict) -> Pool:
    if name == "digits":
        from ._digits import digits_pool

        return digits_pool()
    if name == "mnist1d":
        from ._mnist1d import mnist1d_pool

        return mnist1d_pool(options["mnist1d_args"])
    if name == "mnist":
        from ._mnist import mnist_pool

        return mnist_pool(
            options["cache_dir"], download=options["download"], checksums=options["checksums"]
        )
    from ._synthetic import _TASKS, synthetic_pool

    o = options
    return synthetic_pool(
        n=1000 if n is None else n,
        n_test=1000 if n_test is None else n_test,
        d=check_n(o["d"], "d"),
        num_classes=2 if o["binary"] else _check_num_classes(o["num_classes"]),
        task=check_choice(o["task"], "task", _TASKS),
        latent_dim=check_n(o["latent_dim"], "latent_dim"),
        teacher_width=check_n(o["teacher_width"], "teacher_width"),
        separation=check_positive(o["separation"], "separation", allow_zero=True),
        input_noise=check_positive(o["input_noise"], "input_noise", allow_zero=True),
        task_seed=_check_seed(o["task_seed"], "task_seed"),
        seed=seed,
    )



def _check_num_classes(k: Any) -> int:
    """A classification task needs at least two classes (one class has nothing to learn and
    every bound on it is trivially 0)."""
    k = check_n(k, "num_classes")
    if k < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {k}")
    return k


def load(
    name: str,
    *,
    seed: int = 0,
    test_fraction: float | None = None,
    n: int | None = None,
    n_test: int | None = None,
    binary: bool = False,
    label_noise: float = 0.0,
    corruption: str | None = None,
    flatten: bool = True,
    **options: Any,
) -> Dataset:
    """Loads a dataset, splits it, and applies the binary mapping and a corruption.

    The steps run in this order, each from its own random stream derived from `seed`, so that
    the split and the subsample do not depend on the corruption:

    1. **Split.** ``test_fraction=None`` keeps the source's official split (MNIST 60000/10000,
       MNIST-1D 4000/1000) and for digits draws a random split with 20% test. A number
       pools all examples and draws a fresh random split with ``ceil(test_fraction * N)`` test
       examples (the convention of `sklearn.model_selection.train_test_split`: digits gives
       1437/360). Train and test are disjoint sets of source examples
       (``metadata["train_indices"]``/``["test_indices"]``).
    2. **Subsample.** `n` (`n_test`) keeps a uniformly random subset of that many training
       (test) examples, without replacement. For ``"synthetic"`` they are the sample sizes
       drawn (default 1000 each).
    3. **Binary.** ``binary=True`` relabels digits as in Dziugaite & Roy (2017): label 0 for
       digits 0-4, label 1 for digits 5-9 (their code maps ``digit > 4`` to +1, else -1).
       For ``"synthetic"`` it makes a two-class task.
    4. **Corruption** (Zhang et al. 2017, see below). Label corruptions touch the training
       labels only; the test labels stay the true ones. Input corruptions apply to train and
       test inputs alike (the net is evaluated on the distribution it was trained on).

    Corruptions:
      - ``label_noise=p``: exactly ``floor(p n + 1/2)`` training labels, chosen without
        replacement, are replaced by a class drawn uniformly from *all* K classes (as Zhang
        et al.), so about 1/K of them keep their old value. ``metadata["corrupted_indices"]``
        lists the positions redrawn and ``["num_changed"]`` how many actually changed. For a
        given seed the corrupted sets are nested as p grows.
      - ``corruption="random_labels"``: the same with p = 1 (all labels redrawn).
      - ``"shuffled_pixels"``: one random permutation of the input coordinates, the same for
        every train and test example (``metadata["pixel_permutation"]``).
      - ``"random_pixels"``: an independent random permutation for each example.
      - ``"gaussian"``: every train and test input replaced by an independent draw from the
        Gaussian with the mean and (1/n) covariance of the clean training inputs.

    Args:
      name: ``"digits"`` (scikit-learn's 1797 8x8 digits, [0, 1]), ``"mnist1d"``
        (`mnist1d.data.make_dataset` with its default arguments, generated locally),
        ``"synthetic"`` (a teacher network or Gaussian mixture in d dimensions) or
        ``"mnist"`` (the IDX files, downloaded once into a cache directory and checksummed).
      seed: an integer >= 0; the same seed gives the same arrays.
      test_fraction: in (0, 1), or None for the source's split (see step 1).
      n: the number of training examples to keep (or draw, for ``"synthetic"``).
      n_test: the number of test examples to keep (or draw).
      binary: map the ten digits to two classes (see step 3).
      label_noise: the fraction p in [0, 1] of training labels to redraw.
      corruption: None or one of ``"random_labels"``, ``"shuffled_pixels"``,
        ``"random_pixels"``, ``"gaussian"``.
      flatten: True gives inputs of shape ``(n, d)``; False keeps images, channels last
        (``(8, 8, 1)`` digits, ``(28, 28, 1)`` MNIST, ``(40, 1)`` MNIST-1D sequences).
        Synthetic inputs are always ``(d,)``.
      **options: dataset-specific options.
        ``"mnist"``: ``cache_dir`` (default ``$GENBOUNDS_DATA`` or ``~/.cache/genbounds``;
        files live in ``cache_dir/mnist/``), ``download`` (default True), ``checksums``
        (``{filename: sha256-or-md5-hex}``, default the official digests of the ``.gz``
        files). ``"mnist1d"``: ``mnist1d_args``, overrides of
        `mnist1d.data.get_dataset_args()`. ``"synthetic"``: ``task`` (``"teacher"`` or
        ``"mixture"``), ``d`` (784), ``num_classes`` (10), ``latent_dim`` (10),
        ``teacher_width`` (100), ``separation`` (3.0), ``input_noise`` (0.0), ``task_seed``
        (0; the task is drawn from it, the examples from `seed`).

    Returns:
      A `Dataset` with float32 inputs and int32 labels.

    Raises:
      ValueError: an unknown name or corruption, `label_noise` outside [0, 1],
        `test_fraction` outside (0, 1), `n` larger than the examples available, or a
        corrupt or mismatching MNIST file.
      TypeError: an option the dataset does not take, or a non-integer `n`.

    Examples:
      >>> ds = load("digits", seed=0, label_noise=0.5)
      >>> ds.n_train, len(ds.metadata["corrupted_indices"])
      (1437, 719)
      >>> load("digits", binary=True).num_classes
      2

    References:
      Zhang, Bengio, Hardt, Recht, Vinyals, "Understanding deep learning requires rethinking
      generalization", ICLR 2017, arXiv:1611.03530.
      Dziugaite & Roy, "Computing nonvacuous generalization bounds for deep (stochastic) neural
      networks with many more parameters than training data", UAI 2017, arXiv:1703.11008.
    """
    check_choice(name, "name", DATASETS)
    seed = _check_seed(seed)
    label_noise = check_unit_interval(label_noise, "label_noise")
    if corruption is not None:
        check_choice(corruption, "corruption", CORRUPTIONS)
    if corruption == "random_labels" and label_noise not in (0.0, 1.0):
        raise ValueError(
            f"corruption='random_labels' redraws every label; it cannot be combined with "
            f"label_noise={label_noise} (use label_noise alone for a fraction)"
        )
    if not isinstance(binary, bool):
        raise TypeError(f"binary must be a bool, got {binary!r}")
    if not isinstance(flatten, bool):
        raise TypeError(f"flatten must be a bool, got {flatten!r}")
    if n is not None:
        n = check_n(n, "n")
    if n_test is not None:
        n_test = check_n(n_test, "n_test")
    if test_fraction is not None:
        test_fraction = check_unit_interval(test_fraction, "test_fraction", closed=False)
        if name == "synthetic":
            raise ValueError(
                "test_fraction does not apply to 'synthetic' data: pass n and n_test, got "
                f"test_fraction={test_fraction}"
            )
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        allowed = ", ".join(_OPTIONS[name]) or "none"
        raise TypeError(f"load({name!r}) got unexpected options {unknown}; it takes: {allowed}")
    opts = {**_OPTIONS[name], **options, "binary": binary}

    pool = _pool(name, seed, n, n_test, opts)
    N = pool.X.shape[0]

    # 1. Split, before anything touches labels or inputs.
    if test_fraction is None and pool.official_split is not None:
        train_idx, test_idx = (np.asarray(i) for i in pool.official_split)
        split = "official"
    else:
        frac = _DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        k_test = math.ceil(frac * N)
        if not 0 < k_test < N:
            raise ValueError(f"test_fraction={frac} leaves no training or no test example of {N}")
        perm = _rng(seed, _SPLIT).permutation(N)
        test_idx, train_idx = np.sort(perm[:k_test]), np.sort(perm[k_test:])
        split = f"random, test_fraction={frac}"

    # 2. Subsample (synthetic data were drawn at the requested sizes).
    if name != "synthetic":
        if n is not None:
            if n > train_idx.size:
                raise ValueError(
                    f"n must be <= {train_idx.size} (training examples available), got {n}"
                )
            train_idx = np.sort(_rng(seed, _SUBSAMPLE_TRAIN).choice(train_idx, n, replace=False))
        if n_test is not None:
            if n_test > test_idx.size:
                raise ValueError(
                    f"n_test must be <= {test_idx.size} (test examples available), got {n_test}"
                )
            test_idx = np.sort(_rng(seed, _SUBSAMPLE_TEST).choice(test_idx, n_test, replace=False))

    X_train, X_test = pool.X[train_idx], pool.X[test_idx]
    y_train, y_test = pool.y[train_idx].astype(np.int32), pool.y[test_idx].astype(np.int32)
    num_classes = pool.num_classes

    # 3. Binary variant (Dziugaite & Roy 2017: digit > 4 is the positive class).
    if binary and name in _DIGIT_LABELS:
        y_train, y_test = (y_train >= 5).astype(np.int32), (y_test >= 5).astype(np.int32)
        num_classes = 2

    # 4. Corruptions (Zhang et al. 2017, Section 2).
    meta: dict[str, Any] = {
        "source": pool.source,
        "seed": seed,
        "split": split,
        "train_indices": train_idx,
        "test_indices": test_idx,
        "binary": binary,
        "binary_rule": "label 1 = digit >= 5, label 0 = digit <= 4" if binary else None,
        "label_noise": 1.0 if corruption == "random_labels" else label_noise,
        "corruption": corruption,
        "y_train_clean": y_train.copy(),
        **pool.metadata,
    }
    p = 1.0 if corruption == "random_labels" else label_noise
    if p > 0.0:
        y_train, idx = _corrupt.corrupt_labels(y_train, num_classes, p, _rng(seed, _LABELS))
        meta["corrupted_indices"] = idx
        meta["num_changed"] = int(np.sum(y_train != meta["y_train_clean"]))
    else:
        meta["corrupted_indices"] = np.zeros(0, dtype=np.int64)
        meta["num_changed"] = 0
    in_rng = _rng(seed, _INPUTS)
    if corruption == "shuffled_pixels":
        X_train, X_test, perm = _corrupt.shuffled_pixels(X_train, X_test, in_rng)
        meta["pixel_permutation"] = perm
    elif corruption == "random_pixels":
        X_train = _corrupt.random_pixels(X_train, in_rng)
        X_test = _corrupt.random_pixels(X_test, in_rng)
    elif corruption == "gaussian":
        mean, cov = _corrupt.gaussian_moments(X_train)
        shape = X_train.shape[1:]
        X_train = _corrupt.gaussian_inputs(mean, cov, X_train.shape[0], shape, in_rng)
        X_test = _corrupt.gaussian_inputs(mean, cov, X_test.shape[0], shape, in_rng)

    input_shape = tuple(int(s) for s in pool.image_shape)
    if flatten:
        d = int(np.prod(input_shape))
        X_train, X_test = X_train.reshape(-1, d), X_test.reshape(-1, d)
        input_shape = (d,)
    return Dataset(
        X_train=np.ascontiguousarray(X_train, dtype=np.float32),
        y_train=y_train,
        X_test=np.ascontiguousarray(X_test, dtype=np.float32),
        y_test=y_test,
        num_classes=int(num_classes),
        input_shape=input_shape,
        name=name,
        metadata=meta,
    )


def default_cache_dir() -> Path:
    """The directory `load("mnist")` downloads into: ``$GENBOUNDS_DATA`` or ``~/.cache/genbounds``."""
    from ._mnist import default_cache_dir as _default

    return _default()
