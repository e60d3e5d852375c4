"""``nasprune evaluate``: every metric of a saved checkpoint on a data split."""

from __future__ import annotations

import argparse

from nasprune.cli._flags import add_checkpoint, add_data, add_device, add_out, add_threads
from nasprune.errors import NaspruneError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="accuracy, precision/recall/F1, MACs/FLOPs, params, size (and latency) of a "
        "checkpoint",
    )
    add_checkpoint(p, "directory written by nasprune.save / `nasprune train`")
    add_data(p, "data set name, e.g. digits (default: the one the checkpoint records)",
             download=True)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--seed", type=int, default=None,
                   help="data split seed (default: the training run's, recorded in the "
                   "checkpoint, so its val and test images stay unseen)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N")
    add_device(p, help="cpu or cuda (default: cpu)")
    p.add_argument("--latency", action="store_true",
                   help="also measure latency (median/p90) at batch 1 and 64")
    add_threads(p, help="CPU threads for the latency measurement (default: torch's)")
    add_out(p, "FILE.json", "write all metrics as JSON here")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    ckpt = Path(args.checkpoint)
    if not ckpt.is_dir():
        raise NaspruneError(f"checkpoint directory not found: {ckpt}")
    if args.batch_size < 1:
        raise NaspruneError(f"--batch-size must be at least 1, got {args.batch_size}")

    from nasprune.checkpoint import load, recorded_dataset
    from nasprune.metrics import format_summary, resolve_device, summarize, write_json

    model = load(ckpt)  # before the data: a bad checkpoint fails fast, without a long decode
    data, _ = recorded_dataset(ckpt, args.data, args.data_dir, args.download, args.seed)
    if args.device is not None:
        model.to(resolve_device(args.device))
    summary = {"checkpoint": str(ckpt), "model": (getattr(model, "nasprune_arch", None)
                                                  or {}).get("name")}
    summary.update(summarize(model, data, split=args.split, batch_size=args.batch_size,
                             latency=args.latency, latency_threads=args.threads))
    print(f"{ckpt} ({summary['model'] or type(model).__name__}) on {format_summary(summary)}")
    if args.out:
        print(f"wrote {write_json(summary, args.out)}")
    return 0
