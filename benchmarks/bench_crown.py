"""CROWN-certified l2 radii against PGD distances and the Lipschitz radius, on a small linen
ResNet and an nnx CNN (both with BatchNorm) trained normally on digits.

    python benchmarks/bench_crown.py [--n 100] [--epochs 20] [--no-baseline] [--quick]
                                     [--robustness-only] [--pooled]

For each network: test accuracy; the median over test examples of (a) the smallest radius at
which PGD (l2, 40 steps, 2 restarts, inputs kept in [0, 1]) finds an adversarial example, on a
geometric grid of radii (0 if misclassified; an upper bound on the minimal adversarial
distance), (b) the CROWN-certified radius (`genbounds.verify.crown_radius`, a lower bound, with
its bracketing search), (c) the same in float64 (``dtype=np.float64``: the speed baseline of the
float32 intervals with their rounding enclosed) and with the previous search in float64
(``search="bisection"``, 16 evaluations; skipped with --no-baseline), and (not with --quick)
with CROWN passes for unstable neurons only, with cheaper pre-activation intervals (forward
linear bounds, interval propagation) and alpha-CROWN, (d) the Lipschitz-certified radius (`genbounds.certified_radius`,
the tightness baseline); the ratios (b)/(a) (target >= 1/5) and (b)/(d); the wall time of each,
measured in the same run (x64 on), with the machine's load average; the
soundness check that no example has a certified radius above its PGD distance; and the wall
time of `genbounds.robustness` (PGD, FGSM, Lipschitz and CROWN certificates on 11 radii from 0
to 1; target under 20 s): its first and second call with the CROWN column decided on the grid
(the default) and, as the baseline in the same run, with each example's CROWN radius searched
(``propagation_search="bracket"``, the previous behaviour). The PGD distance is also refined per
example by bisection below the grid radius (`pgd_refined`): the grid's spacing (a factor 1.26)
overstates the distance PGD finds by up to 26%. ``--pooled``: the same measurements (as with
--quick) on a LeNet-style nnx CNN with 2x2 max pooling, whose pools CROWN relaxes
(`genbounds/verify/_pooling.py`).
"""

from __future__ import annotations

import argparse
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import genbounds
from genbounds.data import load
from genbounds.verify import crown_radius


class Block(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        bn = lambda: nn.BatchNorm(use_running_average=not train)  # noqa: E731
        h = nn.relu(bn()(nn.Conv(self.features, (3, 3), strides=self.strides,
                                 use_bias=False)(x)))
        h = bn()(nn.Conv(self.features, (3, 3), use_bias=False)(h))
        if x.shape[-1] != self.features or self.strides != 1:
            x = bn()(nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x))
        return nn.relu(x + h)


class ResNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(
            nn.Conv(8, (3, 3), use_bias=False)(x)))
        x = Block(16, strides=2)(x, train)
        x = Block(16)(x, train)
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


class NnxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), strides=2, rngs=rngs)
        self.head = nnx.Linear(32 * 16, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x)))
        x = nnx.relu(self.conv2(x))
        return self.head(x.reshape((x.shape[0], -1)))


class NnxPoolCNN(nnx.Module):
    """A LeNet-style CNN: convolutions, ReLU and 2x2 max pooling (--pooled)."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), rngs=rngs)
        self.head = nnx.Linear(32 * 4, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(nnx.relu(self.conv(x)), (2, 2), strides=(2, 2))
        x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))
        return self.head(x.reshape((x.shape[0], -1)))


def batches(n, size, rng):
    idx = rng.permutation(n)
    return [idx[i:i + size] for i in range(0, n, size)]


def train_resnet(ds, epochs):
    model = ResNet()
    X, y = jnp.asarray(ds.X_train), jnp.asarray(ds.y_train)
    v = model.init(jax.random.key(0), X[:2])
    params, stats = v["params"], v["batch_stats"]
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, stats, state, xb, yb):
        def loss(p):
            out, upd = model.apply({"params": p, "batch_stats": stats}, xb, True,
                                   mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(out, yb).mean(), upd
        (_, upd), g = jax.value_and_grad(loss, has_aux=True)(params)
        u, state = opt.update(g, state)
        return optax.apply_updates(params, u), upd["batch_stats"], state

    rng = np.random.default_rng(0)
    for _ in range(epochs):
        for b in batches(len(y), 64, rng):
            params, stats, state = step(params, stats, state, X[b], y[b])
    variables = {"params": params, "batch_stats": stats}
    return variables, lambda v, x: model.apply(v, x)


def train_nnx(ds, epochs, cls=None):
    model = (cls or NnxCNN)(nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    X, y = jnp.asarray(ds.X_train), jnp.asarray(ds.y_train)

    @nnx.jit
    def step(model, opt, xb, yb):
        def loss(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()
        g = nnx.grad(loss)(model)
        opt.update(model, g)

    model.train()
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        for b in batches(len(y), 64, rng):
            step(model, opt, X[b], y[b])
    model.eval()
    return model, lambda m, x: m(x)


def pgd_distance(params, apply_fn, X, y, grid):
    """Per example: the smallest grid radius where PGD succeeds (inf if none; 0 if wrong)."""
    pred = np.argmax(np.asarray(apply_fn(params, X)), 1)
    dist = np.where(pred == y, np.inf, 0.0)
    for e in grid:
        r = genbounds.adversarial.pgd(params, X=X, y=y, apply_fn=apply_fn, eps=float(e),
                                      norm="l2", steps=40, restarts=2, box=(0.0, 1.0))
        dist = np.where(np.isinf(dist) & ~np.asarray(r.robust), e, dist)
    return dist


def pgd_refined(params, apply_fn, X, y, grid, dist, rounds=6):
    """Per example: the grid's PGD distance narrowed by bisection between the grid radius
    below it and the distance of the nearest adversarial example found (``rounds`` rounds of
    PGD with 100 steps and 4 restarts; each success keeps the distance of the point found,
    which is at most its radius). Still an upper bound on the minimal adversarial distance."""
    out = dist.copy()
    for i in np.flatnonzero(np.isfinite(dist) & (dist > 0)):
        xi, yi = X[i:i + 1], y[i:i + 1]
        k = int(np.searchsorted(grid, dist[i]))
        lo, hi = (float(grid[k - 1]) if k > 0 else 0.0), float(dist[i])
        for _ in range(rounds):
            mid = (lo + hi) / 2
            r = genbounds.adversarial.pgd(params, X=xi, y=yi, apply_fn=apply_fn, eps=mid,
                                          norm="l2", steps=100, restarts=4, box=(0.0, 1.0))
            if r.robust[0]:
                lo = mid
            else:
                hi = min(mid, float(np.linalg.norm(np.asarray(r.x_adv[0], np.float64)
                                                   - np.asarray(xi[0], np.float64))))
        out[i] = hi
    return out


def evaluate(name, params, apply_fn, X, y, baseline=True, quick=False):
    acc = float(np.mean(np.argmax(np.asarray(apply_fn(params, X)), 1) == y))
    grid = np.geomspace(0.02, 4.0, 24)
    t0 = time.perf_counter()
    d_grid = pgd_distance(params, apply_fn, X, y, grid)
    t_pgd = time.perf_counter() - t0
    t0 = time.perf_counter()
    d_pgd = pgd_refined(params, apply_fn, X, y, grid, d_grid)
    t_ref = time.perf_counter() - t0
    out = {}
    for label, fn in (
        ("lipschitz", lambda: genbounds.certified_radius(params, X=X, y=y, apply_fn=apply_fn,
                                                         norm="l2")),
        ("crown", lambda: crown_radius(params, X=X, y=y, apply_fn=apply_fn, norm="l2")),
        ("crown (float64)", lambda: crown_radius(params, X=X, y=y, apply_fn=apply_fn,
                                                 norm="l2", dtype=np.float64)),
        *((("crown (bisection, previous)", lambda: crown_radius(
            params, X=X, y=y, apply_fn=apply_fn, norm="l2", search="bisection",
            search_steps=16, dtype=np.float64)),) if baseline else ()),
    ) + (() if quick else (
        ("crown (unstable only)", lambda: crown_radius(
            params, X=X, y=y, apply_fn=apply_fn, norm="l2", unstable_only=True)),
        ("alpha-crown", lambda: crown_radius(
            params, X=X, y=y, apply_fn=apply_fn, norm="l2", method="alpha-crown", steps=20)),
        ("crown (forward intermediates)", lambda: crown_radius(
            params, X=X, y=y, apply_fn=apply_fn, norm="l2", intermediate="forward")),
        ("crown (ibp intermediates)", lambda: crown_radius(
            params, X=X, y=y, apply_fn=apply_fn, norm="l2", intermediate="ibp")),
        ("alpha-crown (forward)", lambda: crown_radius(
            params, X=X, y=y, apply_fn=apply_fn, norm="l2", method="alpha-crown",
            intermediate="forward", steps=20)),
    )):
        t0 = time.perf_counter()
        r = fn()
        out[label] = (r.radius, time.perf_counter() - t0)
    t_rob, curves = {}, {}
    for label, search in (("first call", "grid"), ("second call", "grid"),
                          ("previous search (bracket)", "bracket")):
        t0 = time.perf_counter()
        curves[label] = genbounds.robustness(
            params, apply_fn=apply_fn, X=X, y=y, eps=np.linspace(0, 1, 11), norm="l2",
            steps=40, restarts=2, box=(0.0, 1.0), propagation_search=search)
        t_rob[label] = time.perf_counter() - t0
    med_pgd = float(np.median(d_pgd))
    print(f"\n== {name}: test accuracy {acc:.3f} on {len(y)} test examples "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"PGD distance on the grid (upper bound): median {np.median(d_grid):.4f}  "
          f"[{t_pgd:.1f} s, {len(grid)} radii]; refined by bisection (100 steps, 4 restarts): "
          f"median {med_pgd:.4f} [{t_ref:.1f} s]; ratios to the grid's: median "
          f"{np.median(d_pgd[d_grid > 0] / d_grid[d_grid > 0]):.3f}")
    c_med = np.median(out["crown"][0])
    print(f"CROWN / PGD median radius: 1/{np.median(d_grid) / c_med:.2f} against the grid's "
          f"PGD distance, 1/{med_pgd / c_med:.2f} against the refined one (target >= 1/5)")
    for label, (r, t) in out.items():
        viol = int(np.sum(r > d_pgd))
        print(f"{label:>29}: median radius {np.median(r):.4f}, ratio to PGD "
              f"1/{med_pgd / max(np.median(r), 1e-300):.1f}, violations {viol}  [{t:.1f} s]")
    c, lip = np.median(out["crown"][0]), np.median(out["lipschitz"][0])
    print(f"CROWN / Lipschitz median radius: {c / max(lip, 1e-300):.1f}x; "
          f"CROWN / PGD = {c / med_pgd:.3f} (target >= 0.2)")
    print(f"CROWN time: {out['crown'][1]:.1f} s against {out['crown (float64)'][1]:.1f} s "
          f"in float64 with the same search (ratio "
          f"{out['crown (float64)'][1] / out['crown'][1]:.1f}x; radii ratio median "
          f"{np.median(out['crown'][0] / np.maximum(out['crown (float64)'][0], 1e-300)):.6f})")
    if baseline:
        print(f"CROWN time: {out['crown'][1]:.1f} s against "
              f"{out['crown (bisection, previous)'][1]:.1f} s with the previous search in "
              f"float64 (ratio {out['crown (bisection, previous)'][1] / out['crown'][1]:.1f}x)")
    for label, t in t_rob.items():
        print(f"genbounds.robustness (11 radii, PGD + FGSM + Lipschitz + CROWN), {label}: "
              f"{t:.1f} s (target < 20 s)")
    base = t_rob["previous search (bracket)"]
    same = all(np.array_equal(curves[k].propagated_accuracy,
                              curves["previous search (bracket)"].propagated_accuracy)
               for k in curves)
    print(f"robustness, previous search / grid search (second call): "
          f"{base / t_rob['second call']:.1f}x; CROWN columns equal: {same} "
          f"(load average {os.getloadavg()[0]:.1f})")
    for label in ("second call", "previous search (bracket)"):
        print(f"  CROWN-certified accuracy, {label}: "
              f"{np.round(curves[label].propagated_accuracy, 2).tolist()}")


def main() -> None:
    jax.config.update("jax_enable_x64", True)  # the bounds are computed in float64
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--no-baseline", dest="baseline", action="store_false")
    ap.add_argument("--quick", action="store_true",
                    help="only CROWN (float32 and float64), Lipschitz, PGD and robustness")
    ap.add_argument("--robustness-only", action="store_true",
                    help="only `robustness`, its first call in this process (tracing and "
                         "every compilation of the attacks and bounds included)")
    ap.add_argument("--pooled", action="store_true",
                    help="only a LeNet-style nnx CNN with max pooling (CROWN through the "
                         "pools), with --quick's measurements")
    args = ap.parse_args()
    ds = load("digits", seed=0, flatten=False)
    X = jnp.asarray(ds.X_test[:args.n], jnp.float32)
    y = np.asarray(ds.y_test[:args.n])
    if args.pooled:
        t0 = time.perf_counter()
        m, g = train_nnx(ds, args.epochs, NnxPoolCNN)
        print(f"trained the pooled CNN in {time.perf_counter() - t0:.1f} s")
        evaluate("nnx CNN (2x2 max pooling)", m, g, X, y, baseline=False, quick=True)
        return
    if args.robustness_only:
        for name, (params, fn) in (("linen ResNet", train_resnet(ds, args.epochs)),
                                   ("nnx CNN", train_nnx(ds, args.epochs))):
            t0 = time.perf_counter()
            genbounds.robustness(params, apply_fn=fn, X=X, y=y, eps=np.linspace(0, 1, 11),
                                 norm="l2", steps=40, restarts=2, box=(0.0, 1.0))
            print(f"{name}: genbounds.robustness, first call in this process: "
                  f"{time.perf_counter() - t0:.1f} s (target < 20 s; load average "
                  f"{os.getloadavg()[0]:.1f})")
        return
    t0 = time.perf_counter()
    v, f = train_resnet(ds, args.epochs)
    print(f"trained the ResNet in {time.perf_counter() - t0:.1f} s")
    evaluate("linen ResNet (BatchNorm, 2 residual blocks)", v, f, X, y, args.baseline,
             args.quick)
    t0 = time.perf_counter()
    m, g = train_nnx(ds, args.epochs)
    print(f"trained the nnx CNN in {time.perf_counter() - t0:.1f} s")
    evaluate("nnx CNN (BatchNorm)", m, g, X, y, args.baseline, args.quick)


if __name__ == "__main__":
    main()
