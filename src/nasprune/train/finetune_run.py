"""Fine-tune a saved (usually pruned) checkpoint: what ``nasprune finetune`` does.

The checkpoint records the data set and split seed it was trained with, so the fine-tune
sees the same training images and never the validation or test ones. BatchNorm statistics
are re-estimated first (pruning changes every layer's inputs), then ``finetune`` runs, with
the unpruned model as teacher when one is given. Threshold-pruned weights stay zero: their
masks travel in the checkpoint. The result is a checkpoint plus ``results.json`` with the
test metrics before and after.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError

RESULTS_FILE = "results.json"


def _check_fits(model: nn.Module, data: Any, what: str) -> None:
    """``model`` takes the data's images and returns one score per class."""
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
    Returns the content of ``out/results.json``.
    """
    from nasprune.checkpoint import load, recorded_dataset, save, write_atomic
    from nasprune.metrics import evaluate
    from nasprune.train import finetune, recalibrate_bn
    from nasprune.train.device import resolve_device

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
    device = resolve_device(fit_kwargs.get("device"))
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
    save(model.cpu(), out, meta={**keep, "data": ds.name, "finetuned_from": str(checkpoint),
                                 "metrics": {"test": after}, "finetune_seconds": seconds,
                                 "finetune": settings})
    write_atomic(out / RESULTS_FILE, json.dumps(summary, indent=1) + "\n")
    return summary
