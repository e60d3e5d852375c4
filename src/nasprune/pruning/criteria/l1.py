"""``l1``: sum of absolute weights tied to a channel (Li et al., 2017, "Pruning Filters")."""

from __future__ import annotations

import torch

from nasprune.pruning.criteria.base import ScoreContext, magnitude, register_criterion
from nasprune.pruning.graph import Member


@register_criterion("l1")
def l1(members: list[Member], channels: int, ctx: ScoreContext) -> torch.Tensor:
    return magnitude(members, channels, p=1)
