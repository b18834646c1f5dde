"""`genbounds report`: every bound and measure for one trained network, in report.json.

Either a run directory of `genbounds train` (its parameters, data set and options are read
back), or the user's own network: a linen Module or an apply function (``--model``), a flax or
orbax checkpoint (``--checkpoint``) and data (``--data``), read by `_user_model`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from genbounds.experiments._common import (
    PARAMS_MAGIC,
    UserError,
    console,
    file_sha256,
    load_noisy,
    lock,
    num,
    prepare_out,
    rademacher_estimate,
)
from genbounds.experiments._progress import Progress
from genbounds.files import CorruptFile, atomic_write, read_checked, read_json_checked


def _write_report(rep: Any, path: Path, **extra: Any) -> None:
    """report.json: the same schema for a harness run and for a user's network."""
    payload = {"records": rep.to_records(), "train_error": rep.train_error,
               "test_error": rep.test_error, "n": rep.n, "delta": rep.delta,
               "skipped": [{"name": name, "reason": why} for name, why in rep.skipped], **extra}
    atomic_write(path, json.dumps(payload, indent=2, default=num).encode())


def cmd_report(args: argparse.Namespace) -> int:
    if args.model is not None or args.checkpoint is not None or args.data is not None:
        if args.run_dir is not None:
            raise UserError("give either RUN_DIR (a run of `genbounds "
                             "train`) or --model/--checkpoint/--data, not both")
        missing = [f"--{k}" for k in ("model", "checkpoint", "data") if getattr(args, k) is None]
        if missing:
            raise UserError(f"a network of yours needs --model, --checkpoint "
                             f"and --data; missing {', '.join(missing)}")
        return _report_user(args)
    if args.run_dir is None:
        raise UserError("give RUN_DIR (a run of `genbounds train`), or "
                         "--model MODULE:ATTR --checkpoint FILE --data FILE.npz|NAME")
    return _report_run(args)


def _report_user(args: argparse.Namespace) -> int:
    from genbounds import report
    from genbounds.core._checks import check_finite_tree
    from genbounds.experiments._user_model import (
        check_data,
        check_fit,
        describe_file,
        describe_model,
        load_checkpoint,
        load_npz,
        load_object,
        make_apply_fn,
        split_state,
    )

    con = console()
    out = prepare_out(args.out or "genbounds-report")
    lock(out)
    with Progress("genbounds report", console=con) as progress:
        with progress.phase(f"loading the model {args.model}"):
            obj = load_object(args.model)
        with progress.phase(f"loading the checkpoint {args.checkpoint}"):
            params, init_params, collections = split_state(load_checkpoint(args.checkpoint))
            if args.init_checkpoint is not None:
                init_params, _, _ = split_state(load_checkpoint(args.init_checkpoint))
            for name, path, tree in (("params", args.checkpoint, params),
                                     ("init_params", args.init_checkpoint or args.checkpoint,
                                      init_params)):
                try:
                    if tree is not None:
                        check_finite_tree(tree, name)
                except ValueError as e:
                    raise UserError(f"--checkpoint {path}: {e}") from None
            apply_fn, what = make_apply_fn(obj, collections)
        with progress.phase(f"loading the data {args.data}"):
            if args.data.endswith(".npz"):
                data = load_npz(args.data)
                data_name = args.data
                data_record: Any = describe_file(args.data)
            else:
                from genbounds.data import DATASETS, load

                if args.data not in DATASETS:
                    raise UserError(f"--data must be a .npz file or one of {sorted(DATASETS)}, "
                                    f"got {args.data!r}")
                ds = load(args.data, seed=args.seed, n=args.n, flatten=not args.keep_shape)
                data = {"X_train": ds.X_train, "y_train": ds.y_train, "X_test": ds.X_test,
                        "y_test": ds.y_test}
                data_name = ds.name
                data_record = {"name": ds.name, "seed": args.seed, "n": args.n,
                               "keep_shape": bool(args.keep_shape)}
            check_data(data, data_name)
        with progress.phase("checking that the model, the checkpoint and the data fit"):
            check_fit(obj, params, collections, apply_fn, data["X_train"],
                      {k: data.get(k) for k in ("y_train", "y_test")}, model=args.model,
                      checkpoint=args.checkpoint, data=data_name)
            if init_params is not None:
                check_fit(obj, init_params, collections, apply_fn, data["X_train"], {},
                          model=args.model, data=data_name,
                          checkpoint=(args.init_checkpoint or args.checkpoint) + " (init_params)")
        with progress.phase(f"computing the bounds ({what}, n = {len(data['X_train'])})"):
            rep = report(params, X=data["X_train"], y=data["y_train"], apply_fn=apply_fn,
                         X_test=data.get("X_test"), y_test=data.get("y_test"),
                         init_params=init_params, delta=args.delta)
    con.print(rep.to_text())
    # What the numbers are of: the checkpoint's path and SHA-256, the model, the data.
    _write_report(rep, out / "report.json", model=args.model,
                  model_spec=describe_model(obj, args.model),
                  checkpoint=describe_file(args.checkpoint),
                  init_checkpoint=(None if args.init_checkpoint is None
                                   else describe_file(args.init_checkpoint)),
                  collections=sorted(collections), data=data_name, data_source=data_record)
    con.print(f"Wrote {out / 'report.json'}")
    return 0


def _report_run(args: argparse.Namespace) -> int:
    import flax.serialization

    from genbounds import report
    from genbounds.core._checks import check_finite_tree
    from genbounds.train import make_model

    con = console()
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"RUN_DIR {str(run_dir)!r} is not a directory")
    lock(run_dir)
    try:
        run = read_json_checked(run_dir / "run.json")
        raw = read_checked(run_dir / "params.msgpack", PARAMS_MAGIC, what="parameter file")
    except CorruptFile as e:
        raise UserError(f"RUN_DIR: {e}; re-run `genbounds train`") from None
    except OSError as e:
        raise UserError(f"RUN_DIR {str(run_dir)!r} is not a run directory written by "
                        f"`genbounds train` ({e})") from None
    try:
        state = flax.serialization.msgpack_restore(raw)
        params, init_params = state["params"], state["init_params"]
        check_finite_tree(params, "params")
        check_finite_tree(init_params, "init_params")
    except Exception as e:  # noqa: BLE001 - any decoding failure is a corrupt file
        raise UserError(
            f"RUN_DIR: {run_dir / 'params.msgpack'} is unusable ({e})") from None
    out = run_dir if args.out is None else prepare_out(args.out)
    lock(out)
    with Progress("genbounds report", console=con) as progress:
        with progress.phase(f"loading the data ({run['dataset']})"):
            dataset = load_noisy(run["dataset"], seed=run["seed"], n=run["n"],
                                 label_noise=run["label_noise"])
            model = make_model(num_classes=dataset.num_classes, **run["model"])

        def apply_fn(params, X):
            return model.apply({"params": params}, jnp.asarray(X, jnp.float32))

        args.width, args.depth, args.seed = (run["model"]["width"], run["model"]["depth"],
                                             run["seed"])
        with progress.phase("Rademacher complexity (Monte Carlo)"):
            estimate = rademacher_estimate(dataset, args)
        with progress.phase("computing the bounds"):
            rep = report(params, X=dataset.X_train, y=dataset.y_train,
                         apply_fn=apply_fn, init_params=init_params, delta=args.delta,
                         X_test=dataset.X_test, y_test=dataset.y_test,
                         rademacher_estimate=estimate)
    con.print(rep.to_text())
    _write_report(rep, out / "report.json", run_dir=str(run_dir.resolve()),
                  params_sha256=file_sha256(run_dir / "params.msgpack"), model_spec=run["model"])
    con.print(f"Wrote {out / 'report.json'}")
    return 0
