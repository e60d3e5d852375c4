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
from nasprune.task import Task, as_task, is_dataset, to_device
from nasprune.train import distributed
from nasprune.train.checks import check_fit_args
from nasprune.train.device import resolve_channels_last, resolve_device, resolve_precision
from nasprune.train.monitor import LossMonitor
from nasprune.train.optim import default_lr, make_optimizer
from nasprune.train.schedule import make_schedule
from nasprune.train.seed import seed_everything
from nasprune.train.step import (
    TrainRun,
    correct_count,
    first_batch_guard,
    placed,
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

    Under ``torchrun --nproc_per_node N`` each process trains ``model`` with
    DistributedDataParallel on its own shard (see :mod:`nasprune.train.distributed`):
    ``batch_size`` is per process, so the global batch is N·``batch_size``; reported
    metrics cover all ranks, only rank 0 prints, and every rank ends with the same weights.
    """
    check_fit_args(model, data, epochs, optimizer, lr, momentum, weight_decay, schedule,
                   label_smoothing, batch_size, seed, bn_l1, teacher, kd_temperature, kd_weight,
                   max_steps, callbacks)
    seed_everything(seed)
    dev = resolve_device(device)
    with distributed.session(dev) as dist:  # None unless launched by torchrun
        dev = dev if dist is None else dist.device  # under torchrun: this rank's GPU
        precision = resolve_precision(amp, dev)
        cl = resolve_channels_last(channels_last, dev)
        progress = progress and (dist is None or dist.rank == 0)
        task, loader, val_loader = _loaders(data, batch_size, augment, dev, seed, validate, dist)
        total = epochs * _length(loader)
        if max_steps is not None:
            total = min(total, max_steps)
        result = FitResult()
        if total:
            _fit(model, teacher, loader, val_loader, epochs, total, result, dist,
                 dict(optimizer=optimizer, lr=lr, momentum=momentum,
                      weight_decay=weight_decay, schedule=schedule, precision=precision,
                      channels_last=cl, label_smoothing=label_smoothing,
                      bn_l1=bn_l1, kd_temperature=kd_temperature, kd_weight=kd_weight,
                      task=task, dev=dev, callbacks=callbacks or (), progress=progress,
                      max_steps=max_steps))
    return result


def _fit(model: nn.Module, teacher: nn.Module | None, loader, val_loader, epochs: int,
         total: int, result: FitResult, dist: distributed.Distributed | None, o: dict) -> None:
    """Build the run (optimizer, schedule, precision, DDP wrapper) and train it."""
    dev, optimizer, schedule = o["dev"], o["optimizer"], o["schedule"]
    precision, cl = o["precision"], o["channels_last"]
    with placed(model, dev, cl, train=True), placed(teacher, dev, cl, train=False):
        opt = make_optimizer(optimizer, model, o["lr"], o["momentum"], o["weight_decay"])
        run = TrainRun(model=model, optimizer=opt, scheduler=make_schedule(schedule, opt, total),
                   device=dev, precision=precision, channels_last=cl,
                   scaler=torch.amp.GradScaler(dev.type) if precision.needs_scaler else None,
                   label_smoothing=float(o["label_smoothing"]), bn_l1=float(o["bn_l1"]),
                   bns=[m for m in model.modules() if isinstance(m, _BatchNorm)],
                   teacher=teacher, kd_temperature=float(o["kd_temperature"]),
                   kd_weight=float(o["kd_weight"]), task=o["task"], dist=dist)
        # The teacher is frozen for the run only: it is often the user's own model.
        frozen = [p for p in (teacher.parameters() if teacher is not None else ())
                  if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        apply_masks(model)
        if dist is not None:
            run.wrapped = dist.wrap(model)  # after the move: DDP holds the device's tensors
        try:
            _train_epochs(run, loader, val_loader, epochs, total, result, o["callbacks"],
                          o["progress"], o["max_steps"])
        finally:
            run.wrapped = None  # the user's model is the one trained; drop DDP's hooks
            for p in frozen:
                p.requires_grad_(True)


def _loaders(data, batch_size: int, augment: bool, dev: torch.device, seed: int,
             validate: bool, dist: distributed.Distributed | None = None,
             ) -> tuple[Task | None, Iterable, Iterable | None]:
    """(task or None for a built-in Dataset, training batches, validation batches or None).

    Under torchrun each rank gets its shard of the training batches (and, for a built-in
    Dataset, of the validation batches: their correct counts are summed over ranks).
    """
    if is_dataset(data):
        shard = {"rank": dist.rank, "world_size": dist.world} if dist else {}
        world = dist.world if dist else 1
        if world > len(data.train):
            raise NaspruneError(f"{world} processes but only {len(data.train)} training "
                                "samples: each process needs at least one")
        # Dropping the ragged last batch keeps BatchNorm away from tiny batches.
        loader = data.loader("train", batch_size=batch_size, shuffle=True, augment=augment,
                             device=dev, seed=seed, **shard,
                             drop_last=len(data.train) > batch_size * world)
        val = (data.loader("val", batch_size=max(batch_size, 256), device=dev, **shard)
               if validate and len(data.val) else None)
        return None, loader, val
    task = as_task(data)
    train = task.split("train")
    if dist is not None:
        train = distributed.shard_loader(train, dist, seed)
    return task, train, task.val if validate else None


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
        correct, n = correct_count(run, val_loader)
        if run.dist is not None:
            correct, n = run.dist.sums([correct, n])
        return {"val_acc": correct / n if n else float("nan")}
    try:
        with torch.no_grad(), run.precision.autocast(run.device):
            run.model.eval()
            score = run.task.evaluate(run.model, val_loader, run.device)
    finally:
        run.model.train()
    # A score is a function of all outputs, not a sum: each rank scores the whole validation
    # set with the same weights, and rank 0's value is the one every rank reports.
    return {"val_acc": None,
            "val_score": score if run.dist is None else run.dist.from_main(score)}


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
            if run.dist is not None:
                distributed.set_epoch(loader, epoch)
            t0 = time.perf_counter()
            for i, batch in enumerate(loader, start=1):
                batch = _prepared(run, batch, result.steps == 0)
                train_step(run, batch, monitor, epoch, i)
                result.steps += 1
                bar.update(1)
                if monitor.count and i % 10 == 0:
                    # A task without class scores has no accuracy: show the loss alone.
                    acc = {"acc": f"{monitor.accuracy:.3f}"} if monitor.scored else {}
                    bar.set_postfix(loss=f"{monitor.loss:.3f}", **acc, refresh=False)
                if result.steps >= total:
                    break
            monitor.flush()
            seconds = time.perf_counter() - t0
            if run.dist is not None:
                _reduce_epoch(run, monitor)
            result.samples += monitor.count
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
            stop = any([cb(epoch, run.model, record) is True for cb in callbacks])
            if stop if run.dist is None else run.dist.any(stop):  # all ranks stop together
                result.stopped = "callback"
                return
            if result.steps >= total:
                if max_steps is not None and result.steps >= max_steps and epoch < epochs:
                    result.stopped = "max_steps"
                return
    finally:
        bar.close()


def _reduce_epoch(run: TrainRun, monitor: LossMonitor) -> None:
    """Epoch sums over all ranks; BN statistics averaged so every rank validates alike."""
    loss_sum, correct, count, scored = run.dist.sums(
        [monitor.loss_sum, monitor.correct, monitor.count, monitor.scored])
    monitor.loss_sum, monitor.correct = loss_sum, int(correct)
    monitor.count, monitor.scored = int(count), int(scored)
    run.dist.sync_bn_stats(run.model)


def _prepared(run: TrainRun, batch, first: bool):
    """The batch on the run's device (and layout); the first one also checks the model."""
    if run.task is not None:
        batch = to_device(batch, run.device)
        if first:
            first_batch_guard(run, batch)
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
