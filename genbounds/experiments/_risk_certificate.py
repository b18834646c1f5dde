"""The risk-certificate experiment: data-dependent prior, PAC-Bayes training, certificate.

`reproduce_risk_certificate` is the core of ``genbounds reproduce risk-certificate``: the CLI
only parses its options and calls it. It follows Pérez-Ortiz, Rivasplata, Shawe-Taylor &
Szepesvári (JMLR 2021, arXiv:2007.12911) on the harness's datasets (`genbounds.data.load`):

* ``digits``: sklearn's 8x8 digits, 10 classes, 1437/360 split; MLP 64-100-10.
* ``digits-binary``: the same with labels digit < 5 vs >= 5 (Dziugaite & Roy's mapping).
* ``mnist1d``: MNIST-1D generated locally by `mnist1d.data.make_dataset` (never downloaded),
  40,000 sequences (32,000 train / 8,000 test); a 1-D CNN (`genbounds.train.CNN` with a
  window of 5 and stride 2, three convolutions of 32 channels).
* ``synthetic``: the harness's teacher task, 10 classes, 10,000/5,000; MLP 784-256-10.
* ``mnist``: real MNIST when the IDX files are in the harness cache (``download=True`` to
  fetch them); the CNN of `genbounds.train` (two strided convolutions, 32 and 64 channels).

Protocol: half of the training set learns the prior mean by ERM (SGD with momentum, cross-
entropy); posteriors for a small grid of prior scales are trained by f_quad on the whole
training set; each is certified on the other half at delta/K, delta'/K (K scales) and the
smallest certificate is kept (`genbounds.perez_ortiz`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genbounds import perez_ortiz
from genbounds.experiments._common import load_variant, markdown_table, write_record
from genbounds.train import CNN, MLP

# The paper's best MNIST rows as quoted in the project's issue tracker (learnt prior on half the
# data, f_quad): NOT verified against the PDF (the search corpus did not hold the tables).
PAPER_MNIST = {
    "cnn": {"certificate": 0.016, "stochastic_test_error": 0.013},
    "mlp": {"certificate": 0.03},
    "status": "approximate figures, not verified against the paper's tables",
}

SETTINGS: dict[str, dict[str, Any]] = {
    "digits": dict(
        model="mlp", hidden=(100,), prior_epochs=100, prior_lr=0.05, epochs=50, lr=0.005,
        batch_size=32, prior_stds=(0.01, 0.03, 0.1), num_mc_samples=10_000, mc_subset=None,
        test_mc_samples=2_000, test_mc_subset=None, prior_fraction=0.5, objective="quad",
    ),
    "digits-binary": dict(
        model="mlp", hidden=(100,), prior_epochs=100, prior_lr=0.05, epochs=50, lr=0.005,
        batch_size=32, prior_stds=(0.01, 0.03, 0.1), num_mc_samples=10_000, mc_subset=None,
        test_mc_samples=2_000, test_mc_subset=None, prior_fraction=0.5, objective="quad",
    ),
    "mnist1d": dict(
        model="cnn1d", hidden=(32, 32, 32), prior_epochs=30, prior_lr=0.02, epochs=5,
        lr=0.002, batch_size=128, prior_stds=(0.01, 0.03), num_mc_samples=4_000,
        mc_subset=1_000, test_mc_samples=200, test_mc_subset=1_000, prior_fraction=0.5,
        objective="quad",
    ),
    "synthetic": dict(
        model="mlp", hidden=(256,), prior_epochs=30, prior_lr=0.01, epochs=20, lr=0.002,
        batch_size=64, prior_stds=(0.01, 0.03), num_mc_samples=5_000, mc_subset=1_000,
        test_mc_samples=500, test_mc_subset=1_000, prior_fraction=0.5, objective="quad",
    ),
    "mnist": dict(
        model="cnn", hidden=(32, 64), prior_epochs=20, prior_lr=0.01, epochs=10, lr=0.002,
        batch_size=128, prior_stds=(0.01, 0.03), num_mc_samples=10_000, mc_subset=1_000,
        test_mc_samples=1_000, test_mc_subset=1_000, prior_fraction=0.5, objective="quad",
    ),
}

DATASETS = tuple(SETTINGS)


# `genbounds.data.load` options of each data set.
DATA: dict[str, tuple[str, dict[str, Any]]] = {
    "digits": ("digits", {}),
    "digits-binary": ("digits", {"binary": True}),
    "mnist1d": ("mnist1d", {"flatten": False,
                            "mnist1d_args": {"num_samples": 40_000, "train_split": 0.8}}),
    "synthetic": ("synthetic", {"n": 10_000, "n_test": 5_000}),
    "mnist": ("mnist", {"flatten": False}),
}


def _model(cfg: dict[str, Any], num_classes: int) -> nn.Module:
    """The experiment's network: an MLP, a 2-D CNN, or a 1-D CNN (window 5, stride 2)."""
    features = tuple(cfg["hidden"])
    if cfg["model"] == "mlp":
        return MLP(features=features, num_classes=num_classes)
    if cfg["model"] == "cnn1d":
        return CNN(features=features, num_classes=num_classes, kernel_size=(5,), strides=2)
    return CNN(features=features, num_classes=num_classes)


def reproduce_risk_certificate(
    dataset: str = "digits",
    out: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    verbose: bool = True,
    download: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Runs the protocol on one dataset; writes ``out/results.json`` and ``out/summary.md``.

    Args:
      dataset: one of ``DATASETS`` (``"digits"`` by default).
      out: output directory, or None to write nothing.
      seed: seed of the data split, the prior/bound split, the initialisation and the training.
      verbose: print progress and the summary table.
      download: for ``"mnist"``, allow the harness to download the IDX files.
      **overrides: replace entries of ``SETTINGS[dataset]``.

    Returns:
      The record written to results.json: sizes, settings, the certificate (a bound on the
      stochastic net's expected 0-1 error) and its terms, the measured test errors of the
      stochastic net, of the posterior mean and of the prior net, the KL, timings.
    """
    if dataset not in SETTINGS:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}; got {dataset!r}")
    cfg = {**SETTINGS[dataset]}
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update(overrides)
    t_all = time.perf_counter()
    ds = load_variant(DATA, dataset, seed=seed, download=download)
    Xtr, ytr, Xte, yte = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    num_classes = int(ds.num_classes)
    model = _model(cfg, num_classes)
    key = jax.random.key(seed)
    k_init, k_run = jax.random.split(key)
    init_params = model.init(k_init, jnp.zeros((1,) + Xtr.shape[1:], jnp.float32))

    def progress(stage, epoch, metrics):
        if verbose and (epoch + 1) % 10 == 0:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            print(f"[{dataset}] {stage} epoch {epoch + 1}: {shown}", flush=True)

    run = {k: cfg[k] for k in cfg if k not in ("model", "hidden")}
    bound, _ = perez_ortiz(
        init_params, X=Xtr, y=ytr, apply_fn=model.apply, key=k_run, X_test=Xte, y_test=yte,
        split_seed=seed, callback=progress, **run,
    )
    t = bound.terms
    record = {
        "dataset": dataset,
        "seed": seed,
        "m": int(len(Xtr)),
        "m_test": int(len(Xte)),
        "n_prior": t["n_prior"],
        "n_bound": t["n_bound"],
        "num_params": t["num_params"],
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "certificate": float(bound.value),
        "certifies": "expected 0-1 error of the stochastic net Q (one network drawn per "
                     "prediction), w.p. >= 1 - delta - delta' over the bound set and the "
                     "Monte-Carlo networks, given the prior set",
        "delta_total": bound.delta,
        "kl": float(t["kl"]),
        "prior_std": t["prior_std"],
        "bound_set_error_mc": t["bound_set_error_mc"],
        "bound_set_error_upper": t["bound_set_error_upper"],
        "stochastic_test_error": t["stochastic_test_error"],
        "stochastic_test_error_stderr": t["stochastic_test_error_stderr"],
        "mean_net_test_error": t["mean_net_test_error"],
        "prior_net_test_error": t["prior_net_test_error"],
        "certificate_over_stochastic_test_error": float(bound.value)
        / max(t["stochastic_test_error"], 1e-12),
        "certificate_above_stochastic_test_error": bool(
            bound.value >= t["stochastic_test_error"]
        ),
        "seconds_prior": t["seconds_prior"],
        "seconds_posterior_and_certificate": t["seconds_posterior_and_certificate"],
        "seconds_total": time.perf_counter() - t_all,
        "result": bound.to_dict(),
        "paper_mnist": PAPER_MNIST,
    }
    if verbose:
        print(summary_table(record))
    if out is not None:
        write_record(out, record, summary_table(record))
    return record


def summary_table(record: dict[str, Any]) -> str:
    """A markdown table of one run: certificate, test errors, KL, time."""
    rows = [
        ("m (train) / n_prior / n_bound",
         f"{record['m']} / {record['n_prior']} / {record['n_bound']}"),
        ("# parameters", f"{record['num_params']:,}"),
        ("risk certificate (stochastic net)", f"{record['certificate']:.4f}"),
        ("stochastic test error (MC)", f"{record['stochastic_test_error']:.4f}"),
        ("posterior-mean test error", f"{record['mean_net_test_error']:.4f}"),
        ("prior-net test error", f"{record['prior_net_test_error']:.4f}"),
        ("bound-set error (MC) / its upper bound",
         f"{record['bound_set_error_mc']:.4f} / {record['bound_set_error_upper']:.4f}"),
        ("KL(Q||P)", f"{record['kl']:.2f}"),
        ("prior std chosen", f"{record['prior_std']:g}"),
        ("certificate / stochastic test error",
         f"{record['certificate_over_stochastic_test_error']:.2f}"),
        ("time (s)", f"{record['seconds_total']:.1f}"),
    ]
    return markdown_table([f"{record['dataset']} (seed {record['seed']})", "this run"], rows)
