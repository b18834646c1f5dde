"""The evaluated-CMI experiment: bounds on the expected gap against the measured gap, over n.

`reproduce_cmi` is the core of ``genbounds reproduce cmi``. It follows the protocol of
Harutyunyan et al. (NeurIPS 2021, arXiv:2110.01584, Section 4) and Wang & Mao (ICML 2023,
arXiv:2302.02432) on the harness's data: for each n, S supersamples of n pairs drawn from the
pool (training and test sets of `genbounds.data.load` together), K masks each, one network
trained per mask (`genbounds.cmi.supersample_experiment`: the K runs as one population), and
every bound of `genbounds.cmi.cmi_bounds` against the mean gap measured on the held-out halves.

Data sets (binary tasks, as the f-CMI paper's MNIST 4-vs-9):

* ``digits-binary``: sklearn's 8x8 digits, digit < 5 against >= 5 (1797 examples: n <= 898);
* ``mnist1d``: MNIST-1D generated locally (4,000 sequences, flattened), digit < 5 vs >= 5;
* ``synthetic``: the harness's teacher task, binary.

Network: an MLP with one hidden layer of 128 ReLU units (`genbounds.train.MLP`), Adam at 1e-3,
minibatches of 32, a fixed number of gradient steps (3,000 by default, enough to reach zero
training error on digits), each run from its own initialisation.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from genbounds.experiments._common import load_variant, markdown_table, write_record

DATA: dict[str, tuple[str, dict[str, Any]]] = {
    "digits-binary": ("digits", {"binary": True}),
    "mnist1d": ("mnist1d", {"binary": True, "mnist1d_args": {"num_samples": 4_000}}),
    "synthetic": ("synthetic", {"binary": True, "n": 3_000, "n_test": 1_000}),
}
DATASETS = tuple(DATA)
DEFAULT_NS = (75, 150, 300, 600)
# The f-CMI paper's MNIST 4-vs-9 runs (4-layer CNN, 5 supersamples x 30 masks): n -> (gap,
# f-CMI bound), as quoted in the project's notes from the paper's figure.
PAPER_MNIST_4V9 = {75: (0.083, 0.223), 250: (0.035, 0.095), 1000: (0.014, 0.041),
                   4000: (0.008, 0.027)}


def _plot(rows: list[dict[str, Any]], path: os.PathLike, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genbounds.files import save_figure

    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ns, [r["mean_gap"] for r in rows], "ko-", lw=2, label="mean gap (measured)")
    for name in rows[0]["bounds"]:
        pts = [(r["n"], r["bounds"][name]["gap_bound"]) for r in rows if name in r["bounds"]]
        ax.plot(*zip(*pts, strict=True), "o--", label=f"{name} (gap bound)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n (training examples)")
    ax.set_ylabel("expected generalisation gap (0-1)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def reproduce_cmi(
    dataset: str = "digits-binary",
    out: str | os.PathLike | None = None,
    *,
    ns: tuple[int, ...] = DEFAULT_NS,
    num_masks: int = 30,
    num_supersamples: int = 3,
    steps: int = 3_000,
    width: int = 128,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    num_bootstrap: int = 200,
    method: str = "auto",
    verbose: bool = True,
) -> dict[str, Any]:
    """Runs the experiment; writes ``out/results.json``, ``out/summary.md`` and ``out/cmi.png``.

    Args:
      dataset: one of ``DATASETS``.
      out: output directory (also keeps each finished supersample, so an interrupted run
        resumes), or None to write nothing.
      ns: the training set sizes n.
      num_masks: K masks per supersample; num_supersamples: S supersamples per n.
      steps: gradient steps per run (epochs = ceil(steps / (n // batch_size))).
      width, lr, batch_size: the MLP's hidden width, Adam's step size, the minibatch size.
      seed: seed of the data split, the supersamples, masks and trainings.
      num_bootstrap: bootstrap resamples of the masks for the bounds' spread.
      method: the population method of `genbounds.cmi.train_population`.
      verbose: print one line per n.

    Returns:
      The record written to results.json: for each n, the mean gap, the training and test error,
      each bound (value, gap bound, ratio of the gap bound to the mean gap, bootstrap interval),
      K, S, seconds; the best bound's ratio at the largest n; the total time.
    """
    import jax
    import numpy as np
    import optax

    from genbounds import cmi
    from genbounds.train import MLP

    if dataset not in DATA:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}; got "
                         f"{dataset!r}")
    t_all = time.perf_counter()
    ds = load_variant(DATA, dataset, seed=seed)
    X = np.concatenate([ds.X_train, ds.X_test]).astype(np.float32)
    y = np.concatenate([ds.y_train, ds.y_test]).astype(np.int32)
    X = X.reshape(len(X), -1)
    if max(ns) > len(X) // 2:
        raise ValueError(f"ns: the pool of {dataset} has {len(X)} examples, so n <= "
                         f"{len(X) // 2}; got {max(ns)}")
    model = MLP(features=(width,), num_classes=int(ds.num_classes))

    def init(k):
        return model.init(k, X[:1])

    rows = []
    for n in ns:
        epochs = math.ceil(steps / max(1, n // batch_size))
        t0 = time.perf_counter()
        e = cmi.supersample_experiment(
            model.apply, init, optax.adam(lr), X, y, n=n, key=jax.random.key(seed),
            epochs=epochs, num_masks=num_masks, num_supersamples=num_supersamples,
            batch_size=batch_size, method=method,
            out=None if out is None else os.path.join(out, f"n{n}"),
            tag=f"{dataset} MLP({width}) adam {lr} steps {steps}")
        bounds = e.bounds(num_bootstrap=num_bootstrap, seed=seed)
        train, test = e.errors()
        gap = e.mean_gap
        row = {
            "n": n, "mean_gap": gap, "train_error": float(train.mean()),
            "test_error": float(test.mean()), "num_masks": num_masks,
            "num_supersamples": num_supersamples, "epochs": epochs,
            "seconds_training": float(e.seconds.sum()), "seconds": time.perf_counter() - t0,
            "bounds": {name: {"value": b.value, "gap_bound": b.terms["gap_bound"],
                              "ratio_to_gap": b.terms["gap_bound"] / gap if gap > 0 else None,
                              "mean_mi": b.terms["mean_mi"],
                              "bootstrap_interval": b.terms.get("bootstrap_interval"),
                              "reference": b.reference}
                       for name, b in bounds.items()},
        }
        rows.append(row)
        if verbose:
            shown = ", ".join(f"{k} {v['gap_bound']:.4f}" for k, v in row["bounds"].items())
            print(f"[cmi {dataset}] n={n}: gap {gap:.4f} (train {row['train_error']:.4f}); "
                  f"{shown}; {row['seconds']:.1f} s", flush=True)
    last = rows[-1]
    best = min(last["bounds"], key=lambda k: last["bounds"][k]["gap_bound"])
    record = {
        "experiment": "cmi", "dataset": dataset, "seed": seed,
        "settings": {"ns": list(ns), "num_masks": num_masks,
                     "num_supersamples": num_supersamples, "steps": steps, "width": width,
                     "lr": lr, "batch_size": batch_size, "method": method,
                     "devices": len(jax.devices()), "backend": jax.default_backend()},
        "what": "each bound is on the expected generalisation gap of the training algorithm "
                "(expectation over masks and training randomness, given the supersamples); "
                "information terms are plug-in estimates over the masks",
        "rows": rows,
        "best_at_largest_n": {"n": last["n"], "bound": best,
                              "gap_bound": last["bounds"][best]["gap_bound"],
                              "mean_gap": last["mean_gap"],
                              "ratio_to_gap": last["bounds"][best]["ratio_to_gap"]},
        "paper_f_cmi_mnist_4v9": {str(k): {"gap": g, "fcmi": b}
                                  for k, (g, b) in PAPER_MNIST_4V9.items()},
        "seconds": time.perf_counter() - t_all,
    }
    if out is not None:
        names = list(rows[0]["bounds"])
        table = markdown_table(
            ["n", "mean gap", "train error", *[f"{k} (ratio)" for k in names], "seconds"],
            [[r["n"], f"{r['mean_gap']:.4f}", f"{r['train_error']:.4f}",
              *[(f"{r['bounds'][k]['gap_bound']:.4f} ({r['bounds'][k]['ratio_to_gap']:.2f}x)"
                 if k in r["bounds"] and r["bounds"][k]["ratio_to_gap"] is not None else "-")
                for k in names], f"{r['seconds']:.1f}"] for r in rows])
        summary = (f"# Evaluated CMI bounds on {dataset}\n\nGap bounds (bounds on the expected "
                   f"gap of the algorithm) against the measured mean gap, K = {num_masks} masks "
                   f"x S = {num_supersamples} supersamples per n.\n\n{table}\n\nBest at n = "
                   f"{last['n']}: {best}, {record['best_at_largest_n']['ratio_to_gap']:.2f}x "
                   f"the mean gap. Total {record['seconds']:.0f} s.")
        write_record(out, record, summary)
        _plot(rows, os.path.join(out, "cmi.png"), f"evaluated CMI bounds, {dataset}")
    return record
