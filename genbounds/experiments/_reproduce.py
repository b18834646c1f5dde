"""`genbounds reproduce`: a paper's experiment, end to end.

``dziugaite-roy`` runs `genbounds.experiments.reproduce_dziugaite_roy` (Dziugaite & Roy 2017),
``risk-certificate`` runs `genbounds.experiments.reproduce_risk_certificate` (Pérez-Ortiz et
al. 2021), ``heavy-tail`` runs `genbounds.experiments.reproduce_heavy_tail` (layer tail
exponents against the load N/M, Martin & Mahoney), ``cmi`` runs
`genbounds.experiments.reproduce_cmi` (evaluated CMI bounds on the expected gap against n,
Harutyunyan et al. 2021, Wang & Mao 2023; also ``OUT/cmi.png``), ``compression`` runs
`genbounds.experiments.reproduce_compression` (Lotfi et al. 2022, plus ``bound_vs_dim.png``);
each writes ``OUT/results.json`` and ``OUT/summary.md``.
"""

from __future__ import annotations

import argparse

from genbounds.experiments._common import UserError, console, lock, prepare_out

RUNNERS = {"dziugaite-roy": "reproduce_dziugaite_roy",
           "risk-certificate": "reproduce_risk_certificate",
           "heavy-tail": "reproduce_heavy_tail",
           "cmi": "reproduce_cmi",
           "compression": "reproduce_compression"}


def cmd_reproduce(args: argparse.Namespace) -> int:
    import genbounds.experiments

    # Read from the package at call time, so that a test can replace a runner there.
    run = getattr(genbounds.experiments, RUNNERS[args.experiment])
    if args.experiment == "cmi":
        return _cmd_cmi(run, args)
    if getattr(args, "cmi_sizes", None) is not None:
        raise UserError(f"--n applies to `reproduce cmi` only, not to {args.experiment}")
    args.dataset = args.dataset or "digits"
    if args.experiment == "dziugaite-roy" and args.dataset == "digits-binary":
        args.dataset = "digits"  # D&R's digits are already binary
    if args.experiment == "compression" and args.dataset not in ("digits", "mnist1d",
                                                                  "synthetic"):
        raise UserError(f"--dataset must be digits, mnist1d or synthetic for compression, "
                        f"got {args.dataset}")
    out = prepare_out(args.out or f"genbounds-{args.experiment}")
    lock(out)
    run(args.dataset, out, seed=args.seed, download=args.download)
    console().print(f"Wrote {out / 'results.json'} and {out / 'summary.md'}")
    return 0


def _cmd_cmi(run, args: argparse.Namespace) -> int:
    from genbounds.experiments._cmi import DATASETS

    dataset = {None: "digits-binary", "digits": "digits-binary"}.get(args.dataset, args.dataset)
    if dataset not in DATASETS:
        raise UserError(f"--dataset: cmi runs on {', '.join(DATASETS)}, got {args.dataset!r}")
    if args.masks < 2 or args.supersamples < 1:
        raise UserError(f"--masks must be >= 2 and --supersamples >= 1, got {args.masks} and "
                        f"{args.supersamples}")
    out = prepare_out(args.out or "genbounds-cmi")
    lock(out)
    kw = {} if args.cmi_sizes is None else {"ns": tuple(args.cmi_sizes)}
    try:
        run(dataset, out, seed=args.seed, num_masks=args.masks,
            num_supersamples=args.supersamples, **kw)
    except ValueError as e:
        if "ns:" in str(e):
            raise UserError(str(e).replace("ns:", "--n:")) from None
        raise
    console().print(f"Wrote {out / 'results.json'}, {out / 'summary.md'} and {out / 'cmi.png'}")
    return 0
