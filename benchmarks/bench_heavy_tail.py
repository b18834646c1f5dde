"""`heavy_tail` against WeightWatcher 0.7.7 on the same weights, in the same process.

    python benchmarks/bench_heavy_tail.py [--reps 2] [--cases gaussian,student]

Cases: a Gaussian (He-scaled) 784-600-600-10 MLP, a 1024x1024 matrix of Student-t entries
(df 2.5), and an MLP (64-256-256-10) and a CNN (2 convolutions of 32 channels) trained on the
digits with `genbounds.train`. Passes: the default pass (ESD, power-law fit, norm metrics) and
the full pass (plus the Marchenko-Pastur fit and the randomised ESD with its MP fit).

WeightWatcher (torch + weightwatcher from PyPI; not a genbounds dependency) runs when it is
importable, on torch layers holding the same weights (Dense ``W.T``, conv
``K.transpose(3, 2, 0, 1)``), its full pass after ``np.random.seed(0)``; otherwise it is skipped
and the script says so. Printed per case and pass: WeightWatcher's time, genbounds'
``preset="weightwatcher"`` time and the default preset's (without and with the 200-resample
bootstrap of alpha), the ratios WW / genbounds (best of ``--reps`` rounds, the four runs
interleaved in each round), max |alpha - WW alpha| over layers and whether the analysed layers
and xmin agree. Times are warm (each call runs once before it is timed, so the jitted kernels
are compiled; the first-call time is printed once). Threads: the BLAS and
XLA get the machine's cores (set OMP_NUM_THREADS etc. before running to restrict them); the
machine's load average is printed before and after, since a loaded machine slows both sides
(multi-threaded LAPACK most). ``--cases`` keeps the cases whose name contains one of the given
words (the trained digits models take a minute to train).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from functools import partial

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import genbounds  # noqa: E402
from genbounds.spectra._matrices import collect_kernels  # noqa: E402


def _ww():
    try:
        import torch  # noqa: F401
        import weightwatcher as ww
    except ImportError as e:
        print(f"WeightWatcher not importable ({e}): its columns are skipped. Install it with "
              "`pip install torch weightwatcher==0.7.7` to compare.")
        return None
    import logging

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    return ww


def torch_model(params):
    import torch

    mods = []
    for _, k in collect_kernels(params):
        k = np.asarray(k, np.float32)
        if k.ndim == 2:
            m = torch.nn.Linear(k.shape[0], k.shape[1], bias=False)
            m.weight.data = torch.from_numpy(np.ascontiguousarray(k.T))
        else:
            m = torch.nn.Conv2d(k.shape[2], k.shape[3], k.shape[:2], bias=False)
            m.weight.data = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
        mods.append(m)
    return torch.nn.Sequential(*mods)


def cases(select=None):
    def keep(name):
        return select is None or any(w in name for w in select)

    rng = np.random.default_rng(0)
    out = {"gaussian 784-600-600-10": [
        rng.standard_normal((a, b)) * np.sqrt(2.0 / a)
        for a, b in ((784, 600), (600, 600), (600, 10))]}
    out["student-t 1024x1024 (df 2.5)"] = [rng.standard_t(2.5, size=(1024, 1024)) / 32.0]
    out = {k: v for k, v in out.items() if keep(k)}
    if not keep("digits MLP") and not keep("digits CNN"):
        return out
    from genbounds.data import load
    from genbounds.train import train

    if keep("digits MLP"):
        ds = load("digits", seed=0)
        mlp = train({"kind": "mlp", "depth": 2, "width": 256}, ds, max_epochs=60, seed=0)
        out["digits MLP 64-256-256-10 (trained)"] = mlp.params
    if keep("digits CNN"):
        dsi = load("digits", seed=0, flatten=False)
        cnn = train({"kind": "cnn", "depth": 2, "width": 32, "strides": 1}, dsi, max_epochs=40,
                    seed=0)
        out["digits CNN 2x conv32 (trained)"] = cnn.params
    return out


def timed_together(fns, reps):
    """Best wall time of each callable over ``reps`` rounds, the callables interleaved within a
    round (so that a change of the machine's load hits all of them alike); each runs once
    first (compilation, caches). Returns ({name: seconds}, {name: last result})."""
    res = {k: f() for k, f in fns.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            res[k] = f()
            best[k] = min(best[k], time.perf_counter() - t)
    return best, res


def run_ww(ww, model, full):
    def go():
        with contextlib.redirect_stdout(io.StringIO()):
            w = ww.WeightWatcher(model=model)
            if full:
                np.random.seed(0)
                return w.analyze(mp_fit=True, randomize=True)
            return w.analyze()
    return go


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cases", default=None,
                    help="comma-separated words; keep the cases whose name contains one")
    args = ap.parse_args(argv)
    select = None if args.cases is None else args.cases.split(",")
    ww = _ww()
    t0 = time.perf_counter()
    genbounds.heavy_tail([np.random.default_rng(1).standard_normal((300, 200))])
    print(f"first call (compiles the SVD and KS kernels): {time.perf_counter() - t0:.2f} s")
    print(f"devices: {jax.devices()}; cores: {os.cpu_count()}; threads: " + ", ".join(
        f"{v}={os.environ[v]}" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                         "XLA_FLAGS") if v in os.environ))
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    for name, params in cases(select).items():
        print(f"\n== {name}")
        for full in (False, True):
            kw = {"mp_fit": full, "randomize": full}
            run = partial(genbounds.heavy_tail, params, **kw)
            fns = {"wp": partial(run, preset="weightwatcher"), "g0": partial(run, bootstrap=0),
                   "gb": run}
            if ww is not None:
                fns["ww"] = run_ww(ww, torch_model(params), full)
            t, r = timed_together(fns, args.reps)
            t_wp, t_g0, t_gb, r_wp = t["wp"], t["g0"], t["gb"], r["wp"]
            line = (f"  {'full' if full else 'default'} pass: genbounds preset=weightwatcher "
                    f"{t_wp:.3f} s, default preset {t_g0:.3f} s (with bootstrap {t_gb * 1e3:.2f} ms)")
            if ww is not None:
                t_ww, det = t["ww"], r["ww"]
                alphas = list(det["alpha"])
                xmins = list(det["xmin"])
                ours = [x["alpha"] for x in r_wp.layers]
                same = len(ours) == len(alphas) and all(
                    x["xmin"] == m for x, m in zip(r_wp.layers, xmins, strict=False))
                err = max(abs(a - b) for a, b in zip(ours, alphas, strict=False))
                line += (f"\n    WeightWatcher {t_ww:.3f} s ({t_ww * 1e3:.2f} ms); ratio WW/genbounds: "
                         f"{t_ww / t_wp:.1f}x (weightwatcher preset), {t_ww / t_g0:.1f}x "
                         f"(default), {t_ww / t_gb:.2f}x (default + bootstrap); "
                         f"max |alpha - WW alpha| = {err:.1e}, same layers and xmin: {same}")
            print(line)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
