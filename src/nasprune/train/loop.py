"""``fit`` and ``finetune``: the training loop every part of nasprune uses.

One loop serves plain training, fine-tuning after pruning, network slimming (L1 on BN γ),
knowledge distillation and iterative pruning (through callbacks). Masks of unstructured
pruning are re-applied after every optimizer step so pruned weights stay exactly zero.
The step itself (loss, distillation, BN penalty, masks) is in :mod:`nasprune.train.step`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasprune.errors import NaspruneError
from nasprune.pruning.masks import apply_masks
from nasprune.task import Task, as_task, batch_len, is_dataset, to_device
from nasprune.train.checks import check_int, check_number
from nasprune.train.device import resolve_channels_last, resolve_device, resolve_precision
from nasprune.train.monitor import LossMonitor
from nasprune.train.optim import OPTIMIZERS, default_lr, make_optimizer
from nasprune.train.schedule import SCHEDULES, make_schedule
from nasprune.train.seed import seed_everything
from nasprune.train.step import (
    TrainRun,
    accuracy,
    first_batch_guard,
    placed,
    task_guard,
    train_step,
)

Callback = Callable[[int, nn.Module, dict], object]

# Fine-tuning starts from trained weights: a tenth of the from-scratch learning rate.
FINETUNE_LR_FACTOR = 0.1


@dataclass
class FitResult:
    """What a training run did: one record per epoch plus totals."""

    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    best_val_acc: float | None = None
    steps: int = 0
    samples: int = 0
    stopped: str = "completed"  # or "max_steps", "callback"

    @property
    def images_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def final_val_acc(self) -> float | None:
        return self.history[-1]["val_acc"] if self.history else None

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_second": self.images_per_second}


def _check_args(model, data, epochs, optimizer, lr, momentum, weight_decay, schedule,
                label_smoothing, batch_size, seed, bn_l1, teacher, kd_temperature, kd_weight,
                max_steps, callbacks) -> None:
    if not isinstance(model, nn.Module):
        raise NaspruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_int("epochs", epochs, low=0)
    check_int("batch_size", batch_size, low=1)
    check_int("seed", seed, low=0)
    OPTIMIZERS.get(optimizer)
    SCHEDULES.get(schedule)
    if lr is not None:
        check_number("lr", lr, low=0.0, low_inclusive=False)
    check_number("momentum", momentum, low=0.0, high=1.0)
    check_number("weight_decay", weight_decay, low=0.0)
    check_number("label_smoothing", label_smoothing, low=0.0, high=1.0)
    check_number("bn_l1", bn_l1, low=0.0)
    check_number("kd_temperature", kd_temperature, low=0.0, low_inclusive=False)
    kd = check_number("kd_weight", kd_weight, low=0.0)
    if kd > 1.0:
        raise NaspruneError(f"kd_weight must be ≤ 1, got {kd_weight!r}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise NaspruneError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    if max_steps is not None:
        check_int("max_steps", max_steps, low=1)
    if callbacks is not None and not all(callable(cb) for cb in callbacks):
        raise NaspruneError("callbacks must be callables cb(epoch, model, record)")


def fit(model: nn.Module, data, epochs: int = 10, optimizer: str = "sgd",
        lr: float | None = None, momentum: float = 0.9, weight_decay: float = 5e-4,
        schedule: str = "cosine", label_smoothing: float = 0.0, batch_size: int = 128,
        seed: int = 0, device: str | torch.device | None = None, amp: bool | str | None = None,
        channels_last: bool | None = None, bn_l1: float = 0.0, teacher: nn.Module | None = None,
        kd_temperature: float = 4.0, kd_weight: float = 0.9, max_steps: int | None = None,
        progress: bool = True, augment: bool = True,
        callbacks: Sequence[Callback] | None = None, validate: bool = True) -> FitResult:
    """Train ``model`` in place on the training batches; validate after each epoch.

    ``data`` is a built-in Dataset (fast in-memory batches, augmented when ``augment``), a
    :class:`~nasprune.task.Task` or any re-iterable of batches (a ``DataLoader``: its own
    batch size and shuffling apply, ``batch_size``/``augment`` do not). With a task the
    loss is the task's (distillation mixes in the teacher's soft targets) and each epoch
    records the task's score on its validation batches as ``val_score``.

    ``lr=None`` uses the optimizer's default; schedules step once per batch. ``amp`` and
    ``channels_last`` default to on for CUDA only. ``bn_l1`` adds network slimming's L1
    penalty on BatchNorm γ; ``teacher`` switches to knowledge distillation. Each callback
    ``cb(epoch, model, record)`` runs after an epoch; returning True stops training. The
    model ends on the device and in the mode it started in. Raises NaspruneError on bad
    arguments or a NaN/inf loss (naming epoch and step).
    """
    _check_args(model, data, epochs, optimizer, lr, momentum, weight_decay, schedule,
                label_smoothing, batch_size, seed, bn_l1, teacher, kd_temperature, kd_weight,
                max_steps, callbacks)
    seed_everything(seed)
    dev = resolve_device(device)
    precision = resolve_precision(amp, dev)
    cl = resolve_channels_last(channels_last, dev)
    task, loader, val_loader = _loaders(data, batch_size, augment, dev, seed, validate)
    total = epochs * _length(loader)
    if max_steps is not None:
        total = min(total, max_steps)
    result = FitResult()
    if total == 0:
        return result
    with placed(model, dev, cl, train=True), placed(teacher, dev, cl, train=False):
        opt = make_optimizer(optimizer, model, lr, momentum, weight_decay)
        run = TrainRun(model=model, optimizer=opt, scheduler=make_schedule(schedule, opt, total),
                   device=dev, precision=precision, channels_last=cl,
                   scaler=torch.amp.GradScaler(dev.type) if precision.needs_scaler else None,
                   label_smoothing=float(label_smoothing), bn_l1=float(bn_l1),
                   bns=[m for m in model.modules() if isinstance(m, _BatchNorm)],
                   teacher=teacher, kd_temperature=float(kd_temperature),
                   kd_weight=float(kd_weight), task=task)
        # The teacher is frozen for the run only: it is often the user's own model.
        frozen = [p for p in (teacher.parameters() if teacher is not None else ())
                  if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            apply_masks(model)
            _train_epochs(run, loader, val_loader, epochs, total, result, callbacks or (),
                          progress, max_steps)
        finally:
            for p in frozen:
                p.requires_grad_(True)
    return result


def _loaders(data, batch_size: int, augment: bool, dev: torch.device, seed: int,
             validate: bool) -> tuple[Task | None, Iterable, Iterable | None]:
    """(task or None for a built-in Dataset, training batches, validation batches or None)."""
    if is_dataset(data):
        # Dropping the ragged last batch keeps BatchNorm away from tiny batches.
        loader = data.loader("train", batch_size=batch_size, shuffle=True, augment=augment,
                             device=dev, seed=seed, drop_last=len(data.train) > batch_size)
        val = (data.loader("val", batch_size=max(batch_size, 256), device=dev)
               if validate and len(data.val) else None)
        return None, loader, val
    task = as_task(data)
    return task, task.split("train"), task.val if validate else None


def _length(batches: Iterable) -> int:
    """Batches per epoch: ``len()``, or one pass over an iterable without it."""
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return sum(1 for _ in batches)


def _validate(run: TrainRun, val_loader) -> dict:
    """The epoch's validation record: ``val_acc`` (built-in data) or ``val_score`` (task)."""
    if val_loader is None:
        return {"val_acc": None}
    if run.task is None:
        return {"val_acc": accuracy(run, val_loader)}
    try:
        with torch.no_grad(), run.precision.autocast(run.device):
            run.model.eval()
            return {"val_acc": None,
                    "val_score": run.task.evaluate(run.model, val_loader, run.device)}
    finally:
        run.model.train()


def _train_epochs(run: TrainRun, loader, val_loader, epochs: int, total: int, result: FitResult,
                  callbacks: Sequence[Callback], progress: bool, max_steps: int | None) -> None:
    """The epoch loop: train, validate, record, call back; fills ``result`` in place."""
    from tqdm.auto import tqdm

    monitor = LossMonitor(sync_every=1 if run.device.type == "cpu" else 20)
    bar = tqdm(total=total, disable=not progress, file=sys.stderr, leave=False,
               unit="step", dynamic_ncols=True)
    try:
        for epoch in range(1, epochs + 1):
            bar.set_description(f"epoch {epoch}/{epochs}")
            monitor.reset()
            t0 = time.perf_counter()
            for i, batch in enumerate(loader, start=1):
                batch = _prepared(run, batch, result.steps == 0)
                train_step(run, batch, monitor, epoch, i)
                result.steps += 1
                result.samples += batch_len(batch)
                bar.update(1)
                if monitor.count and i % 10 == 0:
                    # A task without class scores has no accuracy: show the loss alone.
                    acc = {"acc": f"{monitor.accuracy:.3f}"} if monitor.scored else {}
                    bar.set_postfix(loss=f"{monitor.loss:.3f}", **acc, refresh=False)
                if result.steps >= total:
                    break
            monitor.flush()
            seconds = time.perf_counter() - t0
            result.train_seconds += seconds
            record = {"epoch": epoch, "loss": monitor.loss,
                      "train_acc": monitor.accuracy
                      if run.task is None or monitor.scored else None,
                      **_validate(run, val_loader),
                      "lr": run.optimizer.param_groups[0]["lr"], "seconds": seconds,
                      "steps": result.steps}
            result.history.append(record)
            if record["val_acc"] is not None:
                result.best_val_acc = max(result.best_val_acc or 0.0, record["val_acc"])
            if progress:
                bar.write(_epoch_line(record, epochs), file=sys.stderr)
            if any([cb(epoch, run.model, record) is True for cb in callbacks]):
                result.stopped = "callback"
                return
            if result.steps >= total:
                if max_steps is not None and result.steps >= max_steps and epoch < epochs:
                    result.stopped = "max_steps"
                return
    finally:
        bar.close()


def _prepared(run: TrainRun, batch, first: bool):
    """The batch on the run's device (and layout); the first one also checks the model."""
    if run.task is not None:
        batch = to_device(batch, run.device)
        if first:
            task_guard(run, batch)
        return batch
    x, y = batch
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if first:
        first_batch_guard(run, x)
    return x, y


def _epoch_line(record: dict, epochs: int) -> str:
    val = f"  val {record['val_acc']:.2%}" if record["val_acc"] is not None else ""
    if record.get("val_score") is not None:
        val = f"  val score {record['val_score']:.4g}"
    train = f"  train {record['train_acc']:.2%}" if record["train_acc"] is not None else ""
    return (f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.4f}"
            f"{train}{val}  lr {record['lr']:.3g}  {record['seconds']:.1f}s")


def finetune(model: nn.Module, data, epochs: int = 5, teacher: nn.Module | None = None,
             **kwargs) -> FitResult:
    """``fit`` with fine-tuning defaults: a tenth of the optimizer's default learning rate.

    Typical use after pruning, with the unpruned model as ``teacher`` for distillation.
    """
    optimizer = kwargs.setdefault("optimizer", "sgd")
    if kwargs.get("lr") is None:
        kwargs["lr"] = default_lr(optimizer) * FINETUNE_LR_FACTOR
    return fit(model, data, epochs=epochs, teacher=teacher, **kwargs)


__all__ = ["FitResult", "finetune", "fit"]
