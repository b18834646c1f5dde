"""CROWN-certified accuracy against PGD robust accuracy at PGD's 50%-accuracy radius, for a
digits MLP trained with CROWN-IBP, normally, and with a Lipschitz margin.

    python benchmarks/bench_certified_training.py [--n 200] [--eps 0.2] [--epochs 30] [--seed 0]

Each network (the same MLP, 64-128-128-10, Adam, the same epochs and ``--seed``) is trained on the
digits training set: CROWN-IBP (`genbounds.train.train(certified="crown-ibp")`, l-infinity,
``--eps``, ramped over 60% of the epochs after a warm-up epoch, kappa 1 -> ``--kappa``
(0.5), beta 1 -> ``--beta`` (1: Zhang et al.'s "1 -> 1" schedule, the CROWN-IBP bound to the
end, since the certificate measured is CROWN's; their "1 -> 0" schedule ends on the interval
bound and, at eps = 0.2, fits digits far worse), plain cross-entropy (the baseline), and Lipschitz-margin training
(``lipschitz_margin=--lm``, an l2 method, for comparison). On ``--n`` test examples: PGD
(l-infinity, 40 steps, 2 restarts, inputs kept in [0, 1]) robust accuracy on a grid of radii;
r50, the radius where it falls to 50% (`genbounds.RobustnessCurve.eps_at`: linear interpolation
on the grid); at r50 PGD robust accuracy (an upper bound on the true robust accuracy) and
CROWN-certified accuracy (`genbounds.verify.crown_radius`, certified radius >= r50: a lower
bound); the ratio certified / PGD (target >= 0.8 for CROWN-IBP). Also the soundness check
(no example certified at r50 and broken by PGD there), clean accuracy and wall times, with the
load average.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from genbounds.adversarial import pgd
from genbounds.adversarial._curve import RobustnessCurve
from genbounds.data import load
from genbounds.train import train
from genbounds.verify import crown_radius

SPEC = {"kind": "mlp", "depth": 2, "width": 128}


def measure(res, X, y, grid, key):
    """PGD accuracy on the grid, r50, and PGD and CROWN-certified accuracy at r50."""
    def apply(p, x):
        return res.model.apply({"params": p}, x)

    t0 = time.perf_counter()
    accs = []
    for i, e in enumerate(grid):
        r = pgd(res.params, X=X, y=y, apply_fn=apply, eps=float(e), norm="linf", steps=40,
                restarts=2, box=(0.0, 1.0), key=jax.random.fold_in(key, i))
        accs.append(r.robust_accuracy)
    accs = np.asarray(accs)
    curve = RobustnessCurve(eps=np.asarray(grid), norm="linf", clean_accuracy=float(accs[0]),
                            pgd_accuracy=accs, fgsm_accuracy=None,
                            certified_accuracy=np.zeros_like(accs), violations=0, radii=None,
                            settings={})
    r50 = curve.eps_at(0.5)
    at = pgd(res.params, X=X, y=y, apply_fn=apply, eps=r50, norm="linf", steps=40,
             restarts=2, box=(0.0, 1.0), key=jax.random.fold_in(key, 999))
    t_pgd = time.perf_counter() - t0
    t0 = time.perf_counter()
    rad = crown_radius(res.params, X=X, y=y, apply_fn=apply, norm="linf", search_steps=12,
                       batch=100)
    t_crown = time.perf_counter() - t0
    cert = (rad.radius >= r50) & (np.asarray(rad.margins) > 0)
    return {"clean": float(accs[0]), "r50": r50, "pgd": at.robust_accuracy,
            "cert": float(np.mean(cert)), "violations": int(np.sum(cert & ~at.robust)),
            "median_radius": float(np.median(rad.radius)), "t_pgd": t_pgd, "t_crown": t_crown,
            "curve": accs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.2)
    ap.add_argument("--kappa", type=float, default=0.5)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lm", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ds = load("digits")
    X, y = ds.X_test[:args.n], ds.y_test[:args.n]
    grid = np.linspace(0.0, 0.4, 21)
    key = jax.random.key(0)
    ramp = max(1, int(0.6 * args.epochs))
    common = dict(batch_size=64, lr=1e-3, max_epochs=args.epochs, stop=None, seed=args.seed)
    runs = {
        "CROWN-IBP": dict(certified="crown-ibp", certified_eps=args.eps, certified_warmup=1,
                          certified_ramp=ramp, certified_kappa=args.kappa,
                          certified_beta=args.beta),
        "plain (baseline)": {},
        f"Lipschitz margin c={args.lm}": dict(lipschitz_margin=args.lm),
    }
    t_all = time.perf_counter()
    rows = []
    for name, kw in runs.items():
        t0 = time.perf_counter()
        res = train(SPEC, ds, **common, **kw)
        t_train = time.perf_counter() - t0
        m = measure(res, X, y, grid, key)
        rows.append((name, res.test_acc, t_train, m))
        print(f"{name}: trained in {t_train:.1f} s; PGD accuracy on the grid "
              f"{np.round(m['curve'], 3).tolist()}", flush=True)
    print(f"\ndigits, MLP 64-128-128-10, {args.epochs} epochs, seed {args.seed}; {args.n} test "
          "examples; l-inf; "
          f"CROWN-IBP trained at eps={args.eps}, kappa 1 -> {args.kappa}, "
          f"beta 1 -> {args.beta}")
    print("| training | test acc | r50 (PGD 50%) | PGD robust acc at r50 | CROWN-certified acc "
          "at r50 | ratio | violations | median CROWN radius | train s | PGD s | CROWN s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, acc, t_train, m in rows:
        ratio = m["cert"] / m["pgd"] if m["pgd"] > 0 else float("nan")
        print(f"| {name} | {acc:.3f} | {m['r50']:.4f} | {m['pgd']:.3f} | {m['cert']:.3f} | "
              f"{ratio:.3f} | {m['violations']} | {m['median_radius']:.4f} | {t_train:.1f} | "
              f"{m['t_pgd']:.1f} | {m['t_crown']:.1f} |")
    base = rows[1][3]
    ours = rows[0][3]
    print(f"\nCROWN-IBP: certified/PGD at r50 = {ours['cert'] / ours['pgd']:.3f} (target >= 0.8); "
          f"baseline (plain): {base['cert'] / max(base['pgd'], 1e-12):.3f}")
    print(f"total {time.perf_counter() - t_all:.1f} s; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
