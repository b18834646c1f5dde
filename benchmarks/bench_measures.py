"""Time the Jiang et al. (2020) measure suite on a 784-600-600-10 MLP with 10 000 examples.

    python benchmarks/bench_measures.py [--n 10000] [--repeats 1]

The suite: training margins (and the 10% margin quantile), `norm_measures` (Jiang's norm-based
measures), `distance_from_init`, and both flatness searches (`pac_bayes_flatness`,
`magnitude_aware_flatness`, 10 perturbations, depth 15, Jiang's defaults). It runs twice in the
same process, once with the current searches and once with the previous implementation (a
copy kept below: every step maps over the perturbations one after the other and reads the
whole training set), and prints the first-call and warm times of both and their ratio.

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
from genbounds import _flatness  # noqa: E402
from genbounds._hessian import zero_one  # noqa: E402

# ------------------------------------------------------------------------------------------
# The previous search (before batching and early decisions), kept to time against.
# ------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnums=(0, 1))
def _old_perturbed_errors(apply_fn, unravel, x0, scale_unit, noise, X, y):
    def err(x):
        return zero_one(apply_fn(unravel(x), X), y).mean()

    return jax.lax.map(lambda z: err(x0 + scale_unit * z), noise)


def _old_search(apply_fn, unravel, x0, std_of, noise, X, y, *, target, depth, scale_max,
                tol=None):
    del tol
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


def suite(params, init, apply_fn, X, y) -> dict:
    logits = apply_fn(params, X)
    m = genbounds.margins(logits, y)
    gamma = float(genbounds.margin_quantile(m, 0.1))
    out = {"margin": gamma}
    out["norms"] = genbounds.norm_measures(params, reference=init, margin=gamma, n=len(y))
    out["dist"] = genbounds.distance_from_init(params, reference=init)
    key = jax.random.key(0)
    out["sigma"] = genbounds.pac_bayes_flatness(params, X=X, y=y, apply_fn=apply_fn, key=key,
                                                init_params=init)
    out["alpha"] = genbounds.magnitude_aware_flatness(params, X=X, y=y, apply_fn=apply_fn, key=key,
                                                      init_params=init)
    return out


def timed(args, search) -> tuple[float, float, dict]:
    saved = _flatness._search
    _flatness._search = search
    try:
        t0 = time.perf_counter()
        suite(*args)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = suite(*args)
        warm = time.perf_counter() - t0
    finally:
        _flatness._search = saved
    return first, warm, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    a = ap.parse_args()
    args = setup(a.n)
    new_first, new_warm, new = timed(args, _flatness._search)
    old_first, old_warm, old = timed(args, _old_search)
    print(f"measure suite on 784-600-600-10, n = {a.n} (margins, norm measures, distance "
          "from init, sigma' and alpha' searches)")
    print(f"{'':<22}{'first call':>12}{'warm':>10}")
    print(f"{'previous searches':<22}{old_first:>11.2f}s{old_warm:>9.2f}s")
    print(f"{'current':<22}{new_first:>11.2f}s{new_warm:>9.2f}s")
    print(f"{'ratio previous/current':<22}{old_first / new_first:>11.2f}x"
          f"{old_warm / new_warm:>9.2f}x")
    for name, key in (("sigma'", "sigma"), ("alpha'", "alpha")):
        tn, to = new[key].terms, old[key].terms
        pname = "sigma_prime" if key == "sigma" else "alpha_prime"
        same = (tn["bracket_low"], tn["bracket_high"]) == (to["bracket_low"], to["bracket_high"])
        print(f"{name}: {tn[pname]:.6g} (previous {to[pname]:.6g}, same bracket: {same}); "
              f"{tn['search_steps']} steps in {tn['data_passes']:.2f} data passes "
              f"(previous {tn['search_steps'] + 2})")


if __name__ == "__main__":
    main()
