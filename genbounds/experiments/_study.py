"""`genbounds study`: which measure predicts generalisation? A Jiang et al. (2020) study.

Trains a grid of networks over hyperparameter axes, each to a fixed training cross-entropy,
computes every measure and bound for each, and scores each by Kendall's tau with the
generalisation gap and by the granulated coefficient Psi (`kendall_tau`, `granulated_kendall`),
with a bootstrap over networks. Protocol and results: docs/measures/study.md.

Training: the networks whose shapes agree (same depth, width and batch size) train as one
population (`genbounds.train.train_population`: one vmapped program over the networks, sharded
over `jax.devices()`), each with its own learning rate, dropout and weight decay and each
stopped on its own: after every epoch a network whose mean training cross-entropy is <= the
loss target stops (its parameters frozen, its epoch count that epoch); the population stops
when all have, or at the epoch budget. A network trains by the program `genbounds.train.train`
runs for it alone (same initialisation, minibatch order, dropout masks and Adam), so its
parameters are those of training it alone, to float rounding. A record's ``train_seconds`` is
its population's training time divided by the population's size (``population``). Measuring
stays per network.

Built on genbounds.data and genbounds.train (the harness); the bound code never imports this.
Resumable: every population trains with a checkpoint (every 25 epochs) under ``OUT/groups/``,
named by its networks, and each network's measures are written to ``OUT/nets/<id>/``, so a rerun
skips the finished networks and trains only the others of each group (as a population of those
networks: a new one, when some of the group were finished). What a network's record
depends on besides its hyperparameters (the data set, its size, split seed and contents, the
loss target, delta, the protocol version `PROTOCOL`) is written to ``OUT/settings.json`` on the
first run; a rerun into the same directory with other settings is refused, naming each
differing option, and every record carries the key of everything it was computed from
(`net_key`), checked when it is read back. Networks of other grids (``--axis``) coexist in one
directory: their hyperparameters are part of their identity. The directory is locked while a
study runs in it.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genbounds.experiments._common import (
    UserError,
    console,
    data_sha256,
    keep_settings,
    markdown_table,
    prepare_out,
    settings_key,
)
from genbounds.files import DirectoryLock, atomic_write, held_here, save_figure

# The version of what a network's record holds: the training protocol and `measure_network`.
# Raise it when either changes what a record would hold; cached records of another version
# are then refused instead of being mixed with new ones.
PROTOCOL = 3
# The options that name each setting of OUT/settings.json, for the message of a mismatch.
SETTING_FLAGS = {"command": "the command", "protocol": "the study protocol version",
                 "dataset": "--dataset", "n": "--n (500 with --quick)", "seed": "--seed",
                 "data_sha256": "the data set's contents (SHA-256)", "loss_target": "--loss-target",
                 "delta": "--delta"}

# The grids: 2 values per axis, every combination (Jiang et al. use 2-3 values per axis).
DEFAULT_GRID: dict[str, tuple] = {
    "depth": (1, 2),
    "width": (128, 256),
    "lr": (2e-3, 5e-3),
    "batch_size": (32, 128),
    "dropout": (0.0, 0.1),
}
QUICK_GRID: dict[str, tuple] = {"depth": (1, 2), "lr": (3e-3, 1e-2)}
# Values of the axes a grid does not vary.
FIXED: dict[str, Any] = {"depth": 1, "width": 128, "lr": 1e-3, "batch_size": 64, "dropout": 0.0,
                         "weight_decay": 0.0}
QUICK_FIXED: dict[str, Any] = {**FIXED, "width": 32, "batch_size": 32}
AXES = ("depth", "width", "lr", "batch_size", "dropout", "weight_decay")
# The hyperparameters that fix a network's shape and its minibatches: networks that agree on
# them train as one population (lr, dropout and weight decay are per network).
SHAPE_AXES = ("depth", "width", "batch_size")

# name -> (Jiang et al. 2020 equation or "", kind); kind "bound" when the value bounds the error.
_FLATNESS = {
    "pac_bayes_flatness": ("53", "pac_bayes_flatness", "complexity"),
    "pac_bayes_init": ("48", "pac_bayes_flatness", "mu_48"),
    "pac_bayes_orig": ("49", "pac_bayes_flatness", "mu_49"),
    "pac_bayes_mag_flatness": ("61", "magnitude_aware_flatness", "complexity"),
    "pac_bayes_mag_init": ("56", "magnitude_aware_flatness", "mu_56"),
    "pac_bayes_mag_orig": ("57", "magnitude_aware_flatness", "mu_57"),
    "sharpness_flatness": ("52", "worst_case_sharpness", "complexity"),
    "sharpness_init": ("50", "worst_case_sharpness", "mu_50"),
    "sharpness_orig": ("51", "worst_case_sharpness", "mu_51"),
    "sharpness_mag_flatness": ("60", "magnitude_aware_sharpness", "complexity"),
    "sharpness_mag_init": ("58", "magnitude_aware_sharpness", "mu_58"),
    "sharpness_mag_orig": ("59", "magnitude_aware_sharpness", "mu_59"),
}


def parse_axis(text: str) -> tuple[str, tuple]:
    """``"lr=1e-3,3e-3"`` -> ("lr", (0.001, 0.003)); integers stay integers."""
    if "=" not in text:
        raise ValueError(f"--axis must look like NAME=V1,V2 (e.g. lr=1e-3,3e-3), got {text!r}")
    name, _, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if name not in AXES:
        raise ValueError(f"--axis: unknown hyperparameter {name!r}; choose from {list(AXES)}")
    out = []
    for v in values.split(","):
        v = v.strip()
        try:
            out.append(int(v) if name in ("depth", "width", "batch_size") else float(v))
        except ValueError as e:
            raise ValueError(f"--axis {name}: {v!r} is not a number") from e
    if len(out) < 2 or len(set(out)) != len(out):
        raise ValueError(f"--axis {name} needs at least two distinct values, got {values!r}")
    return name, tuple(out)


def grid_configs(grid: Mapping[str, Sequence], fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the other hyperparameters at `fixed`."""
    names = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in names)):
        cfg = dict(fixed)
        cfg.update(zip(names, values, strict=True))
        out.append(cfg)
    return out


def net_key(cfg: Mapping[str, Any], seed: int, settings: Mapping[str, Any]) -> str:
    """The identity of one network's record: the SHA-256 of its hyperparameters, its seed and
    the study's settings (data set, size, split seed, data digest, loss target, delta, protocol
    version). Any change to any of them gives another key."""
    return settings_key({"config": dict(cfg), "seed": seed, "settings": dict(settings)})


def net_id(cfg: Mapping[str, Any], seed: int) -> str:
    """The directory name of a network under ``OUT/nets/``: its hyperparameters and seed."""
    return "_".join(f"{k}{cfg[k]:g}" if isinstance(cfg[k], float) else f"{k}{cfg[k]}"
                    for k in AXES) + f"_seed{seed}"


def _atomic_json(path: Path, payload: Any) -> None:
    atomic_write(path, json.dumps(payload, indent=1).encode())


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def measure_network(result: Any, dataset: Any, *, seed: int, delta: float,
                    search_depth: int = 12) -> dict[str, dict[str, Any]]:
    """Every measure and bound of one trained network: name -> {value, eq, kind, seconds}."""
    import jax

    from genbounds import (
        magnitude_aware_flatness,
        magnitude_aware_sharpness,
        margins,
        norm_measures,
        pac_bayes_flatness,
        report,
        select_margin,
        worst_case_sharpness,
    )

    X, y = dataset.X_train, dataset.y_train
    out: dict[str, dict[str, Any]] = {}
    logits = np.asarray(result.apply_fn(result.params, X))
    t0 = time.perf_counter()
    # Jiang et al.'s margin: the 10th percentile of the training margins, then abs().
    gamma = abs(select_margin(np.asarray(margins(logits, y)), margin_quantile=0.1).margin)
    nm = norm_measures(result.params, reference=result.init_params, margin=gamma, n=len(X),
                       jiang=True, method="exact")
    dt = time.perf_counter() - t0
    for name, b in nm.items():
        eq = b.reference.rsplit("eq. (", 1)[1].rstrip(")") if "eq. (" in b.reference else ""
        out[name] = {"value": _finite(b.complexity), "eq": eq, "kind": "measure",
                     "seconds": dt / len(nm)}

    key = jax.random.key(seed)
    flat = {"pac_bayes_flatness": pac_bayes_flatness,
            "magnitude_aware_flatness": magnitude_aware_flatness,
            "worst_case_sharpness": worst_case_sharpness,
            "magnitude_aware_sharpness": magnitude_aware_sharpness}
    # sigma' and alpha' by plain bisection to the full depth (deviation_tol=None), the
    # protocol the study's recorded figures were measured with (docs/measures/study.md).
    bisection = {"pac_bayes_flatness": {"deviation_tol": None},
                 "magnitude_aware_flatness": {"deviation_tol": None}}
    results = {}
    for fname, fn in flat.items():
        t0 = time.perf_counter()
        results[fname] = (fn(result.params, X=X, y=y, apply_fn=result.apply_fn, key=key,
                             init_params=result.init_params, search_depth=search_depth,
                             **bisection.get(fname, {})),
                          time.perf_counter() - t0)
    for name, (eq, fname, term) in _FLATNESS.items():
        b, dt = results[fname]
        # mu_48 ... mu_59 with Jiang's adjustment sqrt(mu / m), as for every measure
        v = b.complexity if term == "complexity" else b.terms[term + "_adjusted"]
        out[name] = {"value": _finite(v), "eq": eq, "kind": "measure", "seconds": dt}

    rep = report(result.params, X=X, y=y, apply_fn=result.apply_fn,
                 init_params=result.init_params, delta=delta, X_test=dataset.X_test,
                 y_test=dataset.y_test, input_bound=None, key=key)
    for b in rep.bounds:
        out["bound:" + b.name] = {"value": _finite(b.value), "eq": "", "kind": "bound",
                                  "seconds": rep.seconds.get(b.name)}
    # Martin & Mahoney's layer-averaged ESD metrics (genbounds.heavy_tail, default preset)
    for m in rep.measures:
        if m.name in ("ht_alpha", "ht_alpha_weighted", "ht_log_alpha_norm", "ht_stable_rank"):
            out[m.name] = {"value": _finite(m.complexity), "eq": "", "kind": "measure",
                           "seconds": rep.seconds.get(m.name)}
    if "spectral_complexity" not in out:
        sc = next((m for m in rep.measures if m.name == "spectral_complexity"), None)
        if sc is not None:
            out["spectral_complexity"] = {"value": _finite(sc.complexity), "eq": "",
                                          "kind": "measure",
                                          "seconds": rep.seconds.get(sc.name)}
    return out


def _record_path(cfg: Mapping[str, Any], seed: int, root: Path) -> Path:
    return root / "nets" / net_id(cfg, seed) / "record.json"


def _finished_record(cfg: dict[str, Any], *, seed: int, root: Path, max_epochs: int,
                     key: str) -> dict[str, Any] | None:
    """The network's record when it was measured by this study with this budget, else None;
    a record of other settings (another `net_key`) or a corrupt one is refused."""
    rec_path = _record_path(cfg, seed, root)
    if not rec_path.exists():
        return None
    try:
        rec = json.loads(rec_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{rec_path} is corrupt ({e}); delete it to measure that network "
                        "again") from None
    if rec.get("key") != key:
        raise UserError(f"{rec_path} was computed with other settings than this study's "
                        f"(its key {str(rec.get('key'))[:12]!r}, this study's "
                        f"{key[:12]!r}); delete it, or choose another --out")
    if rec.get("config") == cfg and rec.get("max_epochs") == max_epochs:
        return rec
    return None


def shape_groups(configs: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """The indices of `configs` grouped by shape (depth, width, batch size), in order of first
    appearance: the networks of one group train as one population."""
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(tuple(cfg[k] for k in SHAPE_AXES), []).append(i)
    return list(groups.values())


def _train_group(cfgs: Sequence[dict[str, Any]], dataset: Any, *, seed: int, root: Path,
                 loss_target: float, max_epochs: int) -> tuple[list[Any], float]:
    """Trains networks of one shape as one population (`genbounds.train.train_population`),
    checkpointed every 25 epochs under ``OUT/groups/``; returns the results and the seconds."""
    from genbounds.train import train_population

    c0 = cfgs[0]
    ids = [net_id(c, seed) for c in cfgs]
    tag = settings_key({"nets": ids})[:12]
    d = root / "groups" / f"depth{c0['depth']}_width{c0['width']}_batch{c0['batch_size']}_{tag}"
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = train_population(
        {"kind": "mlp", "depth": c0["depth"], "width": c0["width"]}, dataset,
        [{k: c[k] for k in ("lr", "dropout", "weight_decay")} for c in cfgs],
        optimizer="adam", batch_size=c0["batch_size"], max_epochs=max_epochs, stop="loss",
        loss_target=loss_target, seed=seed, checkpoint_dir=d, checkpoint_every=25)
    return results, time.perf_counter() - t0


def _measure(cfg: dict[str, Any], result: Any, dataset: Any, *, seed: int, root: Path,
             max_epochs: int, delta: float, train_seconds: float, population: int,
             progress: Callable[[str], None] | None, key: str) -> dict[str, Any]:
    nid = net_id(cfg, seed)
    rec: dict[str, Any] = {
        "id": nid, "key": key, "config": cfg, "seed": seed, "max_epochs": max_epochs,
        "epochs": int(result.epochs), "reached": bool(result.reached),
        "train_loss": float(result.train_loss), "train_error": 1.0 - float(result.train_acc),
        "test_error": 1.0 - float(result.test_acc),
        # the population's training time divided by its number of networks
        "train_seconds": train_seconds / population, "population": population,
    }
    rec["gap"] = rec["test_error"] - rec["train_error"]
    if progress:
        progress(f"{nid}: {rec['epochs']} epochs, train CE {rec['train_loss']:.4f}, "
                 f"gap {rec['gap']:.3f}; measuring")
    t0 = time.perf_counter()
    rec["measures"] = measure_network(result, dataset, seed=seed, delta=delta)
    rec["measure_seconds"] = time.perf_counter() - t0
    path = _record_path(cfg, seed, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_json(path, rec)
    return rec


def score(records: Sequence[Mapping[str, Any]], axes: Sequence[str], *,
          num_resamples: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """tau and Psi of every measure over the networks that reached the stopping criterion."""
    from genbounds import granulated_kendall, kendall_tau
    from genbounds.measures._kendall import bootstrap_kendall

    nets = [r for r in records if r["reached"]]
    names = sorted({k for r in nets for k in r["measures"]})
    rows = []
    for name in names:
        use = [r for r in nets if r["measures"].get(name, {}).get("value") is not None]
        if len(use) < 3:
            continue
        mu = np.array([r["measures"][name]["value"] for r in use])
        gap = np.array([r["gap"] for r in use])
        hp = {a: [r["config"][a] for r in use] for a in axes}
        hp["seed"] = [r["seed"] for r in use]
        g = granulated_kendall(mu, gap, hp, axes=axes)
        boot = bootstrap_kendall(mu, gap, hp, axes=axes, num_resamples=num_resamples, seed=seed)
        info = next(r["measures"][name] for r in use)

        def ci(v):
            v = v[~np.isnan(v)]
            return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else None

        rows.append({
            "measure": name, "eq": info["eq"], "kind": info["kind"], "num_nets": len(use),
            "tau": kendall_tau(mu, gap), "tau_ci95": ci(boot["tau"]),
            "tau_sd": float(np.nanstd(boot["tau"], ddof=1)),
            "psi": g.psi, "psi_ci95": ci(boot["psi"]), "psi_sd": float(np.nanstd(boot["psi"],
                                                                                 ddof=1)),
            "psi_per_axis": g.per_axis,
        })
    rows.sort(key=lambda r: -r["tau"])
    return rows


def _signed(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"


def _interval(c: Any) -> str:
    return "-" if c is None else f"[{c[0]:+.2f}, {c[1]:+.2f}]"


def score_cells(row: Mapping[str, Any], axes: Sequence[str]) -> list[str]:
    """One measure's cells: name, equation, tau and its CI, Psi and its CI, Psi per axis."""
    return [row["measure"], row["eq"], _signed(row["tau"]), _interval(row["tau_ci95"]),
            _signed(row["psi"]), _interval(row["psi_ci95"]),
            *(_signed(row["psi_per_axis"].get(a)) for a in axes)]


def table_markdown(rows: Sequence[Mapping[str, Any]], axes: Sequence[str]) -> str:
    """The scores as a markdown table (OUT/table.md), best tau first."""
    head = ["measure", "eq.", "tau", "tau 95% CI", "Psi", "Psi 95% CI", *axes]
    return markdown_table(head, [score_cells(r, axes) for r in rows]) + "\n"


def plot(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rows)[::-1]  # best tau on top
    yy = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.5))
    for off, key, color, label in ((0.18, "tau", "C0", "Kendall tau"),
                                   (-0.18, "psi", "C1", "granulated Psi")):
        v = np.array([r[key] for r in rows], dtype=float)
        lo = np.array([r[f"{key}_ci95"][0] if r[f"{key}_ci95"] else np.nan for r in rows])
        hi = np.array([r[f"{key}_ci95"][1] if r[f"{key}_ci95"] else np.nan for r in rows])
        err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
        ax.barh(yy + off, v, height=0.34, color=color, label=label, xerr=err,
                error_kw={"lw": 0.8, "capsize": 1.5})
    ax.set_yticks(yy)
    ax.set_yticklabels([r["measure"] + (f" ({r['eq']})" if r["eq"] else "") for r in rows],
                       fontsize=7)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("rank correlation with the generalisation gap (bars: bootstrap 95% CI)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def run_study(
    out: str | os.PathLike,
    *,
    dataset: str = "mnist1d",
    n: int | None = 1000,
    grid: Mapping[str, Sequence] | None = None,
    quick: bool = False,
    seed: int = 0,
    loss_target: float = 0.01,
    max_epochs: int = 500,
    delta: float = 0.05,
    num_resamples: int = 200,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Trains the grid, measures every network, scores every measure; writes OUT/results.json,
    OUT/table.md and OUT/study.png and returns the results.

    Resumes the networks already measured in `out` (see the module's docstring). Raises
    `UserError` (a ValueError) when `out` holds a study with other settings, naming them, and
    `genbounds.files.DirectoryBusy` when another run holds the directory.
    """
    import contextlib

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext() if held_here(root) else DirectoryLock(root):
        return _run_study(root, dataset=dataset, n=n, grid=grid, quick=quick, seed=seed,
                          loss_target=loss_target, max_epochs=max_epochs, delta=delta,
                          num_resamples=num_resamples, progress=progress)


def study_settings(dataset: str, ds: Any, *, n: int | None, seed: int, loss_target: float,
                   delta: float) -> dict[str, Any]:
    """Everything besides a network's hyperparameters that its record depends on."""
    return {"command": "study", "protocol": PROTOCOL, "dataset": dataset, "n": n, "seed": seed,
            "data_sha256": data_sha256(ds), "loss_target": float(loss_target),
            "delta": float(delta)}


def _run_study(root: Path, *, dataset: str, n: int | None, grid: Mapping[str, Sequence] | None,
               quick: bool, seed: int, loss_target: float, max_epochs: int, delta: float,
               num_resamples: int, progress: Callable[[str], None] | None) -> dict[str, Any]:
    from genbounds.data import load

    start = time.perf_counter()
    if grid is None:
        grid = QUICK_GRID if quick else DEFAULT_GRID
    fixed = QUICK_FIXED if quick else FIXED
    if quick and n == 1000:
        n = 500
    for k, v in grid.items():
        if k not in AXES:
            raise ValueError(f"grid: unknown hyperparameter {k!r}; choose from {list(AXES)}")
        if len(v) < 2:
            raise ValueError(f"grid[{k!r}] needs at least two values, got {v!r}")
    axes = list(grid)
    ds = load(dataset, seed=seed, n=n)
    settings = study_settings(dataset, ds, n=n, seed=seed, loss_target=loss_target, delta=delta)
    if not (root / "settings.json").exists() and any(root.glob("nets/*/record.json")):
        raise UserError(f"--out {str(root)!r} holds networks of a study written by an older "
                        "genbounds, without the settings they were computed with; choose "
                        "another --out (or delete its nets/ folder)")
    keep_settings(root, settings, SETTING_FLAGS)
    configs = grid_configs(grid, fixed)
    keys = [net_key(cfg, seed, settings) for cfg in configs]
    by_index: dict[int, dict[str, Any]] = {}
    for i, cfg in enumerate(configs):
        rec = _finished_record(cfg, seed=seed, root=root, max_epochs=max_epochs, key=keys[i])
        if rec is not None:
            by_index[i] = rec
    for group in shape_groups(configs):
        todo = [i for i in group if i not in by_index]
        if not todo:
            continue
        if progress:
            progress(f"training {len(todo)} nets as one population: "
                     + ", ".join(net_id(configs[i], seed) for i in todo))
        results, seconds = _train_group([configs[i] for i in todo], ds, seed=seed, root=root,
                                        loss_target=loss_target, max_epochs=max_epochs)
        for i, result in zip(todo, results, strict=True):
            if progress:
                progress(f"[{len(by_index) + 1}/{len(configs)}] {net_id(configs[i], seed)}")
            by_index[i] = _measure(configs[i], result, ds, seed=seed, root=root,
                                   max_epochs=max_epochs, delta=delta, train_seconds=seconds,
                                   population=len(todo), progress=progress, key=keys[i])
    records = [by_index[i] for i in range(len(configs))]
    rows = score(records, axes, num_resamples=num_resamples, seed=seed)
    excluded = [r["id"] for r in records if not r["reached"]]
    payload = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "protocol": {
            "dataset": dataset, "n_train": int(len(ds.X_train)), "n_test": int(len(ds.X_test)),
            "grid": {k: list(v) for k, v in grid.items()}, "fixed": dict(fixed),
            "optimizer": "adam", "model": "mlp (ReLU)", "seed": seed,
            "training": "the nets of one shape (" + ", ".join(SHAPE_AXES) + ") as one "
                        "population, each stopped on its own; train_seconds is the "
                        "population's time divided by its size",
            "stopping": f"mean training cross-entropy <= {loss_target} (Jiang et al. 2020), "
                        f"at most {max_epochs} epochs",
            "gap": "test error - train error (0-1)", "delta": delta,
            "bootstrap": f"{num_resamples} resamples of the networks; pairs of copies excluded",
            "excluded_not_reached": excluded, "version": PROTOCOL,
            "data_sha256": settings["data_sha256"],
        },
        "networks": records,
        "scores": rows,
        "seconds": time.perf_counter() - start,
    }
    _atomic_json(root / "results.json", payload)
    atomic_write(root / "table.md", table_markdown(rows, axes).encode())
    if rows:
        plot(rows, root / "study.png",
             f"{len(records) - len(excluded)} nets ({dataset}, n = {len(ds.X_train)}), "
             f"axes: {', '.join(axes)}")
    return payload


# ----------------------------------------------------------------------------------------------
# The command line (registered in `genbounds.experiments.cli`).


def add_study_arguments(p: Any) -> None:
    p.add_argument("--out", default="genbounds-study",
                   help="directory for results.json, table.md, study.png and the nets' "
                        "checkpoints (a rerun resumes; default ./genbounds-study)")
    p.add_argument("--quick", action="store_true",
                   help="a small grid (depth x lr, 4 nets of width 32 on 500 examples; < 3 min)")
    p.add_argument("--dataset", default="mnist1d", choices=("mnist1d", "digits"),
                   help="training data (default mnist1d, generated locally)")
    p.add_argument("--n", type=int, default=1000,
                   help="training examples, a random subset (default 1000; 500 with --quick)")
    p.add_argument("--axis", action="append", default=None, metavar="NAME=V1,V2",
                   help="a grid axis, repeatable (replaces the default grid): depth, width, lr, "
                        "batch_size, dropout, weight_decay")
    p.add_argument("--loss-target", type=float, default=0.01,
                   help="stop when the training cross-entropy is <= this (default 0.01)")
    p.add_argument("--max-epochs", type=int, default=500,
                   help="nets not at the target by then are recorded and left out of tau")
    p.add_argument("--resamples", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--delta", type=float, default=0.05, help="confidence of the bounds")


def cmd_study(args: Any) -> int:
    from rich.table import Table

    con = console()
    grid = None
    if args.axis:
        grid = dict(parse_axis(a) for a in args.axis)
    if args.n < 10:
        raise UserError(f"--n must be an integer >= 10, got {args.n}")
    if not (math.isfinite(args.loss_target) and args.loss_target > 0):
        raise UserError(f"--loss-target must be a finite number > 0, got {args.loss_target}")
    prepare_out(args.out)
    res = run_study(args.out, dataset=args.dataset, n=args.n, grid=grid, quick=args.quick,
                    seed=args.seed, loss_target=args.loss_target, max_epochs=args.max_epochs,
                    delta=args.delta, num_resamples=args.resamples,
                    progress=lambda s: con.print(s, highlight=False))
    axes = list(res["protocol"]["grid"])
    table = Table(title=f"genbounds study: Kendall tau and Psi with the generalisation gap "
                        f"({res['protocol']['dataset']})")
    for col in ("measure", "eq.", "tau", "95% CI", "Psi", "95% CI", *axes):
        table.add_column(col, justify="right")
    for r in res["scores"]:
        table.add_row(*score_cells(r, axes))
    con.print(table)
    ex = res["protocol"]["excluded_not_reached"]
    nets = res["networks"]
    con.print(f"{len(nets) - len(ex)} of {len(nets)} nets reached the stopping criterion "
              f"({res['protocol']['stopping']}); gaps "
              f"{min(r['gap'] for r in nets):.3f} to {max(r['gap'] for r in nets):.3f}. "
              f"Took {res['seconds']:.0f} s.")
    out = Path(args.out)
    con.print(f"Wrote {out / 'results.json'}, {out / 'table.md'} and {out / 'study.png'}")
    return 0
