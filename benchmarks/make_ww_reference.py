"""Writes tests/data/weightwatcher_reference.json: WeightWatcher 0.7.7's per-layer outputs on
small fixed-seed weights, for the exact-agreement test of ``heavy_tail(preset="weightwatcher")``
(tests/test_heavy_tail_ww.py), which runs without WeightWatcher installed.

Run with a Python that has ``torch`` and ``weightwatcher==0.7.7`` (not genbounds dependencies):

    python -m venv /tmp/wwvenv && /tmp/wwvenv/bin/pip install torch weightwatcher==0.7.7
    /tmp/wwvenv/bin/python benchmarks/make_ww_reference.py

The weights are regenerated from the recipe stored in the file (``numpy.random.default_rng``
streams; a checksum per array guards against a change of stream); Dense kernels are Flax
``(in, out)``, conv kernels HWIO, copied into torch layers as ``W.T`` and
``K.transpose(3, 2, 0, 1)``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "weightwatcher_reference.json"

# name -> list of (layer name, Flax shape, distribution, seed); scale 1/sqrt(fan-in).
MODELS = {
    "mlp": [("fc0", (64, 48), "normal", 1), ("fc1", (48, 32), "normal", 2),
            ("fc2", (32, 10), "normal", 3)],
    "heavy": [("fc0", (120, 100), "t2.5", 4), ("fc1", (100, 9), "t2.5", 5),
              ("fc2", (40, 6), "normal", 6)],
    "cnn": [("conv0", (3, 3, 3, 16), "normal", 7), ("conv1", (3, 3, 16, 8), "normal", 8),
            ("conv2", (2, 2, 32, 16), "normal", 9), ("conv3", (5, 5, 1, 4), "normal", 10),
            ("conv4", (2, 2, 8, 24), "t2.5", 11), ("fc", (40, 12), "normal", 12)],
}

COLUMNS = ("N", "M", "rf", "num_evals", "alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes",
           "lambda_max", "sv_max", "sv_min", "rank_loss", "weak_rank_loss", "norm", "log_norm",
           "spectral_norm", "log_spectral_norm", "alpha_weighted", "log_alpha_norm",
           "stable_rank", "matrix_rank", "entropy", "status", "warning")
FULL_COLUMNS = ("sigma_mp", "num_spikes", "mp_softrank", "bulk_max", "bulk_min",
                "max_rand_eval", "rand_num_spikes", "num_traps", "rand_sigma_mp",
                "rand_mp_softrank", "rand_bulk_max", "rand_bulk_min", "rand_distance",
                "ww_softrank", "ww_maxdist")
FULL_SEED = 0


def make_weight(shape, dist, seed):
    """The recipe the test reuses: float32 draws scaled by 1/sqrt(fan-in)."""
    rng = np.random.default_rng(seed)
    fan_in = int(np.prod(shape[:-1]))
    if dist == "normal":
        w = rng.standard_normal(shape)
    else:
        w = rng.standard_t(float(dist[1:]), size=shape)
    return (w / np.sqrt(fan_in)).astype(np.float32)


def torch_model(layers):
    import torch

    mods = []
    for _, shape, dist, seed in layers:
        w = make_weight(shape, dist, seed)
        if len(shape) == 2:
            m = torch.nn.Linear(shape[0], shape[1], bias=False)
            m.weight.data = torch.from_numpy(np.ascontiguousarray(w.T))
        else:
            m = torch.nn.Conv2d(shape[2], shape[3], shape[:2], bias=False)
            m.weight.data = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        mods.append(m)
    return torch.nn.Sequential(*mods)


def plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v)
    return v if isinstance(v, (str, int, bool)) or v is None else str(v)


def run(layers, full):
    import weightwatcher as ww

    watcher = ww.WeightWatcher(model=torch_model(layers))
    if full:
        np.random.seed(FULL_SEED)
        details = watcher.analyze(mp_fit=True, randomize=True)
    else:
        details = watcher.analyze()
    names = [name for name, *_ in layers]
    rows = []
    for _, r in details.iterrows():
        cols = COLUMNS + (FULL_COLUMNS if full else ())
        rows.append({"layer": names[int(r["layer_id"]) - 1],
                     **{c: plain(r[c]) for c in cols if c in r}})
    return rows, {k: plain(v) for k, v in watcher.get_summary(details).items()}


def main() -> int:
    import weightwatcher as ww

    payload = {"weightwatcher_version": ww.__version__, "full_seed": FULL_SEED,
               "note": "written by benchmarks/make_ww_reference.py", "models": {}}
    for name, layers in MODELS.items():
        default_rows, default_summary = run(layers, full=False)
        full_rows, full_summary = run(layers, full=True)
        payload["models"][name] = {
            "layers": [{"name": n, "shape": list(s), "dist": d, "seed": sd,
                        "checksum": float(np.sum(make_weight(s, d, sd).astype(np.float64)))}
                       for n, s, d, sd in layers],
            "default": default_rows, "default_summary": default_summary,
            "full": full_rows, "full_summary": full_summary}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
