"""Gradual pruning: reach the target a little at a time, fine-tuning in between.

Pruning everything at once removes what the network cannot recover from quickly;
spreading it over steps (Zhu & Gupta 2017, "To prune, or not to prune") lets training
re-distribute the work after each cut. Two procedures:

* :func:`iterative_prune` — from a trained model: prune a step (structured: channels toward a
  MACs target; unstructured: weights toward a sparsity), fine-tune, repeat.
* :func:`prune_while_training` — from the start of training: the sparsity rises on a
  schedule at the end of each epoch; *adaptive* holds it for an epoch when validation
  accuracy fell by more than a tolerance after the last increase.

Masks hold throughout: threshold-pruned weights stay zero (``fit`` re-applies the masks after
every optimizer step) and structurally pruned layers keep their widths. The sparsity
schedules are :mod:`nasprune.methods.schedules` (re-exported here).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.methods._sparsity_ramp import (
    SparsityRamp,
    check_count,
    check_fraction,
    training_window,
)
from nasprune.methods.schedules import SPARSITY_SCHEDULES, cubic_schedule, linear_schedule
from nasprune.pruning.unstructured import mask_smallest
from nasprune.task import as_task, is_dataset

KINDS = ("structured", "unstructured")


@dataclass
class GradualResult:
    """The pruned model and one record per pruning step (or per epoch while training)."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    fits: list[Any] = field(default_factory=list)  # the FitResult of each training call
    seconds: float = 0.0


def prune_to_macs(
    model: nn.Module,
    example_inputs: Any,
    macs: float,
    criterion: str = "l1",
    round_to: int | None = None,
    ignored: Iterable[str | nn.Module] | None = None,
    data=None,
    max_ratio: float = 0.95,
) -> nn.Module:
    """Uniformly prune ``model`` so it has at most ``macs`` MACs (absolute count).

    Bisects the one ratio shared by every group; the result is the least-pruned model under
    the budget. Raises NaspruneError when even ``max_ratio`` leaves too many MACs.
    """
    from nasprune.metrics import count_macs
    from nasprune.pruning import prune

    if count_macs(model, example_inputs) <= macs:
        return copy.deepcopy(model)

    def cut(r: float) -> tuple[nn.Module, int]:
        m = prune(model, example_inputs, r, criterion=criterion, round_to=round_to,
                  ignored=ignored, data=data)
        return m, count_macs(m, example_inputs)

    best, best_macs = cut(max_ratio)
    if best_macs > macs:
        raise NaspruneError(f"cannot reach {macs:,.0f} MACs by uniform pruning: at ratio "
                            f"{max_ratio} the model still has {best_macs:,} MACs")
    lo, hi = 0.0, max_ratio
    for _ in range(14):  # 0.95 / 2**14: finer than one channel of any realistic layer
        mid = (lo + hi) / 2
        m, m_macs = cut(mid)
        if m_macs <= macs:
            hi, best = mid, m
        else:
            lo = mid
    return best


def _check_kind_target(kind: str, target: Any) -> float:
    if kind not in KINDS:
        raise NaspruneError(f"unknown pruning kind '{kind}': choose from {', '.join(KINDS)}")
    if kind == "structured":
        return check_fraction("target (fraction of MACs kept)", target, high_inclusive=True)
    return check_fraction("target (sparsity)", target)


def _iterative_record(prev: Any, target: float, steps: int, schedule: str, criterion: str,
                      round_to: int | None) -> dict[str, Any]:
    """The ``nasprune_pruning`` record of a structured iterative run (the last step inside)."""
    return {
        "method": "iterative",
        "kind": "structured",
        "target_macs": target,
        "steps": steps,
        "schedule": schedule,
        "criterion": criterion,
        "round_to": round_to,
        "last_step": prev,
    }


def _finetune_step(model: nn.Module, data: Any, epochs: int, seed: int,
                   fit_kwargs: dict[str, Any], result: GradualResult,
                   record: dict[str, Any]) -> None:
    """Fine-tune after a pruning step; the fit and its final val accuracy are recorded."""
    from nasprune.train import finetune

    fit = finetune(model, data, epochs=epochs, seed=seed, **fit_kwargs)
    result.fits.append(fit)
    record["val_acc"] = fit.final_val_acc
    if fit.history and fit.history[-1].get("val_score") is not None:
        record["val_score"] = fit.history[-1]["val_score"]  # a task's own score


def _pruning_data(data: Any, criterion: str, model: nn.Module) -> Any:
    """What ``prune`` gets: a task's Taylor batches drawn once, so that every bisection
    step of every pruning step ranks channels on the same data (a Dataset seeds its own)."""
    if criterion != "taylor" or data is None or is_dataset(data):
        return data
    from nasprune.methods._task_batches import TAYLOR_BATCHES, train_task

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return train_task(data, TAYLOR_BATCHES, device)


def iterative_prune(
    model: nn.Module,
    data,
    example_inputs: Any,
    target: float,
    kind: str = "structured",
    steps: int = 4,
    epochs_per_step: int = 1,
    schedule: str = "cubic",
    criterion: str = "l1",
    round_to: int | None = None,
    ignored: Iterable[str | nn.Module] | None = None,
    scope: str = "global",
    layers: Iterable[str | nn.Module] | None = None,
    **fit_kwargs: Any,
) -> GradualResult:
    """Prune toward ``target`` in ``steps`` steps, fine-tuning ``epochs_per_step`` after each.

    ``kind="structured"``: ``target`` is the fraction of MACs to keep (0.5 = half); step
    ``i`` prunes the current model uniformly (``criterion``, ``round_to``, ``ignored``) to
    ``1 − schedule(i, steps, 0, 1 − target)`` of the original MACs. ``kind="unstructured"``:
    ``target`` is the weight sparsity; step ``i`` raises it to ``schedule(i, steps, 0,
    target)`` with :func:`nasprune.pruning.threshold` (``scope``, ``layers``).
    Fine-tuning is :func:`nasprune.finetune` with ``fit_kwargs`` (its seed advances per
    step). ``data`` is a built-in Dataset or a :class:`~nasprune.task.Task` / ``DataLoader``
    (then each step records the task's validation score as ``val_score``). The input model is untouched; ``result.model`` is the pruned one.
    """
    from nasprune.metrics import count_macs

    target = _check_kind_target(kind, target)
    steps = check_count("steps", steps)
    epochs_per_step = check_count("epochs_per_step", epochs_per_step, low=0)
    sched = SPARSITY_SCHEDULES.get(schedule)
    start = time.perf_counter()
    base_macs = count_macs(model, example_inputs)
    current = copy.deepcopy(model)
    result = GradualResult(current)
    seed = fit_kwargs.pop("seed", 0)
    prune_data = _pruning_data(data, criterion, current) if kind == "structured" else None
    for i in range(1, steps + 1):
        record: dict[str, Any] = {"step": i}
        if kind == "structured":
            goal = 1.0 - sched(i, steps, 0.0, 1.0 - target)
            current = prune_to_macs(current, example_inputs, goal * base_macs, criterion,
                                    round_to, ignored, prune_data)
            record["target_macs"] = goal
        else:
            goal = sched(i, steps, 0.0, target)
            done = mask_smallest(current, sparsity=goal, scope=scope, layers=layers)
            record["target_sparsity"] = goal
            record["sparsity"] = done.sparsity
        if epochs_per_step:
            _finetune_step(current, data, epochs_per_step, seed + i, fit_kwargs, result, record)
        record["macs"] = count_macs(current, example_inputs) / base_macs
        result.history.append(record)
    if kind == "structured":
        current.nasprune_pruning = _iterative_record(  # type: ignore[attr-defined]
            getattr(current, "nasprune_pruning", None), target, steps, schedule, criterion,
            round_to)
    result.model = current
    result.seconds = time.perf_counter() - start
    return result


def prune_while_training(
    model: nn.Module,
    data,
    target_sparsity: float,
    epochs: int,
    adaptive: bool = True,
    tolerance: float = 0.02,
    schedule: str = "cubic",
    steps: int | None = None,
    start_epoch: int = 1,
    end_epoch: int | None = None,
    scope: str = "global",
    layers: Iterable[str | nn.Module] | None = None,
    **fit_kwargs: Any,
) -> GradualResult:
    """Train ``model`` (in place, like ``fit``) while its weight sparsity rises to the target.

    The sparsity rises in ``steps`` increments of ``schedule`` toward ``target_sparsity``
    (Zhu & Gupta 2017), one at the end of each epoch from ``start_epoch`` on; the rest of
    training continues at full sparsity. Every increment must happen by ``end_epoch``
    (default: the one before the last, so at least one epoch trains at the target);
    ``steps`` defaults to half of that window, leaving the other half as slack.

    With ``adaptive``, an increment is held back for an epoch when validation accuracy (a
    task's score, in its ``maximize`` direction) is more than ``tolerance`` worse than its
    value just before the previous increment — as long
    as the slack allows, so the model always ends at ``target_sparsity``.
    ``fit_kwargs`` go to :func:`nasprune.fit` (optimizer, lr, ...). History: one record per
    epoch with the sparsity in force during it, val accuracy (``val_score`` for a task),
    and whether it was held.
    """
    from nasprune.train import fit

    target, start_epoch, end_epoch, steps = training_window(
        target_sparsity, epochs, start_epoch, end_epoch, steps, tolerance)
    sched = SPARSITY_SCHEDULES.get(schedule)
    result = GradualResult(model)
    maximize = True if is_dataset(data) else as_task(data).maximize
    ramp = SparsityRamp(result.history, sched, target, steps, start_epoch, end_epoch,
                         adaptive, tolerance, scope, layers, maximize)
    callbacks = list(fit_kwargs.pop("callbacks", None) or ()) + [ramp]
    start = time.perf_counter()
    result.fits.append(fit(model, data, epochs=epochs, callbacks=callbacks, **fit_kwargs))
    result.seconds = time.perf_counter() - start
    return result


__all__ = ["KINDS", "SPARSITY_SCHEDULES", "GradualResult", "cubic_schedule", "iterative_prune",
           "linear_schedule", "prune_to_macs", "prune_while_training"]
