"""MNIST-1D (Greydanus 2020), generated locally by `mnist1d.data.make_dataset`.

Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", 2020/2024, arXiv:2011.14439.

`mnist1d.data.get_dataset` is never called: it downloads a pickle from GitHub and writes it into
the working directory. `make_dataset` builds the same data from templates without any I/O, but
it reseeds the *global* `numpy.random` and `random` generators (`mnist1d.utils.set_seed`); their
states are saved and restored around the call so that loading MNIST-1D leaves the caller's
global random state untouched.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._dataset import Pool


@functools.lru_cache(maxsize=4)
def _generate(items: tuple[tuple[str, Any], ...]) -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=False)
    for key, value in items:
        setattr(args, key, value)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    out = (
        np.asarray(raw["x"], dtype=np.float32),
        np.asarray(raw["y"], dtype=np.int32),
        np.asarray(raw["x_test"], dtype=np.float32),
        np.asarray(raw["y_test"], dtype=np.int32),
    )
    for a in out:
        a.setflags(write=False)
    return out


def mnist1d_pool(args: Mapping[str, Any] | None = None) -> Pool:
    """The MNIST-1D examples with the package's own 80/20 split as the official split.

    Args:
      args: overrides of `mnist1d.data.get_dataset_args()` (defaults: ``num_samples=5000``,
        ``train_split=0.8``, ``final_seq_length=40``, ``seed=42``, giving 4000 training and
        1000 test sequences of length 40, standardised by make_dataset to mean 0 and standard
        deviation 1 over all 5000 sequences).
    """
    from mnist1d.data import get_dataset_args

    defaults = get_dataset_args(as_dict=True)
    args = dict(args or {})
    unknown = sorted(set(args) - set(defaults) - {"url"})
    if unknown or "url" in args:
        raise ValueError(
            f"mnist1d_args must hold keys of mnist1d.data.get_dataset_args() other than 'url', "
            f"got {sorted(args)}"
        )
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in args.items()))
    Xtr, ytr, Xte, yte = _generate(items)
    X = np.concatenate([Xtr, Xte])[..., None]
    y = np.concatenate([ytr, yte])
    n_tr = Xtr.shape[0]
    merged = {**defaults, **args}
    merged.pop("url", None)
    return Pool(
        X=X,
        y=y,
        image_shape=(X.shape[1], 1),
        num_classes=10,
        source="mnist1d.data.make_dataset (generated locally, no download)",
        official_split=(np.arange(n_tr), np.arange(n_tr, X.shape[0])),
        metadata={"mnist1d_args": merged},
    )
