"""`genbounds.perez_ortiz` on a digits 64-100-100-10 MLP: phase times, first call, and the
certificate's Monte Carlo beside its floor.

    python benchmarks/bench_perez_ortiz.py [--baseline-rev 99b5a52] [--num-mc 10000]

The protocol: sklearn's digits (1437 training examples), a Flax MLP 64-100-100-10, the prior
learnt on half the training set (each version's default prior training), f_quad, one prior
scale, N Monte-Carlo networks for the certificate (10 000), everything else at its default.

Each version runs in its own interpreter with an empty persistent compilation cache, twice in
a row (``first call`` includes compilation, ``warm`` is the second call), then once more in a
new interpreter on the cache the first one filled (``first call, warm cache``):

- ``current``: this checkout;
- ``baseline``: the source of ``--baseline-rev`` (default: the library before the chunked
  Monte-Carlo counter and the early-stopped prior), extracted with ``git archive``.

Printed per version: the total and the phases (prior, posterior training, certificate) of
perez_ortiz's own timings, the certificate, the first call's XLA compilations (count, and
seconds summed over all compilations, from `jax.monitoring`'s compile events), and, for the
current version, the **floor** of
the certificate phase: the same N forward passes on the bound set with weights drawn before
the clock starts, as one jitted computation (64 networks vmapped per step of a `lax.map`),
and the phase's ratio to it. The machine is shared: the numbers of one run are comparable
with each other, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, time
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
import genbounds
from genbounds.data import load
from genbounds.pacbayes import perez_ortiz, split_data

N = int(sys.argv[1]); floor = sys.argv[2] == "floor"
# compilations (count and seconds) from JAX's monitoring events
secs = {}
def _listen(event, d, **kw):
    n, s = secs.get(event, (0, 0.0)); secs[event] = (n + 1, s + d)
jax.monitoring.register_event_duration_secs_listener(_listen)
BACKEND, TRACE = "/jax/core/compile/backend_compile_duration", "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"

class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(100)(x))
        x = nn.relu(nn.Dense(100)(x))
        return nn.Dense(10)(x)

ds = load("digits", seed=0)
X, y = np.asarray(ds.X_train, np.float32), np.asarray(ds.y_train)
model = MLP()
p0 = model.init(jax.random.key(0), X[:1])
out = {"runs": []}
for r in range(2):
    secs.clear()
    t = time.perf_counter()
    b, q = perez_ortiz(p0, X=X, y=y, apply_fn=model.apply, key=jax.random.key(1),
                       num_mc_samples=N)
    total = time.perf_counter() - t
    T = b.terms
    post_cert = T["seconds_posterior_and_certificate"]
    cert = T.get("seconds_certificate")
    out["runs"].append({"total": total, "prior": T["seconds_prior"],
                        "posterior": None if cert is None else post_cert - cert,
                        "certificate": cert, "posterior_and_certificate": post_cert,
                        "value": b.value, "compilations": secs.get(BACKEND, (0, 0.0))[0],
                        "compile_s": secs.get(BACKEND, (0, 0.0))[1],
                        "trace_lower_s": secs.get(TRACE, (0, 0.0))[1] + secs.get(LOWER, (0, 0.0))[1]})
if floor:
    from jax.flatten_util import ravel_pytree
    s = split_data(X, y, prior_fraction=0.5, seed=0)
    Xb, yb = jnp.asarray(s.X_bound), jnp.asarray(s.y_bound)
    mu, unravel = ravel_pytree(q.mean)
    sd, _ = ravel_pytree(q.std)
    W = mu + sd * jax.random.normal(jax.random.key(3), (N, mu.size), mu.dtype)
    W = jax.block_until_ready(W)

    @jax.jit
    def forward(W):
        one = lambda w: (jnp.argmax(model.apply(unravel(w), Xb), 1) != yb).mean()
        return jax.lax.map(one, W, batch_size=64)

    jax.block_until_ready(forward(W))
    best = 1e9
    for _ in range(3):
        t = time.perf_counter(); jax.block_until_ready(forward(W))
        best = min(best, time.perf_counter() - t)
    out["floor"] = best
print("RESULT" + json.dumps(out))
"""


def run(src: Path, cache: str, num_mc: int, floor: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "GENBOUNDS_JAX_CACHE_DIR": cache}
    cache_parent = str(Path(cache).parent)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    # cwd outside both trees: `python -c` puts the working directory first on sys.path
    p = subprocess.run([sys.executable, "-c", PROBE, str(num_mc), "floor" if floor else "-"],
                       env=env, capture_output=True, text=True, check=False, cwd=cache_parent)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT")]
    if p.returncode or not line:
        raise RuntimeError(f"probe failed ({src}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return json.loads(line[-1][len("RESULT"):])


def fmt(x) -> str:
    return "   -  " if x is None else f"{x:6.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-rev", default="99b5a52",
                    help="git revision of the baseline (default: before the chunked counter)")
    ap.add_argument("--num-mc", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        base.mkdir()
        arch = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_rev, "genbounds"],
                              capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=arch, check=True)
        rows = {}
        for name, src in (("baseline", base), ("current", ROOT)):
            cache = str(Path(tmp) / f"cache-{name}")
            cold = run(src, cache, args.num_mc, floor=name == "current")
            again = run(src, cache, args.num_mc, floor=False)
            rows[name] = (cold, again)
    print(f"perez_ortiz, digits MLP 64-100-100-10, prior on half, f_quad, N = {args.num_mc} "
          f"(seconds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'version':9} {'call':26} {'total':>6} {'prior':>6} {'post.':>6} {'cert.':>6} "
          f"{'certificate':>11}")
    for name, (cold, again) in rows.items():
        for label, r in (("first call, empty cache", cold["runs"][0]),
                         ("warm (second call)", cold["runs"][1]),
                         ("first call, warm cache", again["runs"][0])):
            print(f"{name:9} {label:26} {fmt(r['total'])} {fmt(r['prior'])} "
                  f"{fmt(r['posterior'])} {fmt(r['certificate'])} {r['value']:11.4f}")
    for name, (cold, _) in rows.items():
        r = cold["runs"][0]
        print(f"{name:9} first call, empty cache: {r['compilations']} XLA compilations, "
              f"{r['compile_s']:.2f} s compiling, "
              f"{r['trace_lower_s']:.2f} s tracing and lowering")
    b_warm, c_warm = rows["baseline"][0]["runs"][1], rows["current"][0]["runs"][1]
    print(f"warm total: baseline / current = {b_warm['total'] / c_warm['total']:.2f}x")
    b_pc, c_pc = b_warm["posterior_and_certificate"], c_warm["posterior_and_certificate"]
    print(f"warm posterior + certificate: baseline / current = {b_pc / c_pc:.2f}x")
    floor = rows["current"][0]["floor"]
    print(f"certificate phase (warm) {c_warm['certificate']:.2f} s; floor (the same "
          f"{args.num_mc} forward passes, weights drawn beforehand, one jitted computation) "
          f"{floor:.2f} s: ratio {c_warm['certificate'] / floor:.2f}x")


if __name__ == "__main__":
    main()
