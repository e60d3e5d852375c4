"""Evaluate a classifier on one split of a :class:`~nasprune.data.base.Dataset`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasprune._progress import progress_bar
from nasprune.errors import NaspruneError
from nasprune.metrics.classification import accuracy, classification_report
from nasprune.metrics.latency import resolve_device
from nasprune.metrics.mode import eval_mode
from nasprune.task import (
    Task,
    as_task,
    batch_len,
    checked_loss,
    checked_score,
    is_dataset,
    to_device,
)


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a tensor-free model)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@contextmanager
def _on_device(model: nn.Module, device: str | torch.device | None) -> Iterator[torch.device]:
    """Move the model to ``device`` for the block and back to where it was afterwards."""
    home = model_device(model)
    dev = home if device is None else resolve_device(device)
    moved = dev != home
    if moved:
        model.to(dev)
    try:
        yield dev
    finally:
        if moved:
            model.to(home)


def _scores(out: Any) -> Any:
    """The class scores of a model output that is not a tensor (``.logits``, or the output
    itself when it has none, so the error below names what it is)."""
    logits = getattr(out, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else out


def predict(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits and targets of ``batches`` as CPU tensors ``(N, C)`` float32 and ``(N,)``.

    Eval mode and ``torch.inference_mode``; ``device`` defaults to the model's own device,
    and the model ends up where it started with its train/eval flags as they were.
    """
    logits, targets = [], []
    with _on_device(model, device) as dev, eval_mode(model), torch.inference_mode():
        for x, y in batches:
            try:
                out = model(x.to(dev, non_blocking=True))
            except RuntimeError as exc:  # a model built for other inputs: a user error
                if logits or isinstance(exc, torch.OutOfMemoryError):
                    raise
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise NaspruneError(f"the model does not accept inputs of shape "
                                    f"{tuple(x.shape[1:])}: {first}") from exc
            if not isinstance(out, torch.Tensor):  # e.g. a Hugging Face output's .logits
                out = _scores(out)
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise NaspruneError(
                    "evaluate needs a model returning logits of shape (batch, classes), got "
                    f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
            logits.append(out.float().cpu())
            targets.append(y.cpu())
    if not logits:
        raise NaspruneError("nothing to evaluate: the split is empty")
    return torch.cat(logits), torch.cat(targets)


def evaluate(
    model: nn.Module,
    data: Any,
    split: str = "test",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict:
    """Top-1/top-5 accuracy, macro precision/recall/F1, mean cross-entropy and confusion.

    Returns ``{"top1", "top5", "precision", "recall", "f1", "loss", "n", "confusion"}``
    (accuracies as fractions 0..1, ``confusion[true][pred]`` counts). The whole ``split``
    is run in eval mode without gradients, in batches of ``batch_size`` from
    ``data.loader``; ``device`` defaults to the model's own device.

    For a :class:`~nasprune.task.Task` (or a ``DataLoader``) it returns the task's
    ``score`` on the split's batches, ``maximize``, the mean task ``loss`` (None when the
    batches carry no targets) and ``n`` samples; a pass over them that lasts shows a
    progress bar on a terminal unless ``progress`` is False.
    """
    if not is_dataset(data):
        return evaluate_task(model, as_task(data), split, device, progress)
    dev = model_device(model) if device is None else resolve_device(device)
    loader = data.loader(split, batch_size=batch_size, shuffle=False, augment=False, device=dev)
    logits, targets = predict(model, loader, dev)
    if logits.shape[1] != data.num_classes:
        raise NaspruneError(
            f"the model predicts {logits.shape[1]} classes but data set '{data.name}' has "
            f"{data.num_classes}")
    acc = accuracy(logits, targets, topk=(1, 5))
    report = classification_report(logits.argmax(dim=1), targets, data.num_classes)
    return {
        "top1": acc[1],
        "top5": acc[5],
        "precision": report["precision"],
        "recall": report["recall"],
        "f1": report["f1"],
        "loss": float(F.cross_entropy(logits, targets).item()),
        "n": int(targets.numel()),
        "confusion": report["confusion"],
    }


def evaluate_task(model: nn.Module, task: Task, split: str = "test",
                  device: str | torch.device | None = None, progress: bool = True) -> dict:
    """The task's score and mean loss of ``model`` on one split (see :func:`evaluate`)."""
    batches = progress_bar(task.split(split), f"evaluate {split}", progress)
    outputs, seen, loss_sum, n, has_loss = [], [], 0.0, 0, True
    with _on_device(model, device) as dev, eval_mode(model), torch.inference_mode():
        for batch in batches:
            b = to_device(batch, dev)
            try:
                out = task.forward(model, b)
            except (RuntimeError, TypeError, ValueError) as exc:
                if outputs:
                    raise
                raise NaspruneError(f"the model cannot process a batch of task '{task.name}': "
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
            size = batch_len(b)
            if has_loss:
                try:
                    loss_sum += float(checked_loss(task.loss(out, b))) * size
                except NaspruneError:
                    has_loss = False  # unlabelled batches: no loss, the score still counts
            outputs.append(out)
            seen.append(b)
            n += size
        if not seen:
            raise NaspruneError(f"nothing to evaluate: task '{task.name}' has no {split} batches")
        score = checked_score(task.score(outputs, seen))
    return {"score": score, "maximize": task.maximize,
            "loss": loss_sum / n if has_loss and n else None, "n": n}
