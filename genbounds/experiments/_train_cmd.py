"""`genbounds train`: train one net and keep it in a run directory.

The run directory holds the checkpoint of `genbounds.train.train` (resumed by a rerun),
``params.msgpack`` (the trained and the initial parameters, checksummed) and ``run.json`` (the
options and the outcome), which `genbounds report RUN_DIR` reads back. The run's settings (data set, size, seed, label
noise, net, optimiser) are kept in ``settings.json``: a rerun with the same settings resumes the
checkpoint (a larger ``--max-epochs`` continues training), a rerun with other settings into the
same directory is refused, naming each differing option.
"""

from __future__ import annotations

import argparse

from genbounds.experiments._common import (
    PARAMS_MAGIC,
    console,
    keep_settings,
    lock,
    prepare_out,
    train_one,
)
from genbounds.experiments._progress import Progress
from genbounds.files import write_checked, write_json_checked

# The version of the training protocol of `train_one` (Adam, stop at 100% train accuracy).
PROTOCOL = 1
FLAGS = {"command": "the command", "protocol": "the training protocol version",
         "dataset": "--dataset", "n": "--n", "seed": "--seed", "label_noise": "--label-noise",
         "depth": "--depth", "width": "--width", "lr": "--lr", "batch_size": "--batch-size"}


def cmd_train(args: argparse.Namespace) -> int:
    import flax.serialization

    con = console()
    out = prepare_out(args.out)
    lock(out)
    settings = {"command": "train", "protocol": PROTOCOL, "dataset": args.dataset, "n": args.n,
                "seed": args.seed, "label_noise": args.label_noise, "depth": args.depth,
                "width": args.width, "lr": args.lr, "batch_size": args.batch_size}
    keep_settings(out, settings, FLAGS)
    args.checkpoint_dir = str(out)
    with Progress("genbounds train", console=con) as progress:
        bar = progress.bar(f"training, label noise {args.label_noise:.2f}", total=args.max_epochs)
        dataset, spec, result, seconds = train_one(
            args, args.label_noise, lambda d: bar.update(d["epoch"],
                                                         f"train acc {d['train_acc']:.3f}"))
        bar.close(f"{result.epochs} epochs, train acc {result.train_acc:.3f}")
    state = {"params": result.params, "init_params": result.init_params}
    write_checked(out / "params.msgpack", flax.serialization.msgpack_serialize(
        flax.serialization.to_state_dict(state)), PARAMS_MAGIC)
    run = {"dataset": args.dataset, "seed": args.seed, "n": args.n,
           "label_noise": args.label_noise, "model": spec, "lr": args.lr,
           "batch_size": args.batch_size, "max_epochs": args.max_epochs,
           "epochs": int(result.epochs), "reached": bool(result.reached),
           "train_acc": result.train_acc, "test_acc": result.test_acc, "seconds": seconds}
    write_json_checked(out / "run.json", run)
    con.print(f"trained in {seconds:.1f} s ({result.epochs} epochs, train acc "
              f"{result.train_acc:.3f}, test acc {result.test_acc:.3f}); wrote {out}")
    return 0
