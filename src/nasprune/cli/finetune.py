"""``nasprune finetune``: recover the accuracy of a saved (usually pruned) checkpoint.

The checkpoint records the data set and split seed it was trained with, so the fine-tune
sees the same training images and never the validation or test ones. BatchNorm statistics
are re-estimated first (pruning changes every layer's inputs), then ``finetune`` runs, with
the unpruned model as teacher when one is given. Threshold-pruned weights stay zero: their
masks travel in the checkpoint. The result is a checkpoint plus ``results.json`` with the
test metrics before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from nasprune.cli._flags import (
    add_checkpoint,
    add_data,
    add_fit_flags,
    add_out,
    add_quiet,
    add_task,
    load_task_flags,
    set_threads,
)
from nasprune.errors import NaspruneError

RESULTS_FILE = "results.json"


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a saved (pruned) checkpoint on the data it "
                       "was trained on, optionally distilling from the unpruned model")
    add_checkpoint(p, "model to fine-tune (optional when --task returns a model)",
                   required=False)
    p.add_argument("--teacher", default=None, metavar="DIR",
                   help="the unpruned checkpoint: distil from it (knowledge distillation)")
    add_data(p, "data set (default: the one the checkpoint records)", download=True)
    add_task(p)
    add_fit_flags(p, {"epochs": 5, "batch_size": 128, "optimizer": "sgd", "momentum": 0.9,
                      "weight_decay": 5e-4, "schedule": "cosine", "label_smoothing": 0.0,
                      "augment": True, "seed": 0},
                  lr_help="default: a tenth of the optimizer's training default",
                  seed_help="seeds the fine-tuning (the data split is always the "
                  "checkpoint's)")
    p.add_argument("--kd-temperature", type=float, default=4.0, metavar="T",
                   help="distillation temperature (with --teacher)")
    p.add_argument("--kd-weight", type=float, default=0.9, metavar="W",
                   help="weight of the distillation loss, 0..1 (with --teacher)")
    p.add_argument("--bn-batches", type=int, default=20, metavar="N",
                   help="re-estimate BatchNorm statistics on N batches first (0: off)")
    add_out(p, "DIR", "where to save the fine-tuned checkpoint (default: CHECKPOINT-ft)")
    add_quiet(p)
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    if args.teacher is not None and not Path(args.teacher).is_dir():
        raise NaspruneError(f"teacher checkpoint directory not found: {args.teacher}")
    loaded = load_task_flags(args)
    if args.checkpoint is None and loaded is None:
        raise NaspruneError("--checkpoint DIR is required (or --task MODULE:FUNCTION "
                            "returning a model)")
    ckpt = None if args.checkpoint is None else Path(args.checkpoint)
    if ckpt is not None and not ckpt.is_dir():
        raise NaspruneError(f"checkpoint directory not found: {ckpt}")
    if ckpt is None and not args.out:
        raise NaspruneError("--out DIR is required when the model comes from --task")
    set_threads(args.threads)
    out = Path(args.out) if args.out else ckpt.with_name(ckpt.name + "-ft")
    fit_kwargs = dict(
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        label_smoothing=args.label_smoothing, kd_temperature=args.kd_temperature,
        kd_weight=args.kd_weight, augment=args.augment, seed=args.seed, device=args.device)
    if loaded is not None:
        return _finetune_task_command(args, loaded, ckpt, out, fit_kwargs)
    summary = finetune_checkpoint(
        ckpt, out, teacher=args.teacher, data=args.data, data_dir=args.data_dir,
        download=args.download, bn_batches=args.bn_batches, progress=not args.quiet,
        **fit_kwargs)
    from nasprune.train.distributed import is_main

    if not is_main():  # under torchrun only rank 0 reports (and saved, above)
        return 0
    b, a = summary["before"], summary["after"]
    print(f"fine-tuned {ckpt} on {summary['data']}: {len(summary['history'])} epochs in "
          f"{summary['finetune_seconds']:.1f} s"
          + (f", distilled from {args.teacher}" if args.teacher else ""))
    print(f"test top-1 {b['top1']:.2%} → {a['top1']:.2%}  F1 {b['f1']:.3f} → {a['f1']:.3f}  "
          f"(n={a['n']})")
    print(f"saved checkpoint and results.json in {out}")
    return 0


def _check_fits(model: Any, data: Any, what: str) -> None:
    """``model`` takes the data's images and returns one score per class."""
    import torch

    x = data.example_input(2)
    try:
        with torch.no_grad():
            out = model.eval()(x.to(next(model.parameters()).device))
    except RuntimeError as exc:
        raise NaspruneError(f"{what} does not take {data.name}'s input "
                            f"{tuple(data.input_shape)}: {str(exc).splitlines()[0]}") from exc
    if tuple(out.shape) != (2, data.num_classes):
        raise NaspruneError(f"{what} returns {tuple(out.shape)[1:]} scores per image, "
                            f"{data.name} has {data.num_classes} classes")


def finetune_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike,
                        teacher: str | os.PathLike | None = None, data: str | None = None,
                        data_dir: str | None = None, download: bool = False,
                        bn_batches: int = 20, progress: bool = True,
                        **fit_kwargs: Any) -> dict[str, Any]:
    """Fine-tune the model saved in ``checkpoint`` and save it to ``out``.

    ``teacher`` (a checkpoint directory) turns on knowledge distillation; ``fit_kwargs``
    go to :func:`nasprune.finetune` (epochs, optimizer, lr, schedule, kd_weight, ...).
    Returns the content of ``out/results.json``. Under ``torchrun`` every process
    fine-tunes its shard (see :func:`nasprune.fit`) and only rank 0 writes ``out``.
    """
    from nasprune.checkpoint import load, recorded_dataset, save, write_atomic
    from nasprune.metrics import evaluate
    from nasprune.train import finetune, recalibrate_bn
    from nasprune.train.device import resolve_device
    from nasprune.train.distributed import is_main, local_device

    checkpoint, out = Path(checkpoint), Path(out)
    if isinstance(bn_batches, bool) or not isinstance(bn_batches, int) or bn_batches < 0:
        raise NaspruneError(f"bn_batches must be an integer ≥ 0, got {bn_batches!r}")
    model = load(checkpoint)  # before the data: a bad checkpoint fails fast
    teacher_model = load(teacher) if teacher is not None else None
    ds, meta = recorded_dataset(checkpoint, data, data_dir, download)
    # fit checks this too, but only after the test-split evaluation and BN re-estimation
    # below; checking first makes a wrong checkpoint or teacher fail before any work.
    _check_fits(model, ds, f"checkpoint '{checkpoint}'")
    if teacher_model is not None:
        _check_fits(teacher_model, ds, f"teacher '{teacher}'")
    device = local_device(resolve_device(fit_kwargs.get("device")))  # this rank's GPU
    model.to(device)
    seed = fit_kwargs.get("seed", 0)
    before = evaluate(model, ds, split="test")
    start = time.perf_counter()
    if bn_batches:
        recalibrate_bn(model, ds.loader("train", batch_size=fit_kwargs.get("batch_size", 128),
                                        shuffle=True, device=device, seed=seed),
                       batches=bn_batches)
    result = finetune(model, ds, teacher=teacher_model, progress=progress, **fit_kwargs)
    seconds = time.perf_counter() - start
    after = evaluate(model, ds, split="test")
    settings = {"checkpoint": str(checkpoint), "teacher": None if teacher is None else str(teacher),
                "data": ds.name, "bn_batches": bn_batches,
                **{k: v for k, v in fit_kwargs.items() if k != "device"}}
    summary = {"data": ds.name, "before": before, "after": after, "finetune_seconds": seconds,
               "images_per_second": result.images_per_second, "history": result.history,
               "settings": settings}
    keep = {k: meta[k] for k in ("seed", "num_classes", "input_shape", "pruned_from", "before",
                                 "after") if k in meta}
    if not is_main():
        return summary
    save(model.cpu(), out, meta={**keep, "data": ds.name, "finetuned_from": str(checkpoint),
                                 "metrics": {"test": after}, "finetune_seconds": seconds,
                                 "finetune": settings})
    write_atomic(out / RESULTS_FILE, json.dumps(summary, indent=1) + "\n")
    return summary


def _finetune_task_command(args: argparse.Namespace, loaded: Any, ckpt: Path | None,
                           out: Path, fit_kwargs: dict[str, Any]) -> int:
    summary = finetune_task(loaded, ckpt, out, teacher=args.teacher,
                            bn_batches=args.bn_batches, progress=not args.quiet, **fit_kwargs)
    from nasprune.train.distributed import is_main

    if not is_main():  # under torchrun only rank 0 reports
        return 0
    b, a = summary["before"], summary["after"]
    print(f"fine-tuned {ckpt or loaded.spec} on task '{summary['data']}': "
          f"{len(summary['history'])} epochs in {summary['finetune_seconds']:.1f} s"
          + (f", distilled from {args.teacher}" if args.teacher else ""))
    print(f"test score {b['score']:.4f} → {a['score']:.4f} (n={a['n']})")
    print(f"saved checkpoint and results.json in {out}")
    return 0


def finetune_task(loaded: Any, checkpoint: str | os.PathLike | None, out: str | os.PathLike,
                  teacher: str | os.PathLike | None = None, bn_batches: int = 20,
                  progress: bool = True, **fit_kwargs: Any) -> dict[str, Any]:
    """Fine-tune on a user's task (a :class:`~nasprune.task_loader.LoadedTask`): the
    checkpoint's model, else the factory's; saved to ``out`` with its ``results.json``.

    The saved spec records the task's import path and arguments; a user model is read back
    with ``--task`` (its factory's model is the architecture).
    """
    from nasprune.checkpoint import save, write_atomic
    from nasprune.metrics import evaluate
    from nasprune.train import finetune, recalibrate_bn
    from nasprune.train.device import resolve_device

    if isinstance(bn_batches, bool) or not isinstance(bn_batches, int) or bn_batches < 0:
        raise NaspruneError(f"bn_batches must be an integer ≥ 0, got {bn_batches!r}")
    task, out = loaded.task, Path(out)
    model = loaded.model_from(checkpoint)
    teacher_model = None if teacher is None else loaded.model_from(teacher)
    model.to(resolve_device(fit_kwargs.get("device")))
    before = evaluate(model, task, split="test")
    start = time.perf_counter()
    if bn_batches:
        recalibrate_bn(model, task.split("train"), batches=bn_batches, forward=task.forward)
    result = finetune(model, task, teacher=teacher_model, progress=progress, **fit_kwargs)
    seconds = time.perf_counter() - start
    after = evaluate(model, task, split="test")
    settings = {"checkpoint": None if checkpoint is None else str(checkpoint),
                "teacher": None if teacher is None else str(teacher), **loaded.record(),
                "bn_batches": bn_batches,
                **{k: v for k, v in fit_kwargs.items() if k != "device"}}
    summary = {"data": task.name, "before": before, "after": after,
               "finetune_seconds": seconds, "images_per_second": result.images_per_second,
               "history": result.history, "settings": settings}
    from nasprune.train.distributed import is_main

    if not is_main():  # under torchrun only rank 0 saves
        return summary
    save(model.cpu(), out, meta={**loaded.record(), "data": task.name,
                                 "finetuned_from": settings["checkpoint"],
                                 "metrics": {"test": after}, "finetune_seconds": seconds,
                                 "finetune": settings})
    write_atomic(out / RESULTS_FILE, json.dumps(summary, indent=1) + "\n")
    return summary
