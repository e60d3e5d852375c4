"""One training step and what it needs: the state of a run, the loss, the BN penalty.

:func:`nasprune.train.fit` builds a :class:`TrainRun` once and calls :func:`train_step` per
batch; :func:`first_batch_guard` turns a model that cannot take the data into one clear
error, and :func:`placed` moves a model to the training device and back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.masks import apply_masks
from nasprune.task import Task, batch_len, logits_of, targets_of, top1
from nasprune.train.device import Precision
from nasprune.train.distill import distillation_loss, soft_target_loss
from nasprune.train.distributed import Distributed
from nasprune.train.monitor import LossMonitor


@dataclass
class TrainRun:
    """Everything one training step needs, built once per ``fit``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    precision: Precision
    channels_last: bool
    scaler: torch.amp.GradScaler | None
    label_smoothing: float
    bn_l1: float
    bns: list[nn.Module]
    teacher: nn.Module | None
    kd_temperature: float
    kd_weight: float
    task: Task | None = None  # None: a built-in Dataset's (images, labels) batches
    dist: Distributed | None = None  # under torchrun: this process's place in the group
    wrapped: nn.Module | None = None  # under torchrun: the DDP wrapper of ``model``

    @property
    def net(self) -> nn.Module:
        """What the training step calls: the DDP wrapper under torchrun, else the model."""
        return self.model if self.wrapped is None else self.wrapped


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    if p is None:
        p = next(model.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


@contextmanager
def placed(model: nn.Module | None, device: torch.device, channels_last: bool,
            train: bool) -> Iterator[None]:
    """Move ``model`` to the training device (and layout); put it back afterwards."""
    if model is None:
        yield
        return
    home, was_training = model_device(model), model.training
    if channels_last:
        model.to(device=device, memory_format=torch.channels_last)
    else:
        model.to(device)
    model.train(train)
    try:
        yield
    finally:
        if channels_last:
            model.to(device=home, memory_format=torch.contiguous_format)
        else:
            model.to(home)
        model.train(was_training)


def add_bn_l1(bns: Sequence[nn.Module], strength: float) -> None:
    """Network slimming: the subgradient of strength·|γ| pushes unimportant channels to 0."""
    for m in bns:
        if m.weight is not None and m.weight.grad is not None:
            m.weight.grad.add_(torch.sign(m.weight.detach()), alpha=strength)


def loss_and_logits(run: TrainRun, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass and loss (cross-entropy, or distillation when there is a teacher)."""
    with run.precision.autocast(run.device):
        # A Hugging Face classifier returns an output object: its ``.logits`` are the scores.
        logits = logits_of(run.net(x))
        if run.teacher is None:
            return F.cross_entropy(logits.float(), y,
                                   label_smoothing=run.label_smoothing), logits
        with torch.no_grad():
            t_logits = logits_of(run.teacher(x))
    if t_logits.shape != logits.shape:
        raise NaspruneError(f"teacher outputs shape {tuple(t_logits.shape)} but the student "
                            f"{tuple(logits.shape)}: they must predict the same classes")
    return distillation_loss(logits, t_logits, y, run.kd_temperature, run.kd_weight,
                             run.label_smoothing), logits


def task_loss(run: TrainRun, batch) -> tuple[torch.Tensor, Any]:
    """``(loss, output)`` of one batch: the task's loss; with a teacher, mixed with its soft
    targets."""
    with run.precision.autocast(run.device):
        out, loss = run.task.compute_loss(run.net, batch)
        if run.teacher is None:
            return loss, out
        with torch.no_grad():
            t_out = run.task.forward(run.teacher, batch)
    student, teacher = logits_of(out), logits_of(t_out)
    if student.shape != teacher.shape:
        raise NaspruneError(f"teacher outputs shape {tuple(teacher.shape)} but the student "
                            f"{tuple(student.shape)}: they must predict the same classes")
    soft = soft_target_loss(student, teacher, run.kd_temperature)
    return run.kd_weight * soft + (1.0 - run.kd_weight) * loss.float(), out


def task_correct(task: Task, output: Any, batch) -> torch.Tensor | None:
    """Correct top-1 predictions of one training batch, for ``train_acc`` and the progress
    line; None unless the task is scored by top-1 and gives ``(batch, classes)`` scores with
    one integer label per sample (other tasks have no training accuracy to report)."""
    if task.score is not top1:
        return None
    try:
        logits, y = logits_of(output), targets_of(batch)
    except NaspruneError:
        return None
    if (not isinstance(y, torch.Tensor) or y.is_floating_point() or logits.dim() != 2
            or y.shape != logits.shape[:1]):
        return None
    return (logits.detach().argmax(1) == y).sum()


def train_step(run: TrainRun, batch, monitor: LossMonitor, epoch: int, step: int) -> None:
    """One optimizer step; the monitor sees the loss before it can corrupt the weights.

    ``batch`` is ``(images, labels)`` of a built-in data set, or any batch of the task.
    """
    if run.task is None:
        x, y = batch
        loss, logits = loss_and_logits(run, x, y)
        monitor.add(epoch, step, loss, (logits.argmax(1) == y).sum(), int(y.shape[0]))
    else:
        loss, out = task_loss(run, batch)
        monitor.add(epoch, step, loss, task_correct(run.task, out, batch), batch_len(batch))
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.optimizer)
    else:
        loss.backward()
    if run.bn_l1:
        add_bn_l1(run.bns, run.bn_l1)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    apply_masks(run.model)
    run.scheduler.step()


def accuracy(run: TrainRun, loader) -> float:
    """Top-1 accuracy on ``loader`` in eval mode (the model goes back to train mode)."""
    correct, n = correct_count(run, loader)
    return correct / n if n else float("nan")


@torch.no_grad()
def correct_count(run: TrainRun, loader) -> tuple[int, int]:
    """(correct top-1 predictions, samples) on ``loader`` in eval mode."""
    run.model.eval()
    correct = n = 0
    try:
        for x, y in loader:
            if not y.shape[0]:  # a rank's empty share of the last global batch
                continue
            if run.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with run.precision.autocast(run.device):
                correct += (logits_of(run.model(x)).argmax(1) == y).sum()
            n += int(y.shape[0])
    finally:
        run.model.train()
    return int(correct), n


def first_batch_guard(run: TrainRun, batch) -> None:
    """A model (or teacher) that cannot take the first batch: one clear user error.

    ``batch`` is the images of a built-in data set's batch, or a whole batch of the task.
    """
    nets = [("model", run.model)] + ([("teacher", run.teacher)] if run.teacher else [])
    try:
        with torch.no_grad(), run.precision.autocast(run.device):
            run.model.eval()
            for what, net in nets:
                try:
                    net(batch[:2]) if run.task is None else run.task.forward(net, batch)
                except (RuntimeError, TypeError, ValueError) as exc:
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    where = (f"input of shape {tuple(batch.shape[1:])} from the data set"
                             if run.task is None else f"a batch of task '{run.task.name}'")
                    detail = first if run.task is None else f"{type(exc).__name__}: {first}"
                    raise NaspruneError(f"the {what} cannot process {where}: {detail}") from exc
    finally:
        run.model.train()


__all__ = ["TrainRun", "accuracy", "add_bn_l1", "correct_count", "first_batch_guard",
           "loss_and_logits", "model_device", "placed", "task_correct", "task_loss",
           "train_step"]
