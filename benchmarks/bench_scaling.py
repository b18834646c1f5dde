"""How the cost of `report`, `spectral`, `pac_bayes` and `dziugaite_roy` grows with the network.

    python benchmarks/bench_scaling.py            # quick grid
    python benchmarks/bench_scaling.py --full     # width 128..2048 x depth 2..16

ReLU MLPs (flax linen, 64 inputs, 10 classes) of every (width, depth) of the grid, random
He-initialised weights, n = 2000 inputs labelled by the net's own predictions (so the margin
bounds apply). Each function is called once to compile and then timed warm (the best of up to
five calls, stopping after about a second);
`dziugaite_roy` runs a short optimisation (200 steps, 500 Monte-Carlo samples: its cost per
step, not its converged value, is what is measured). Prints a table of seconds and, for each
function, the least-squares slope of log(time) against log(number of parameters): 1 means
linear in the parameter count, 1.5 means t ~ P^1.5 (an O(h^3) SVD of an h x h layer is slope
1.5 in P ~ h^2).

CNN rows: the harness CNN (`genbounds.train.CNN`: 3x3 stride-2 SAME convolutions with C
channels, then a dense layer) on the same inputs seen as 8x8 images, for C = 16, 32, 64. The
traced network gives the convolutions' certified operator norms (docs/conv_norms.md), so
`report` and `spectral` run the spectrally normalised bound on them; `pac_bayes` is stated for
fully connected nets and refuses them (reported as such, not timed).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import genbounds  # noqa: E402

QUICK = [(128, 2), (512, 2), (2048, 2), (256, 4), (256, 8), (256, 16)]
FULL = [(w, d) for w in (128, 256, 512, 1024, 2048) for d in (2, 4, 8, 16)]
CNN_CHANNELS = (16, 32, 64)


class MLP(nn.Module):
    width: int
    depth: int

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth - 1):
            x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(10)(x)


def _instance(model, shape, n: int, seed: int):
    """Random inputs of `shape`, He-initialised params and init params, labels = predictions."""
    X = np.asarray(jax.random.uniform(jax.random.key(seed), (n, *shape)), np.float32)
    params = model.init(jax.random.key(seed + 1), X[:1])["params"]
    init = model.init(jax.random.key(seed + 2), X[:1])["params"]
    apply_fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
    y = np.asarray(jnp.argmax(apply_fn(params, X), axis=1))
    count = sum(int(np.size(v)) for v in jax.tree.leaves(params))
    return params, init, apply_fn, X, y, count


def setup(width: int, depth: int, n: int = 2000, seed: int = 0):
    return _instance(MLP(width, depth), (64,), n, seed)


def setup_cnn(channels: int, n: int = 2000, seed: int = 0):
    from genbounds.train import CNN

    return _instance(CNN(features=(channels, channels)), (8, 8, 1), n, seed)


def functions(params, init, apply_fn, X, y):
    return {
        "report": lambda: genbounds.report(params, X=X, y=y, apply_fn=apply_fn,
                                           init_params=init),
        "spectral": lambda: genbounds.spectral(params, X=X, y=y, apply_fn=apply_fn),
        "pac_bayes": lambda: genbounds.pac_bayes(params, X=X, y=y, apply_fn=apply_fn),
        "dziugaite_roy": lambda: genbounds.dziugaite_roy(
            params, X=X, y=y, apply_fn=apply_fn, init_params=init, key=jax.random.key(0), steps=200,
            num_mc_samples=500),
    }


def _block(out):
    jax.block_until_ready(jax.tree.leaves(out, is_leaf=lambda x: isinstance(x, jax.Array)))


def _time(fns) -> dict[str, float | str]:
    times: dict[str, float | str] = {}
    for name, f in fns.items():
        try:
            _block(f())  # compile
        except genbounds.NotBoundable as e:
            times[name] = "refused: " + " ".join(str(e).split())[:160]
            continue
        best, spent = math.inf, 0.0
        for _ in range(5):  # best of up to 5 warm calls, within about a second
            t0 = time.perf_counter()
            _block(f())
            dt = time.perf_counter() - t0
            best, spent = min(best, dt), spent + dt
            if spent > 1.0:
                break
        times[name] = best
    return times


def _fmt(v: float | str) -> str:
    return f"{v:7.3f}s" if isinstance(v, float) else "    n/a "


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="width 128..2048 x depth 2..16")
    ap.add_argument("--no-cnn", action="store_true", help="leave out the CNN rows")
    a = ap.parse_args()
    grid = FULL if a.full else QUICK
    rows = []
    names = None
    for width, depth in grid:
        params, init, apply_fn, X, y, count = setup(width, depth)
        fns = functions(params, init, apply_fn, X, y)
        names = list(fns)
        times = _time(fns)
        rows.append((width, depth, count, times))
        print(f"MLP width {width:>5} depth {depth:>3} params {count:>10,d}  "
              + "  ".join(f"{k} {_fmt(v)}" for k, v in times.items()), flush=True)
    cnn_rows = []
    for c in () if a.no_cnn else CNN_CHANNELS:
        params, init, apply_fn, X, y, count = setup_cnn(c)
        times = _time(functions(params, init, apply_fn, X, y))
        cnn_rows.append((c, count, times))
        print(f"CNN channels {c:>4} (2 convs) params {count:>10,d}  "
              + "  ".join(f"{k} {_fmt(v)}" for k, v in times.items()), flush=True)
        for k, v in times.items():
            if isinstance(v, str):
                print(f"    {k}: {v}")
    print()
    print(f"{'function':<15}{'MLP slope d log t / d log P':>30}{'CNN slope':>12}")
    logp = np.log([r[2] for r in rows])
    for name in names:
        logt = np.log([r[3][name] for r in rows])
        slope = np.polyfit(logp, logt, 1)[0]
        cnn = [(r[1], r[2][name]) for r in cnn_rows if isinstance(r[2][name], float)]
        cslope = (f"{np.polyfit(np.log([p for p, _ in cnn]), np.log([t for _, t in cnn]), 1)[0]:.2f}"
                  if len(cnn) >= 2 else "-")
        print(f"{name:<15}{slope:>30.2f}{cslope:>12}")


if __name__ == "__main__":
    main()
