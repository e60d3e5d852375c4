"""``taylor``: first-order Taylor importance |w · ∂L/∂w| (Molchanov et al., CVPR 2019).

Estimates how much the loss would change if a channel's weights were zeroed, from the
gradients of a few training batches. Needs ``data``: a built-in Dataset (shuffled batches of
64 from its in-memory loader), or a :class:`~nasprune.task.Task` / ``DataLoader`` (its first
training batches, routed by the task's ``forward``, with the task's ``loss``). Gradients are
taken in eval mode so BatchNorm running statistics are left as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.criteria.base import (
    ScoreContext,
    combine,
    norm_rows,
    register_criterion,
    to_group,
    weight_rows,
)
from nasprune.pruning.graph import Member
from nasprune.task import Task, as_task, is_dataset, to_device

NEEDS_DATA = "pass data=<a nasprune Task, built-in Dataset or DataLoader> to prune()"


def accumulate_gradients(ctx: ScoreContext) -> None:
    """Sum the loss gradients of ``ctx.batches`` training batches into ``.grad``."""
    if ctx.data is None:
        raise NaspruneError(f"criterion 'taylor' needs training data: {NEEDS_DATA}")
    model = ctx.model
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        with torch.enable_grad():
            if is_dataset(ctx.data):
                loader = ctx.data.loader("train", batch_size=64, shuffle=True, device=device,
                                         seed=ctx.seed)
                for step, (x, y) in enumerate(loader):
                    if step >= ctx.batches:
                        break
                    nn.functional.cross_entropy(model(x), y).backward()
            else:
                _task_gradients(model, as_task(ctx.data), ctx.batches, device)
    finally:
        model.train(was_training)


def _task_gradients(model: nn.Module, task: Task, batches: int, device: torch.device) -> None:
    """The task's loss gradients of its first ``batches`` training batches.

    The first batches, not a seeded shuffle: a caller that prunes many times (sensitivity,
    bisection) passes a task whose training batches are a fixed list, so every call
    scores on the same data.
    """
    seen = 0
    for batch in task.split("train"):
        if seen >= batches:
            break
        task.compute_loss(model, to_device(batch, device))[1].backward()
        seen += 1
    if not seen:
        raise NaspruneError(f"criterion 'taylor' got no training batches from task "
                            f"'{task.name}'")


def _wg(p: torch.Tensor) -> torch.Tensor:
    g = p.grad if p.grad is not None else torch.zeros_like(p)
    return p.detach() * g


@register_criterion("taylor")
def taylor(members: list[Member], channels: int, ctx: ScoreContext) -> torch.Tensor:
    if "taylor_grads" not in ctx.cache:
        accumulate_gradients(ctx)
        ctx.cache["taylor_grads"] = True
    per_layer = []
    for m in members:
        rows = weight_rows(m, _wg)
        rows = norm_rows(m, _wg) if rows is None else rows
        if rows is not None:
            per_layer.append(to_group(m, rows.abs().sum(1), channels))
    return combine(per_layer, channels)
