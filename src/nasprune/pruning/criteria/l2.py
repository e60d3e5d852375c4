"""``l2``: Euclidean norm of the weights tied to a channel."""

from __future__ import annotations

import torch

from nasprune.pruning.criteria.base import ScoreContext, magnitude, register_criterion
from nasprune.pruning.graph import Member


@register_criterion("l2")
def l2(members: list[Member], channels: int, ctx: ScoreContext) -> torch.Tensor:
    return magnitude(members, channels, p=2)
