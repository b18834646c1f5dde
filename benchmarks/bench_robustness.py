"""Certified accuracy beside PGD robust accuracy on digits, with and without Lipschitz-margin
training, and the time of `genbounds robustness` against the time of training alone.

    python benchmarks/bench_robustness.py [--out DIR]

Trains a 64-256-10 MLP on digits (inputs in [0, 1]) twice, with plain cross-entropy and with
Lipschitz-margin training (c = 0.5; Tsuzuku et al. 2018), and prints for both the l2 curves
(clean, PGD, certified), the radius where PGD robust accuracy reaches 50% and the certified
accuracy there (target: at least half of the PGD accuracy for the LMT net), and the ratio of
the robustness evaluation's time to the training time measured in the same run.
Writes DIR/bench_robustness.png (both nets side by side) and DIR/bench_robustness.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import genbounds
from genbounds.data import load
from genbounds.internal import box_of, robustness_crossing
from genbounds.train import train


def run(c: float, ds, eps, *, epochs: int = 60):
    t0 = time.perf_counter()
    res = train({"kind": "mlp", "depth": 1, "width": 256}, ds, batch_size=64,
                max_epochs=epochs, stop=None, lipschitz_margin=c)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    box = box_of(ds)
    curve = genbounds.robustness(res.params, apply_fn=res.apply_fn, X=ds.X_test, y=ds.y_test,
                                 eps=eps, norm="l2", steps=40, restarts=2, box=box)
    cross = robustness_crossing(curve, res.params, res.apply_fn, ds.X_test, ds.y_test, box)
    t_rob = time.perf_counter() - t0
    return res, curve, cross, t_train, t_rob


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load("digits", seed=0)
    eps = np.linspace(0.0, 2.0, 21)
    rows = {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3), sharey=True)
    for ax, c in zip(axes, (0.0, 0.5), strict=True):
        res, curve, cross, t_train, t_rob = run(c, ds, eps)
        name = "plain" if c == 0 else f"LMT c={c:g}"
        print(f"\n== {name}: test acc {res.test_acc:.3f}, L = {curve.radii.lipschitz:.4g}, "
              f"tight {curve.radii.lipschitz_tight:.4g}, violations {curve.violations}")
        print(curve.to_markdown())
        if cross["eps"] is not None:
            print(f"PGD 50% at eps = {cross['eps']:.3f}: PGD {cross['pgd_accuracy']:.3f}, "
                  f"certified {cross['certified_accuracy']:.3f}, ratio {cross['ratio']:.2f} "
                  f"(target >= 0.5)")
        print(f"training {t_train:.1f} s, robustness evaluation {t_rob:.1f} s "
              f"(ratio {t_rob / t_train:.2f} of training)")
        curve.plot(ax)
        ax.set_title(f"digits MLP 64-256-10, {name}", fontsize=10)
        rows[name] = {"curve": curve.to_dict(), "at_pgd_50": cross, "train_seconds": t_train,
                      "robustness_seconds": t_rob, "test_accuracy": res.test_acc}
    fig.tight_layout()
    fig.savefig(out / "bench_robustness.png", dpi=110)
    (out / "bench_robustness.json").write_text(json.dumps(rows, indent=2))
    print(f"\nwrote {out / 'bench_robustness.png'}")


if __name__ == "__main__":
    main()
