"""Sensitivity analysis and sensitivity-based ratio allocation (the classic baseline).

:func:`sensitivity` prunes one channel group at a time at each level, re-estimates the
BatchNorm statistics on a few training batches and records validation accuracy — or, for a
:class:`~nasprune.task.Task`, the task's score (Li et al. 2017, "Pruning filters for
efficient ConvNets", §4.2). :func:`ratios_from_sensitivity` then
gives each group the largest ratio whose accuracy drop stays under one common tolerance τ,
and bisects τ until the pruned model meets a MACs target: robust groups lose more.

Only the validation split is ever used; the test split stays untouched for the final report.
The table is :mod:`nasprune.methods.sensitivity_table`, the allocation
:mod:`nasprune.methods.allocation`; both names are re-exported here. The experiment's
``sensitivity`` method is at the end.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.methods._task_batches import TAYLOR_BATCHES, example_of, fixed_task, task_measure
from nasprune.methods.allocation import ratios_from_sensitivity
from nasprune.methods.registry import Context, Pruned, register_method
from nasprune.methods.sensitivity_table import SensitivityTable
from nasprune.task import is_dataset

DEFAULT_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _check_levels(levels: Iterable[float]) -> list[float]:
    out = []
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, (int, float)) or not (0.0 < lv < 1.0):
            raise NaspruneError(f"sensitivity levels must be in (0, 1), got {lv!r}")
        out.append(float(lv))
    if not out:
        raise NaspruneError("sensitivity needs at least one level")
    return sorted(set(out))


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _chosen_groups(model: nn.Module, example_inputs: Any, ignored: Any,
                   groups: Sequence[str] | None) -> list:
    """The model's channel groups, or those named in ``groups`` (checked)."""
    from nasprune.pruning import groups as list_groups

    all_groups = list_groups(model, example_inputs, ignored=ignored)
    names = [g.name for g in all_groups]
    if groups is not None:
        unknown = [g for g in groups if g not in names]
        if unknown:
            raise NaspruneError(f"group '{unknown[0]}' does not exist: the groups are "
                                f"{', '.join(names)}")
        all_groups = [g for g in all_groups if g.name in set(groups)]
    return all_groups


def _val_accuracy(data: Any, bn_batches: int, device: torch.device) -> Callable[[nn.Module], float]:
    """``measure(model)``: val top-1 after re-estimating BatchNorm on ``bn_batches`` batches."""
    from nasprune.metrics import evaluate
    from nasprune.train import recalibrate_bn

    def measure(m: nn.Module) -> float:
        if bn_batches:
            loader = data.loader("train", batch_size=128, shuffle=True, device=device, seed=0)
            recalibrate_bn(m, loader, batches=bn_batches)
        return float(evaluate(m, data, split="val", device=device)["top1"])

    return measure


def _check_val_size(val_size: Any) -> None:
    if val_size is not None and (isinstance(val_size, bool) or not isinstance(val_size, int)
                                 or val_size < 1):
        raise NaspruneError(f"val_size must be a positive integer, got {val_size!r}")


@dataclass
class _Measured:
    """How one analysis prunes and measures: built-in top-1 or a task's score."""

    data: Any  # what prune() gets (Taylor's batches)
    example_inputs: Any
    measure: Callable[[nn.Module], float]
    maximize: bool
    metric: str


def _measured_data(model: nn.Module, data: Any, example_inputs: Any, bn_batches: int,
                   val_size: int | None, criterion: str) -> _Measured:
    """What to prune with, the example inputs and how to measure a copy, for ``data``.

    A built-in Dataset keeps its in-memory path (seeded val subset, shuffled BN batches).
    A task's batches are drawn once (BN/Taylor batches, the val batches up to ``val_size``
    samples) so every pruned copy is measured on the same data.
    """
    _check_val_size(val_size)
    device = _device(model)
    if is_dataset(data):
        if example_inputs is None:
            example_inputs = data.example_input().to(device)
        if val_size is not None:
            data = replace(data, val=data.val.subset(val_size))
        return _Measured(data, example_inputs, _val_accuracy(data, bn_batches, device), True,
                         "top1")
    need = max(bn_batches, TAYLOR_BATCHES if criterion == "taylor" else 0)
    task = fixed_task(data, need, val_size, device)
    if example_inputs is None:
        example_inputs = example_of(task.val[0])
    return _Measured(task, example_inputs, task_measure(task, bn_batches, device),
                     task.maximize, "score")


def sensitivity(
    model: nn.Module,
    data,
    example_inputs: Any = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    criterion: str = "l1",
    bn_batches: int = 10,
    val_size: int | None = None,
    groups: Sequence[str] | None = None,
    round_to: int | None = None,
    min_channels: int = 1,
    ignored: Iterable[str | nn.Module] | None = None,
    progress: Callable[[str, float, float], None] | None = None,
) -> SensitivityTable:
    """Prune each group alone at each level and record the validation score.

    Each pruned copy (``nasprune.prune`` with ``{group: level}``) has its BatchNorm
    statistics re-estimated on ``bn_batches`` training batches before it is evaluated on
    the val split (capped at ``val_size`` samples): without that, pruning one layer shifts
    every later BatchNorm's input statistics and the table would mostly measure that shift.
    ``data`` is a built-in Dataset (the score is top-1) or a :class:`~nasprune.task.Task`
    / ``DataLoader`` (the task's score, drops taken in its ``maximize`` direction; its
    batches are drawn once and reused for every copy; ``example_inputs`` defaults to the
    first validation batch's inputs). ``groups`` restricts the analysis to some group
    names; ``progress(group, level, score)`` is called after each measurement. The model
    itself is not modified.
    """
    from nasprune.metrics import count_macs
    from nasprune.pruning import prune

    levels_ = _check_levels(levels)
    md = _measured_data(model, data, example_inputs, bn_batches, val_size, criterion)
    example_inputs = md.example_inputs
    all_groups = _chosen_groups(model, example_inputs, ignored, groups)
    start = time.perf_counter()
    baseline = md.measure(copy.deepcopy(model))
    curves: dict[str, list[tuple[float, float]]] = {}
    macs: dict[str, list[int]] = {}
    for g in all_groups:
        curves[g.name], macs[g.name] = [], []
        for lv in levels_:
            pruned = prune(model, example_inputs, {g.name: lv}, criterion=criterion,
                           round_to=round_to, min_channels=min_channels, ignored=ignored,
                           data=md.data)
            acc = md.measure(pruned)
            curves[g.name].append((lv, acc))
            macs[g.name].append(count_macs(pruned, example_inputs))
            if progress is not None:
                progress(g.name, lv, acc)
    return SensitivityTable(
        baseline=baseline, levels=levels_, curves=curves,
        channels={g.name: g.channels for g in all_groups}, macs=macs,
        base_macs=count_macs(model, example_inputs),
        divisors={g.name: g.divisor for g in all_groups if getattr(g, "divisor", 1) > 1},
        criterion=criterion, seconds=time.perf_counter() - start,
        maximize=md.maximize, metric=md.metric,
    )


@register_method("sensitivity")
def sensitivity_method(ctx: Context) -> Pruned:
    """Per-group sensitivity (validation split), then ratios meeting the budget."""
    from nasprune.search import SearchSpace

    s = ctx.settings
    start = time.perf_counter()
    table = sensitivity(ctx.model, ctx.data, ctx.example, levels=s.levels,
                        criterion=ctx.cfg.criterion, bn_batches=s.bn_batches,
                        val_size=s.val_size, round_to=ctx.cfg.round_to)
    space = SearchSpace(ctx.model, ctx.example, round_to=ctx.cfg.round_to)
    ratios = ratios_from_sensitivity(table, space, target_macs=ctx.cfg.budget)
    model = ctx.prune(ratios)
    return Pruned(model, search_seconds=time.perf_counter() - start,
                  info={"ratios": ratios}, artifacts={"sensitivity": table.to_dict()})


__all__ = ["DEFAULT_LEVELS", "SensitivityTable", "ratios_from_sensitivity", "sensitivity",
           "sensitivity_method"]
