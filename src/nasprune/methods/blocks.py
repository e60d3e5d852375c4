"""Block removal ranked by importance, and the experiment's ``layer`` method.

The primitives (finding residual blocks, the output-norm score, replacing blocks by the
identity) are in :mod:`nasprune.pruning.layers`; here is what evaluates the model: the
``"sensitivity"`` block score and :func:`remove_blocks`, which ranks by either score.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.methods._task_batches import drop, fixed_task, task_measure
from nasprune.methods.registry import (
    Context,
    Pruned,
    macs_of,
    ratios_of,
    register_method,
)
from nasprune.metrics import evaluate
from nasprune.pruning.layers import (
    output_norm_scores,
    replace_module,
    residual_blocks,
    without_blocks,
)
from nasprune.pruning.module_kinds import Skip
from nasprune.task import is_dataset
from nasprune.train import recalibrate_bn

CRITERIA = ("output_norm", "sensitivity")


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def sensitivity_scores(
    model: nn.Module,
    blocks: Sequence[str],
    data,
    bn_batches: int = 10,
    val_size: int | None = None,
) -> dict[str, float]:
    """Validation top-1 lost when each block alone is replaced by the identity.

    BatchNorm statistics are re-estimated after each removal (as the search's evaluator does),
    so the score measures the block, not stale statistics. Never uses the test split.
    With a :class:`~nasprune.task.Task` (or a ``DataLoader``) the loss is in the task's
    score, in its ``maximize`` direction, on batches drawn once for every removal.
    """
    device = _device(model)
    if is_dataset(data):
        if val_size is not None:
            data = replace(data, val=data.val.subset(val_size))

        def score(m: nn.Module) -> float:
            if bn_batches:
                recalibrate_bn(m, data.loader("train", batch_size=128, shuffle=True,
                                              device=device), batches=bn_batches)
            return float(evaluate(m, data, split="val", device=device)["top1"])

        maximize = True
    else:
        task = fixed_task(data, bn_batches, val_size, device)
        score, maximize = task_measure(task, bn_batches, device), task.maximize

    base = score(copy.deepcopy(model))
    out = {}
    for name in blocks:
        trial = copy.deepcopy(model)
        replace_module(trial, name, Skip())  # takes a Transformer layer's masks too
        out[name] = drop(base, score(trial), maximize)
    return out


def _check_criterion(criterion: str, data: Any) -> None:
    if criterion not in CRITERIA:
        raise NaspruneError(f"unknown block criterion '{criterion}': choose from "
                            f"{', '.join(CRITERIA)}")
    if criterion == "sensitivity" and data is None:
        raise NaspruneError("criterion 'sensitivity' needs data= (a nasprune Task, built-in "
                            "Dataset or DataLoader with validation batches)")


def _block_count(n: int | None, fraction: float | None, blocks: int) -> int:
    """How many of ``blocks`` to remove: ``n``, or ``fraction`` of them rounded; checked."""
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            0.0 <= fraction <= 1.0
        ):
            raise NaspruneError(f"fraction must be in [0, 1], got {fraction!r}")
        n = int(round(fraction * blocks))
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise NaspruneError(f"n must be a non-negative integer, got {n!r}")
    if n > blocks:
        raise NaspruneError(
            f"cannot remove {n} blocks: the model has {blocks} residual blocks with an "
            "identity shortcut"
        )
    return n


def remove_blocks(
    model: nn.Module,
    example_inputs: Any,
    n: int | None = None,
    fraction: float | None = None,
    criterion: str = "output_norm",
    data=None,
    batches: int = 4,
    bn_batches: int = 10,
    val_size: int | None = None,
) -> nn.Module:
    """A copy of ``model`` with its ``n`` least important residual blocks replaced by identity.

    Give exactly one of ``n`` (a count) or ``fraction`` (of the removable blocks, rounded).
    ``criterion``:

    * ``"output_norm"`` — the smallest mean ``‖block(x) − x‖ / ‖x‖`` goes first, measured on
      ``batches`` training batches of ``data`` (or on ``example_inputs`` without data);
    * ``"sensitivity"`` — the smallest validation top-1 drop (a task's score drop) when the
      block alone is removed (needs ``data``; BatchNorm recalibrated on ``bn_batches`` batches; ``val_size`` caps the
      validation samples).

    The input model is untouched. The result records ``nasprune_pruning`` = {"method":
    "remove_blocks", "criterion", "removed": [names], "scores": {name: score}} so a saved
    model can be rebuilt (the spec stores the removed blocks as ``Skip``, an Identity). BatchNorm
    statistics downstream are not changed: fine-tune or recalibrate afterwards.
    """
    if (n is None) == (fraction is None):
        raise NaspruneError("remove_blocks needs exactly one of n= or fraction=")
    _check_criterion(criterion, data)
    blocks = residual_blocks(model, example_inputs)
    n = _block_count(n, fraction, len(blocks))
    if criterion == "output_norm":
        scores = output_norm_scores(model, blocks, example_inputs, data, batches)
    else:
        scores = sensitivity_scores(model, blocks, data, bn_batches, val_size)
    order = sorted(blocks, key=lambda b: (scores[b], blocks.index(b)))
    removed = sorted(order[:n], key=blocks.index)
    return without_blocks(model, removed, criterion, scores)


@register_method("layer")
def layer(ctx: Context) -> Pruned:
    """Remove whole residual blocks (least important first), then uniform channels.

    Blocks go as long as the model stays at or above the budget and at most
    ``max_fraction`` of them go; uniform channel pruning closes the rest of the gap. A
    model without residual blocks therefore gets uniform channel pruning only.
    """
    from nasprune.methods.gradual import prune_to_macs

    s = ctx.settings
    start = time.perf_counter()
    blocks = residual_blocks(ctx.model, ctx.example)
    limit = int(s.max_fraction * len(blocks))
    chosen, removed = copy.deepcopy(ctx.model), 0
    for n in range(1, limit + 1):
        m = remove_blocks(ctx.model, ctx.example, n=n, criterion=s.criterion, data=ctx.data)
        if macs_of(m, ctx.example) < ctx.target_macs:
            break  # one block too many: the channels close the remaining gap instead
        chosen, removed = m, n
    names = list(getattr(chosen, "nasprune_pruning", {}).get("removed", [])) if removed else []
    if macs_of(chosen, ctx.example) > ctx.target_macs:
        chosen = prune_to_macs(chosen, ctx.example, ctx.target_macs,
                               criterion=ctx.cfg.criterion, round_to=ctx.cfg.round_to,
                               data=ctx.data)
    note = (f"removed {removed} of {len(blocks)} residual blocks, then uniform channels"
            if blocks else "no residual blocks in this model: uniform channel pruning only")
    return Pruned(chosen, search_seconds=time.perf_counter() - start,
                  info={"blocks": len(blocks), "removed_blocks": names, "note": note,
                        "ratios": ratios_of(chosen)})


__all__ = ["CRITERIA", "layer", "remove_blocks", "sensitivity_scores"]
