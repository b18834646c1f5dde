"""`heavy_tail` against WeightWatcher 0.7.7 on the same weights, in the same process.

    python benchmarks/bench_heavy_tail.py [--reps 2]

Cases: a Gaussian (He-scaled) 784-600-600-10 MLP, a 1024x1024 matrix of Student-t entries
(df 2.5), and an MLP (64-256-256-10) and a CNN (2 convolutions of 32 channels) trained on the
digits with `genbounds.train`. Passes: the default pass (ESD, power-law fit, norm metrics) and
the full pass (plus the Marchenko-Pastur fit and the randomised ESD with its MP fit).

WeightWatcher (torch + weightwatcher from PyPI; not a genbounds dependency) runs when it is
importable, on torch layers holding the same weights (Dense ``W.T``, conv
``K.transpose(3, 2, 0, 1)``), its full pass after ``np.random.seed(0)``; otherwise it is skipped
and the script says so. Printed per case and pass: WeightWatcher's time, genbounds'
``preset="weightwatcher"`` time and the default preset's (without and with the 200-resample
bootstrap of alpha), the ratios WW / genbounds, max |alpha - WW alpha| over layers and whether
the analysed layers and xmin agree. Times are warm (each call runs once before it is timed, so
the jitted kernels are compiled; the first-call time is printed once). Threads: the BLAS and
XLA get the machine's cores (set OMP_NUM_THREADS etc. before running to restrict them).
"""

from __future__ import annotations

import argparse
import contextlib
import io
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


def cases():
    rng = np.random.default_rng(0)
    out = {"gaussian 784-600-600-10": [
        rng.standard_normal((a, b)) * np.sqrt(2.0 / a)
        for a, b in ((784, 600), (600, 600), (600, 10))]}
    out["student-t 1024x1024 (df 2.5)"] = [rng.standard_t(2.5, size=(1024, 1024)) / 32.0]
    from genbounds.data import load
    from genbounds.train import train

    ds = load("digits", seed=0)
    mlp = train({"kind": "mlp", "depth": 2, "width": 256}, ds, max_epochs=60, seed=0)
    out["digits MLP 64-256-256-10 (trained)"] = mlp.params
    dsi = load("digits", seed=0, flatten=False)
    cnn = train({"kind": "cnn", "depth": 2, "width": 32, "strides": 1}, dsi, max_epochs=40,
                seed=0)
    out["digits CNN 2x conv32 (trained)"] = cnn.params
    return out


def timed(fn, reps):
    fn()  # warm: compilation, caches
    best = float("inf")
    res = None
    for _ in range(reps):
        t = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t)
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
    args = ap.parse_args(argv)
    ww = _ww()
    t0 = time.perf_counter()
    genbounds.heavy_tail([np.random.default_rng(1).standard_normal((300, 200))])
    print(f"first call (compiles the SVD and KS kernels): {time.perf_counter() - t0:.2f} s")
    print(f"devices: {jax.devices()}")
    for name, params in cases().items():
        print(f"\n== {name}")
        for full in (False, True):
            kw = {"mp_fit": full, "randomize": full}
            run = partial(genbounds.heavy_tail, params, **kw)
            t_wp, r_wp = timed(partial(run, preset="weightwatcher"), args.reps)
            t_g0, _ = timed(partial(run, bootstrap=0), args.reps)
            t_gb, _ = timed(run, args.reps)
            line = (f"  {'full' if full else 'default'} pass: genbounds preset=weightwatcher "
                    f"{t_wp:.3f} s, default preset {t_g0:.3f} s (with bootstrap {t_gb:.3f} s)")
            if ww is not None:
                model = torch_model(params)
                t_ww, det = timed(run_ww(ww, model, full), args.reps)
                alphas = list(det["alpha"])
                xmins = list(det["xmin"])
                ours = [x["alpha"] for x in r_wp.layers]
                same = len(ours) == len(alphas) and all(
                    x["xmin"] == m for x, m in zip(r_wp.layers, xmins, strict=False))
                err = max(abs(a - b) for a, b in zip(ours, alphas, strict=False))
                line += (f"\n    WeightWatcher {t_ww:.3f} s; ratio WW/genbounds: "
                         f"{t_ww / t_wp:.1f}x (weightwatcher preset), {t_ww / t_g0:.1f}x "
                         f"(default), {t_ww / t_gb:.1f}x (default + bootstrap); "
                         f"max |alpha - WW alpha| = {err:.1e}, same layers and xmin: {same}")
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
