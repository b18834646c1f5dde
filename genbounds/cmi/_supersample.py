"""Supersample experiments: K trainings of one algorithm on the K masked halves of a supersample.

A supersample is n pairs of examples drawn without replacement from a pool; a mask
$U \\in \\{0,1\\}^n$ names the element of each pair that trains. `train_population` trains one
network per mask (any Flax ``apply_fn``, initial parameters or an ``init(key)`` function, and
an optax-style optimiser: anything with ``init(params)`` and ``update(grads, state, params)``)
by minibatch gradient descent on the cross-entropy, all K runs as one JAX population
(`run_population`: vmapped, or `jax.lax.map` over vmapped groups, sharded over the devices),
and returns the predicted label of every run on all 2n examples. Run k's randomness (its
initialisation when ``init`` is a function, its minibatch order) comes from
``fold_in(key, k)``, so a run's result does not depend on how the population is split.

`supersample_experiment` draws S supersamples and K masks each, trains, and returns a
`SupersampleExperiment` (predictions, labels, masks, timings; `bounds()` gives every evaluated-
CMI bound, `to_records()` one row per run). With ``out=DIR`` each finished supersample is written
to ``DIR/supersample-S.npz`` (atomic write, SHA-256 checked) and a rerun with the same settings
loads it instead of training again (resuming an interrupted experiment).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.cmi._bounds import cmi_bounds
from genbounds.cmi._sharding import run_population
from genbounds.core._checks import check_array, check_int, check_key
from genbounds.core._dtypes import standard_promotion
from genbounds.files import read_checked, write_checked
from genbounds.losses._losses import cross_entropy, is_binary_output

_MAGIC = b"GENBOUNDS-SUPERSAMPLE-1\n"
METHODS = ("auto", "vmap", "map", "loop")


@dataclasses.dataclass(frozen=True)
class Supersample:
    """n pairs of examples: ``X`` of shape (n, 2, *features), labels ``y`` of shape (n, 2)."""

    X: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


def draw_supersample(X: Any, y: Any, n: int, *, key: Any) -> Supersample:
    """Draws n pairs without replacement from the pool (X, y): 2n distinct examples.

    Args:
      X: inputs (N, *features); y: integer labels (N,); n: number of pairs (2n <= N).
      key: a JAX PRNG key.
    """
    X = np.asarray(check_array(X, "X", ndim=(2, 3, 4, 5)))
    y = np.asarray(check_array(y, "y", ndim=1))
    if len(X) != len(y):
        raise ValueError(f"X and y must have the same length, got {len(X)} and {len(y)}")
    n = check_int(n, "n", minimum=1)
    if 2 * n > len(X):
        raise ValueError(f"n must be at most len(X) // 2 = {len(X) // 2} (n pairs of distinct "
                         f"examples), got {n}")
    idx = np.asarray(jax.random.permutation(check_key(key), len(X)))[: 2 * n].reshape(n, 2)
    return Supersample(X=X[idx], y=y[idx].astype(np.int32))


def draw_masks(key: Any, num_masks: int, n: int) -> np.ndarray:
    """K masks (K, n) of independent fair bits: which element of each pair trains."""
    num_masks = check_int(num_masks, "num_masks", minimum=2)
    n = check_int(n, "n", minimum=1)
    return np.asarray(jax.random.bernoulli(check_key(key), 0.5, (num_masks, n))).astype(np.int32)


def predicted_labels(logits: jax.Array) -> jax.Array:
    """Argmax of the logits; one output unit: 1 where the logit is > 0."""
    if is_binary_output(logits.shape):
        return (logits.reshape(logits.shape[0]) > 0).astype(jnp.int32)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _one_run(apply_fn: Callable, init: Any, optimizer: Any, ss: Supersample, *, epochs: int,
             batch_size: int) -> Callable[[Any], jax.Array]:
    """The function of (mask, run key data) that trains one network and predicts on all 2n."""
    n = ss.n
    X = jnp.asarray(ss.X)
    y = jnp.asarray(ss.y)
    X_all = X.reshape((2 * n,) + X.shape[2:])
    bs = min(batch_size, n)
    steps = max(1, n // bs)
    rows = jnp.arange(n)

    def loss_fn(params, xb, yb):
        return jnp.mean(cross_entropy(apply_fn(params, xb), yb))

    def run(args):
        # The user's model and optimiser under standard promotion (optax's Adam raises a float
        # to an int32 power), as `genbounds.train` runs them.
        with standard_promotion():
            return _run(args)

    def _run(args):
        mask, kdata = args
        rkey = jax.random.wrap_key_data(kdata)
        k_init, k_order = jax.random.split(rkey)
        params = init(k_init) if callable(init) else init
        state = optimizer.init(params)
        Xtr, ytr = X[rows, mask], y[rows, mask]

        def step(carry, batch):
            p, s = carry
            g = jax.grad(loss_fn)(p, *batch)
            updates, s = optimizer.update(g, s, p)
            p = jax.tree_util.tree_map(lambda a, u: (a + u.astype(a.dtype)).astype(a.dtype), p, updates)
            return (p, s), None

        def epoch(carry, ekey):
            order = jax.random.permutation(ekey, n)[: steps * bs].reshape(steps, bs)
            # One gather per epoch (a gather per step costs more under vmap on CPU).
            return jax.lax.scan(step, carry, (Xtr[order], ytr[order]))[0], None

        (params, _), _ = jax.lax.scan(epoch, (params, state), jax.random.split(k_order, epochs))
        return predicted_labels(apply_fn(params, X_all)).reshape(n, 2)

    return run


def _auto_method() -> str:
    # Measured in benchmarks/bench_cmi_population.py: on CPU a vmap over the population beats
    # lax.map (small kernels gain from batching); on accelerators too.
    return "vmap"


def train_population(
    apply_fn: Callable,
    init: Any,
    optimizer: Any,
    supersample: Supersample,
    masks: Any,
    *,
    key: Any,
    epochs: int,
    batch_size: int = 32,
    method: str = "auto",
    chunk: int | None = None,
    devices: Sequence[Any] | None = None,
) -> np.ndarray:
    """Trains one network per mask and returns every run's predicted labels on all 2n examples.

    Args:
      apply_fn: ``apply_fn(params, X) -> logits`` (a Flax ``model.apply``), logits (N, C) or
        (N, 1) for a binary logistic output.
      init: initial parameters shared by every run, or a function ``init(key) -> params``
        (each run then starts from its own draw).
      optimizer: an optax ``GradientTransformation`` (``init``, ``update``).
      supersample: the `Supersample`.
      masks: (K, n) in {0, 1}.
      key: PRNG key; run k uses ``fold_in(key, k)``.
      epochs: passes over the n training examples; batch_size: minibatch size (at most n).
      method: ``"vmap"`` (the population as one vmap per device), ``"map"``
        (`jax.lax.map` over groups of ``chunk`` runs), ``"loop"`` (one jitted run after the
        other from Python: the baseline), or ``"auto"`` (vmap).
      chunk: runs per group for ``"map"`` (default 8).
      devices: devices the population is sharded over (default all; see `run_population`).

    Returns:
      int32 array (K, n, 2): run k's predicted label on both elements of each pair.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    m = np.asarray(check_array(masks, "masks", ndim=2)).astype(np.int32)
    if m.shape[1] != supersample.n or not np.all((m == 0) | (m == 1)):
        raise ValueError(f"masks must have shape (K, {supersample.n}) with entries in {{0, 1}}, "
                         f"got shape {m.shape}")
    key = check_key(key)
    kdata = np.asarray(jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(key, i)))(
        jnp.arange(len(m))))
    run = _one_run(apply_fn, init, optimizer, supersample, epochs=epochs, batch_size=batch_size)
    method = _auto_method() if method == "auto" else method
    if method == "loop":
        jrun = jax.jit(run)
        return np.stack([np.asarray(jrun((m[k], kdata[k]))) for k in range(len(m))])
    return run_population(run, (m, kdata), devices=devices,
                          chunk=(chunk or 8) if method == "map" else chunk)


@dataclasses.dataclass(frozen=True)
class SupersampleExperiment:
    """The outcome of `supersample_experiment`.

    Attributes:
      predictions: int (S, K, n, 2), run (s, k)'s predicted labels on both elements of each pair.
      labels: int (S, n, 2); masks: int (S, K, n).
      seconds: wall time of the training (and evaluation) of each supersample, (S,).
      settings: n, K, S, epochs, batch size, method, devices.
    """

    predictions: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    seconds: np.ndarray
    settings: dict[str, Any]

    def losses(self) -> np.ndarray:
        """0-1 losses (S, K, n, 2)."""
        return (self.predictions != self.labels[:, None]).astype(np.float64)

    def errors(self) -> tuple[np.ndarray, np.ndarray]:
        """Training and test 0-1 error of every run, (S, K) each."""
        L, m = self.losses(), self.masks[..., None].astype(np.int64)
        return (np.take_along_axis(L, m, -1)[..., 0].mean(-1),
                np.take_along_axis(L, 1 - m, -1)[..., 0].mean(-1))

    @property
    def mean_gap(self) -> float:
        """The measured gap, test minus training error, averaged over every run."""
        train, test = self.errors()
        return float((test - train).mean())

    def bounds(self, *, num_bootstrap: int = 200, seed: int = 0) -> dict:
        """Every evaluated-CMI bound (`genbounds.cmi.cmi_bounds`) of this experiment."""
        return cmi_bounds(self.predictions, self.labels, self.masks, num_bootstrap=num_bootstrap,
                          seed=seed)

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per run: supersample, mask index, training / test error, gap."""
        train, test = self.errors()
        return [{"supersample": s, "mask": k, "n": int(self.labels.shape[1]),
                 "train_error": float(train[s, k]), "test_error": float(test[s, k]),
                 "gap": float(test[s, k] - train[s, k])}
                for s in range(train.shape[0]) for k in range(train.shape[1])]


def _fingerprint(settings: dict[str, Any], X: np.ndarray, y: np.ndarray, init: Any) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(X).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    if not callable(init):
        for leaf in jax.tree_util.tree_leaves(init):
            h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def _program_digest(apply_fn: Callable, init: Any, optimizer: Any, X: np.ndarray, y: np.ndarray,
                    n: int, *, epochs: int, batch_size: int, key: Any) -> str:
    """A digest of the traced program of one training run (the model's code, the initialiser's
    code, the optimiser's update with its hyper-parameters as the program's literals, the epochs
    and batch size): a resumed experiment must have been trained by the same program."""
    ss = draw_supersample(X, y, n, key=jax.random.key(0))
    run = _one_run(apply_fn, init, optimizer, ss, epochs=epochs, batch_size=batch_size)
    kdata = np.asarray(jax.random.key_data(key))
    text = str(jax.make_jaxpr(run)((np.zeros(n, np.int32), kdata)))
    return hashlib.sha256(text.encode()).hexdigest()


def _load(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    with np.load(io.BytesIO(read_checked(path, _MAGIC, what="supersample file"))) as z:
        if str(z["fingerprint"]) != fingerprint:
            raise ValueError(f"out: {path} was written by an experiment with other settings, "
                             "data or initial parameters; use another directory")
        return {k: z[k] for k in z.files}


def _save(path: Path, fingerprint: str, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, fingerprint=np.asarray(fingerprint), **arrays)
    write_checked(path, buf.getvalue(), _MAGIC)


def supersample_experiment(
    apply_fn: Callable,
    init: Any,
    optimizer: Any,
    X: Any,
    y: Any,
    *,
    n: int,
    key: Any,
    epochs: int,
    num_masks: int = 30,
    num_supersamples: int = 1,
    batch_size: int = 32,
    method: str = "auto",
    chunk: int | None = None,
    devices: Sequence[Any] | None = None,
    out: str | os.PathLike | None = None,
    tag: str = "",
) -> SupersampleExperiment:
    """S supersamples of n pairs from the pool (X, y), K masks each, K trainings per supersample.

    Args:
      apply_fn, init, optimizer, epochs, batch_size, method, chunk, devices: as in
        `train_population`.
      X, y: the pool (N, *features) and its integer labels (N,), N >= 2n.
      n: pairs per supersample (the training set size).
      key: PRNG key; supersample s uses ``fold_in(key, s)`` (split into the draw of the pairs,
        the masks and the training).
      num_masks: K >= 2 masks per supersample; num_supersamples: S >= 1.
      out: optional directory: each finished supersample is saved there, and found again on a
        rerun with the same settings, data, initial parameters and ``tag``.
      tag: a label of what the fingerprint cannot see. The fingerprint covers the settings,
        the pool, the initial parameters and the traced program of one run (the model's and the
        initialiser's code, the optimiser's update and its hyper-parameters, as literals of the
        program): a saved supersample from another program is refused, not reused.

    Returns:
      A `SupersampleExperiment`.
    """
    n = check_int(n, "n", minimum=1)
    K = check_int(num_masks, "num_masks", minimum=2)
    S = check_int(num_supersamples, "num_supersamples", minimum=1)
    key = check_key(key)
    Xp, yp = np.asarray(check_array(X, "X")), np.asarray(check_array(y, "y", ndim=1))
    settings = {"n": n, "num_masks": K, "num_supersamples": S, "epochs": epochs,
                "batch_size": batch_size, "method": method, "chunk": chunk,
                "devices": len(jax.devices() if devices is None else devices),
                "key": np.asarray(jax.random.key_data(key)).tolist(), "tag": tag}
    fp_settings = {k: v for k, v in settings.items() if k not in ("method", "chunk", "devices")}
    outdir = None if out is None else Path(out)
    if outdir is not None:
        fp_settings["program"] = _program_digest(apply_fn, init, optimizer, Xp, yp, n,
                                                 epochs=epochs, batch_size=batch_size, key=key)
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    preds, labels, masks, seconds = [], [], [], []
    for s in range(S):
        k_pairs, k_masks, k_train = jax.random.split(jax.random.fold_in(key, s), 3)
        ss = draw_supersample(Xp, yp, n, key=k_pairs)
        m = draw_masks(k_masks, K, n)
        path = None if outdir is None else outdir / f"supersample-{s}.npz"
        fp = _fingerprint({**fp_settings, "supersample": s}, Xp, yp, init)
        saved = None if path is None else _load(path, fp)
        if saved is None:
            t0 = time.perf_counter()
            p = train_population(apply_fn, init, optimizer, ss, m, key=k_train, epochs=epochs,
                                 batch_size=batch_size, method=method, chunk=chunk,
                                 devices=devices)
            sec = time.perf_counter() - t0
            if path is not None:
                _save(path, fp, predictions=p, seconds=np.asarray(sec))
        else:
            p, sec = saved["predictions"], float(saved["seconds"])
        preds.append(p)
        labels.append(ss.y)
        masks.append(m)
        seconds.append(sec)
    return SupersampleExperiment(predictions=np.stack(preds), labels=np.stack(labels),
                                 masks=np.stack(masks), seconds=np.asarray(seconds),
                                 settings=settings)
