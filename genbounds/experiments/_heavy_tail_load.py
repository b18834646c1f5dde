"""`genbounds reproduce heavy-tail`: the tail exponent against the load N/M (Martin & Mahoney).

The seed paper's section 4 (after Martin & Mahoney, "Rethinking generalization requires
revisiting old ideas: statistical mechanics approaches and complex learning behavior", 2017,
arXiv:1710.09553, and their JMLR 2021 paper, arXiv:1810.01075) reads generalisation against the
*load* of a network: training samples per parameter, their $\\alpha = N/M$ (here ``load``, to
keep it apart from the tail exponent ``alpha`` of a layer's ESD and the aspect ratio ``Q`` of a
matrix). One architecture (a 2-hidden-layer ReLU MLP) is trained on training sets of growing
size, with the true labels and with random labels (Zhang et al. 2017), each to 100% training
accuracy or the epoch budget; `genbounds.heavy_tail` (default preset, bootstrap interval) then
gives every layer's tail exponent. Written: ``OUT/results.json``, ``OUT/summary.md`` and
``OUT/load.png`` (test error and the layer alphas with their intervals against the load).
Martin & Mahoney's claim (empirical, not a theorem): better-trained, better-generalising layers
have smaller tail exponents; random labels should show it weakly or not at all.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from genbounds.experiments._common import load_noisy, markdown_table, write_record

SIZES = (150, 300, 600, 1200)
WIDTH = 256


def _num_weights(params: Any) -> int:
    import jax

    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


def run_load_sweep(out: str | os.PathLike, *, dataset: str = "digits", sizes=SIZES,
                   width: int = WIDTH, seed: int = 0, max_epochs: int = 200,
                   progress: Any = None) -> dict[str, Any]:
    """Trains the MLP at each training-set size with true and random labels, measures the layer
    tail exponents; returns and writes the record (see the module docstring)."""
    import jax

    from genbounds.spectra import heavy_tail
    from genbounds.train import train

    start = time.perf_counter()
    rows = []
    for labels in ("true", "random"):
        for n in sizes:
            ds = load_noisy(dataset, seed=seed, n=int(n), label_noise=1.0 if labels == "random"
                            else 0.0)
            res = train({"kind": "mlp", "depth": 2, "width": width}, ds, lr=1e-3,
                        batch_size=64, max_epochs=max_epochs, seed=seed)
            m = _num_weights(res.params)
            ht = heavy_tail(res.params, key=jax.random.key(seed))
            row = {"labels": labels, "n": int(len(ds.X_train)), "num_weights": m,
                   "load": len(ds.X_train) / m, "epochs": int(res.epochs),
                   "train_error": 1.0 - float(res.train_acc),
                   "test_error": 1.0 - float(res.test_acc),
                   "layers": {x.name: {k: x.metrics.get(k) for k in
                                       ("alpha", "alpha_low", "alpha_high", "xmin",
                                        "num_pl_spikes", "Q", "status")}
                              for x in ht.layers},
                   "summary": ht.summary()}
            rows.append(row)
            if progress:
                progress(f"{labels} labels, n = {row['n']}: test error "
                         f"{row['test_error']:.3f}, alphas "
                         + ", ".join(f"{v['alpha']:.2f}" for v in row["layers"].values()))
    record = {"protocol": {"dataset": dataset, "model": f"mlp depth 2 width {width}",
                           "sizes": list(sizes), "seed": seed, "max_epochs": max_epochs,
                           "load": "n_train / number of weights (biases included)",
                           "alpha": "tail exponent, heavy_tail default preset"},
              "runs": rows, "seconds": time.perf_counter() - start}
    layer_names = list(rows[0]["layers"])
    table = [[r["labels"], r["n"], f"{r['load']:.4f}", f"{r['test_error']:.3f}",
              *(f"{r['layers'][k]['alpha']:.2f} [{r['layers'][k].get('alpha_low') or 0:.2f}, "
                f"{r['layers'][k].get('alpha_high') or 0:.2f}]" for k in layer_names)]
             for r in rows]
    summary = markdown_table(["labels", "n", "load N/M", "test error",
                              *(f"alpha {k}" for k in layer_names)], table)
    write_record(out, record, summary)
    _plot(rows, layer_names, Path(out) / "load.png")
    return record


def _plot(rows: list[dict[str, Any]], layer_names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genbounds.files import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for labels, ls in (("true", "-"), ("random", "--")):
        rr = [r for r in rows if r["labels"] == labels]
        load = [r["load"] for r in rr]
        axes[0].plot(load, [r["test_error"] for r in rr], "k" + ls, marker="o",
                     label=f"{labels} labels")
        for i, k in enumerate(layer_names):
            a = np.array([r["layers"][k]["alpha"] for r in rr], float)
            lo = np.array([r["layers"][k].get("alpha_low") or np.nan for r in rr], float)
            hi = np.array([r["layers"][k].get("alpha_high") or np.nan for r in rr], float)
            axes[1].errorbar(load, a, yerr=[np.clip(a - lo, 0, None), np.clip(hi - a, 0, None)],
                             color=f"C{i}", ls=ls, marker="o", capsize=2,
                             label=f"{k} ({labels})")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("load N/M (training samples per weight)")
    axes[0].set_ylabel("test error")
    axes[1].set_ylabel("tail exponent alpha (95% bootstrap)")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)


def reproduce_heavy_tail(dataset: str, out: str | os.PathLike, *, seed: int = 0,
                         download: bool = False) -> dict[str, Any]:
    """The `genbounds reproduce heavy-tail` runner (digits by default, a few minutes)."""
    from genbounds.experiments._common import console

    if dataset not in ("digits", "mnist1d", "mnist", "synthetic"):
        raise ValueError(f"reproduce heavy-tail: dataset must be digits, mnist1d, mnist or "
                         f"synthetic, got {dataset!r}")
    con = console()
    return run_load_sweep(out, dataset=dataset, seed=seed,
                          progress=lambda s: con.print(s, highlight=False))
