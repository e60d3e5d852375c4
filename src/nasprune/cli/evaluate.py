"""``nasprune evaluate``: every metric of a saved checkpoint on a data split."""

from __future__ import annotations

import argparse
from typing import Any

from nasprune.cli._flags import (
    RUNTIME_CHOICES,
    add_checkpoint,
    add_data,
    add_device,
    add_out,
    add_task,
    add_threads,
    load_task_flags,
    make_runtime,
)
from nasprune.errors import NaspruneError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="accuracy, precision/recall/F1, MACs/FLOPs, params, size (and latency) of a "
        "checkpoint",
    )
    add_checkpoint(p, "directory written by nasprune.save / `nasprune train` (optional "
                   "when --task returns a model)", required=False)
    add_data(p, "data set name, e.g. digits (default: the one the checkpoint records)",
             download=True)
    add_task(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--seed", type=int, default=None,
                   help="data split seed (default: the training run's, recorded in the "
                   "checkpoint, so its val and test images stay unseen)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N")
    add_device(p, help="cpu or cuda (default: cpu)")
    p.add_argument("--latency", action="store_true",
                   help="also measure latency (median/p90) at batch 1 and 64")
    add_threads(p, help="CPU threads for the latency measurement (default: torch's; 1 "
                "with --baseline)")
    p.add_argument("--runtime", default=None, choices=RUNTIME_CHOICES,
                   help="with --baseline: the runtime the speed-up is measured on (default "
                   "torch)")
    p.add_argument("--baseline", default=None, metavar="DIR",
                   help="with --latency: the unpruned checkpoint; adds the measured speed-up "
                   "over it (batch 1, interleaved) beside the MACs ratio")
    add_out(p, "FILE.json", "write all metrics as JSON here")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.batch_size < 1:
        raise NaspruneError(f"--batch-size must be at least 1, got {args.batch_size}")
    loaded = load_task_flags(args)
    if loaded is not None:
        return _evaluate_task(args, loaded)
    if args.checkpoint is None:
        raise NaspruneError("--checkpoint DIR is required (or --task MODULE:FUNCTION "
                            "returning a model)")
    ckpt = Path(args.checkpoint)
    if not ckpt.is_dir():
        raise NaspruneError(f"checkpoint directory not found: {ckpt}")
    if (args.baseline or args.runtime) and not (args.latency and args.baseline):
        raise NaspruneError("--baseline DIR and --runtime measure a speed-up: give both "
                            "--latency and --baseline (the unpruned checkpoint)")
    runtime = (make_runtime(args.runtime, args.threads, 1, args.device)
               if args.baseline else None)  # a missing onnxruntime: before any work
    if args.baseline and not Path(args.baseline).is_dir():
        raise NaspruneError(f"baseline checkpoint directory not found: {args.baseline}")

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
    if runtime is not None:
        from nasprune.metrics.runtime import measured_speedup

        sp = measured_speedup(model, load(args.baseline).eval(), data.example_input(1),
                              runtime)
        summary["speedup"] = {"baseline": str(args.baseline), **sp}
    print(f"{ckpt} ({summary['model'] or type(model).__name__}) on {format_summary(summary)}")
    if runtime is not None:
        sp = summary["speedup"]
        print(f"  speed-up on {sp['runtime']}: {sp['speedup']:.2f}x measured "
              f"({sp['median_ms']:.3g} ms vs {sp['baseline_median_ms']:.3g} ms median, p90 "
              f"{sp['p90_ms']:.3g} ms), MACs ratio {sp['macs_ratio']:.2f}x")
    if args.out:
        print(f"wrote {write_json(summary, args.out)}")
    return 0


def _evaluate_task(args: argparse.Namespace, loaded: Any) -> int:
    """``--task``: the task's score and mean loss on ``--split`` (its own batches)."""
    from nasprune.metrics import evaluate, write_json

    model = loaded.model_from(args.checkpoint)
    result = evaluate(model, loaded.task, split=args.split, device=args.device)
    summary = {"checkpoint": args.checkpoint, **loaded.record(), "split": args.split,
               **result}
    if args.latency:
        summary["latency"] = _task_latency(args, model, loaded.task)
    src = args.checkpoint or f"{type(model).__name__} from {loaded.spec}"
    loss = "n/a" if result["loss"] is None else f"{result['loss']:.4f}"
    better = "higher" if result["maximize"] else "lower"
    print(f"{src} on task '{loaded.task.name}' ({args.split}, n={result['n']}): score "
          f"{result['score']:.4f} ({better} is better), loss {loss}")
    if summary.get("latency"):
        print("  latency " + ", ".join(f"batch {b}: {v['median_ms']:.3f} ms"
                                       for b, v in summary["latency"]["batches"].items()))
    if args.out:
        print(f"wrote {write_json(summary, args.out)}")
    return 0


def _task_latency(args: argparse.Namespace, model: Any, task: Any) -> dict:
    """Latency at batch 1 and 64 on random inputs of the shape of the task's own input."""
    import torch

    from nasprune.metrics import measure_latency, resolve_device
    from nasprune.task import example_inputs

    x = example_inputs(task)
    if not isinstance(x, torch.Tensor):
        raise NaspruneError(f"--latency with --task needs one input tensor per batch; task "
                            f"'{task.name}' feeds the model {type(x).__name__} inputs")
    dev = resolve_device(args.device or "cpu")
    table = measure_latency(model, tuple(x.shape[1:]), batch_sizes=(1, 64), device=dev,
                            num_threads=args.threads)
    return {"device": str(dev), "threads": args.threads or torch.get_num_threads(),
            "input_shape": list(x.shape[1:]),
            "batches": {str(b): v for b, v in table.items()}}
