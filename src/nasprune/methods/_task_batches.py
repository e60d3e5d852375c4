"""Fixed batches of a user's task for the methods that measure many pruned copies.

Sensitivity analysis and block ranking score dozens of pruned copies; each copy must see the
same BatchNorm-recalibration batches, the same validation batches (and Taylor the same
gradient batches), or the table would mostly measure which batches a shuffling loader
happened to give. As in the search proxy, the batches are drawn once, moved to the model's
device once, and every copy is measured on that fixed :class:`~nasprune.task.Task`.
The built-in Dataset keeps its own (seeded, in-memory) path; this is only for tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nasprune.task import Task, as_task, example_of, first_batches, first_samples, to_device

# ``taylor`` sums the gradients of this many training batches (ScoreContext.batches).
TAYLOR_BATCHES = 4


def train_task(data: Any, train_batches: int, device: torch.device) -> Task:
    """``data`` as a task whose training split is its first ``train_batches``, fixed."""
    task = as_task(data)
    train = first_batches(task.split("train"), train_batches, f"task '{task.name}'",
                          "training")
    return task.with_splits(train=[to_device(b, device) for b in train])


def fixed_task(data: Any, train_batches: int, val_size: int | None,
               device: torch.device) -> Task:
    """``data`` as a task whose train and val splits are fixed lists on ``device``.

    ``train_batches``: the first training batches (none when 0); ``val_size``: the first
    validation batches holding at least that many samples (all of them when None).
    """
    task = train_task(data, train_batches, device) if train_batches > 0 else as_task(data)
    val, _ = first_samples(task.split("val"), val_size, device, f"task '{task.name}'")
    return task.with_splits(train=task.train if train_batches > 0 else [], val=val, test=None)


def task_measure(task: Task, bn_batches: int, device: torch.device
                 ) -> Callable[[nn.Module], float]:
    """``measure(model)``: the task's val score after re-estimating BatchNorm statistics."""
    from nasprune.metrics import evaluate
    from nasprune.train import recalibrate_bn

    def measure(m: nn.Module) -> float:
        if bn_batches:
            recalibrate_bn(m, task.train, batches=bn_batches, forward=task.forward)
        return float(evaluate(m, task, split="val", device=device)["score"])

    return measure


def drop(baseline: float, score: float, maximize: bool) -> float:
    """How much worse ``score`` is than ``baseline`` in the task's direction."""
    return baseline - score if maximize else score - baseline


__all__ = ["TAYLOR_BATCHES", "drop", "example_of", "first_batches", "fixed_task",
           "task_measure", "train_task"]
