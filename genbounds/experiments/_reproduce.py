"""`genbounds reproduce`: a paper's experiment, end to end.

``dziugaite-roy`` runs `genbounds.experiments.reproduce_dziugaite_roy` (Dziugaite & Roy 2017),
``risk-certificate`` runs `genbounds.experiments.reproduce_risk_certificate` (Pérez-Ortiz et
al. 2021), ``heavy-tail`` runs `genbounds.experiments.reproduce_heavy_tail` (layer tail
exponents against the load N/M, Martin & Mahoney), ``compression`` runs
`genbounds.experiments.reproduce_compression` (Lotfi et al. 2022, plus ``bound_vs_dim.png``);
each writes ``OUT/results.json`` and ``OUT/summary.md``.
"""

from __future__ import annotations

import argparse

from genbounds.experiments._common import console, lock, prepare_out

RUNNERS = {"dziugaite-roy": "reproduce_dziugaite_roy",
           "risk-certificate": "reproduce_risk_certificate",
           "heavy-tail": "reproduce_heavy_tail",
           "compression": "reproduce_compression"}


def cmd_reproduce(args: argparse.Namespace) -> int:
    import genbounds.experiments

    # Read from the package at call time, so that a test can replace a runner there.
    run = getattr(genbounds.experiments, RUNNERS[args.experiment])
    if args.experiment == "dziugaite-roy" and args.dataset == "digits-binary":
        args.dataset = "digits"  # D&R's digits are already binary
    if args.experiment == "compression" and args.dataset not in ("digits", "mnist1d",
                                                                  "synthetic"):
        raise ValueError(f"--dataset must be digits, mnist1d or synthetic for compression, "
                         f"got {args.dataset}")
    out = prepare_out(args.out or f"genbounds-{args.experiment}")
    lock(out)
    run(args.dataset, out, seed=args.seed, download=args.download)
    console().print(f"Wrote {out / 'results.json'} and {out / 'summary.md'}")
    return 0
