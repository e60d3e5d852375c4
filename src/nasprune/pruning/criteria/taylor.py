"""``taylor``: first-order Taylor importance |w · ∂L/∂w| (Molchanov et al., CVPR 2019).

Estimates how much the loss would change if a channel's weights were zeroed, from the
gradients of a few training batches. Needs ``data`` (a nasprune Dataset). Gradients are
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


def accumulate_gradients(ctx: ScoreContext) -> None:
    """Sum the loss gradients of ``ctx.batches`` shuffled train batches into ``.grad``."""
    if ctx.data is None or not hasattr(ctx.data, "loader"):
        raise NaspruneError(
            "criterion 'taylor' needs training data: pass data=<nasprune Dataset> to prune()"
        )
    model = ctx.model
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    loader = ctx.data.loader("train", batch_size=64, shuffle=True, device=device, seed=ctx.seed)
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        with torch.enable_grad():
            for step, (x, y) in enumerate(loader):
                if step >= ctx.batches:
                    break
                nn.functional.cross_entropy(model(x), y).backward()
    finally:
        model.train(was_training)


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
