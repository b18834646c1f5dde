"""Time the Jiang et al. (2020) measure suite on a 784-600-600-10 MLP with 10 000 examples.

    python benchmarks/bench_measures.py [--n 10000]

The suite: training margins (and the 10% margin quantile), `norm_measures` (Jiang's norm-based
measures), `distance_from_init`, and both flatness searches (`pac_bayes_flatness`,
`magnitude_aware_flatness`, 10 perturbations, depth 15, Jiang's defaults). It runs three times in
the same process: the current searches with their default (Jiang et al.'s stopping rule:
return the first midpoint whose deviation is within 0.01 of the target, as RGM's code does),
the current searches at full depth (``deviation_tol=None``: the same brackets as before), and
the previous implementation (a copy kept below: every step maps over the perturbations one
after the other and reads the whole training set, all 15 steps). It prints the first-call and
warm times, their ratios to the previous implementation and to RGM's ``get_all_measures``
(58.0 s on this machine, measured beside the previous implementation's 30.6 s first call and
24.4 s warm), also with RGM's time scaled by how long the previous implementation takes in
this run.

The network has random (He-initialised) weights and its own predictions as labels (as in
benchmarks/bench_report.py). The first call includes compilation; run it in a fresh process
(and with GENBOUNDS_JAX_CACHE=0 to see the cost without the persistent compilation cache).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import genbounds  # noqa: E402
from genbounds.internal import flatness_module as _flatness  # noqa: E402
from genbounds.internal import zero_one  # noqa: E402

# ------------------------------------------------------------------------------------------
# The previous search (before batching and early decisions), kept to time against.
# ------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnums=(0, 1))
def _old_perturbed_errors(apply_fn, unravel, x0, scale_unit, noise, X, y):
    def err(x):
        return zero_one(apply_fn(unravel(x), X), y).mean()

    return jax.lax.map(lambda z: err(x0 + scale_unit * z), noise)


def _old_search(apply_fn, unravel, x0, std_of, noise, X, y, *, target, depth, scale_max,
                **unused):
    del unused  # search_tol, deviation_tol, logits: the previous search had none of them
    base = float(zero_one(apply_fn(unravel(x0), X), y).mean())

    def deviation(s):
        errs = np.asarray(_old_perturbed_errors(apply_fn, unravel, x0, std_of(s), noise, X, y))
        return errs.mean() - base, errs.std(ddof=1) / math.sqrt(len(errs))

    lo, hi = 0.0, float(scale_max)
    reached = deviation(hi)[0] > target
    if reached:
        for _ in range(depth):
            mid = 0.5 * (lo + hi)
            if deviation(mid)[0] > target:
                hi = mid
            else:
                lo = mid
    else:
        lo = hi
    scale = 0.5 * (lo + hi) if reached else hi
    dev, se = deviation(scale)
    return {"scale": scale, "bracket_low": lo, "bracket_high": hi, "deviation": float(dev),
            "deviation_stderr": float(se), "train_error": base, "reached_target": bool(reached)}


# ------------------------------------------------------------------------------------------
# The suite
# ------------------------------------------------------------------------------------------


def setup(n: int, seed: int = 0):
    from bench_report import MLP

    model = MLP()
    X = np.asarray(jax.random.uniform(jax.random.key(seed), (n, 784)), np.float32)
    params = model.init(jax.random.key(seed + 1), X[:1])["params"]
    init = model.init(jax.random.key(seed + 2), X[:1])["params"]
    apply_fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
    y = np.asarray(jnp.argmax(apply_fn(params, X), axis=1))
    return params, init, apply_fn, X, y


def suite(params, init, apply_fn, X, y, deviation_tol) -> dict:
    logits = apply_fn(params, X)
    m = genbounds.margins(logits, y)
    gamma = float(genbounds.margin_quantile(m, 0.1))
    out = {"margin": gamma}
    out["norms"] = genbounds.norm_measures(params, reference=init, margin=gamma, n=len(y))
    out["dist"] = genbounds.distance_from_init(params, reference=init)
    key = jax.random.key(0)
    out["sigma"] = genbounds.pac_bayes_flatness(params, X=X, y=y, apply_fn=apply_fn, key=key,
                                                init_params=init, deviation_tol=deviation_tol)
    out["alpha"] = genbounds.magnitude_aware_flatness(params, X=X, y=y, apply_fn=apply_fn, key=key,
                                                      init_params=init,
                                                      deviation_tol=deviation_tol)
    return out


def timed(args, search, deviation_tol) -> tuple[float, float, dict]:
    saved = _flatness._search
    _flatness._search = search
    try:
        t0 = time.perf_counter()
        suite(*args, deviation_tol)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = suite(*args, deviation_tol)
        warm = time.perf_counter() - t0
    finally:
        _flatness._search = saved
    return first, warm, res


# RGM's get_all_measures on these weights, on this 2-core machine (not installable here: the
# figure is the one measured beside the previous implementation, 24.4 s warm, 30.6 s first).
RGM_SECONDS = 58.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    a = ap.parse_args()
    args = setup(a.n)
    # The current default runs first: its first call pays every compilation the rows share.
    rows = {
        "current (Jiang's tolerance)": timed(args, _flatness._search, 0.01),
        "current, full depth": timed(args, _flatness._search, None),
        "previous (full depth)": timed(args, _old_search, None),
    }
    print(f"measure suite on 784-600-600-10, n = {a.n} (margins, norm measures, distance "
          "from init, sigma' and alpha' searches; 10 perturbations, depth 15)")
    prev_first, prev_warm, old = rows["previous (full depth)"]
    print(f"{'':<30}{'first call':>11}{'warm':>9}{'x prev (1st, warm)':>21}"
          f"{'x RGM (1st, warm)':>20}")
    for name, (first, warm, _) in rows.items():
        print(f"{name:<30}{first:>10.2f}s{warm:>8.2f}s{prev_first / first:>12.2f}x"
              f"{prev_warm / warm:>8.2f}x{RGM_SECONDS / first:>11.2f}x{RGM_SECONDS / warm:>8.2f}x")
    cur_first, cur_warm, _ = rows["current (Jiang's tolerance)"]
    # RGM was timed beside the previous implementation (30.6 s first call, 24.4 s warm): its
    # time on this machine today, scaled by how long the previous implementation took here.
    rgm_first, rgm_warm = RGM_SECONDS * prev_first / 30.6, RGM_SECONDS * prev_warm / 24.4
    print(f"targets: >= 3x RGM's {RGM_SECONDS:g} s on the first call (<= {RGM_SECONDS / 3:.1f} s), "
          f">= 5x warm (<= {RGM_SECONDS / 5:.1f} s)")
    print(f"RGM scaled to this machine today by the previous implementation's times: "
          f"{rgm_first:.1f} s first call, {rgm_warm:.1f} s warm; current default "
          f"{rgm_first / cur_first:.2f}x and {rgm_warm / cur_warm:.2f}x faster")
    for label, res in (("full depth", rows["current, full depth"][2]),
                       ("tolerance", rows["current (Jiang's tolerance)"][2])):
        for name, key in (("sigma'", "sigma"), ("alpha'", "alpha")):
            tn, to = res[key].terms, old[key].terms
            pname = "sigma_prime" if key == "sigma" else "alpha_prime"
            same = (tn["bracket_low"], tn["bracket_high"]) == (to["bracket_low"],
                                                               to["bracket_high"])
            print(f"{label:>10} {name}: {tn[pname]:.6g} (previous {to[pname]:.6g}, same "
                  f"bracket: {same}), deviation {tn['deviation']:.4f}; {tn['search_steps']} "
                  f"steps in {tn['data_passes']:.2f} data passes (previous 17)")


if __name__ == "__main__":
    main()
