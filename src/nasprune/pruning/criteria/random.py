"""``random``: seeded random scores, the baseline every criterion should beat."""

from __future__ import annotations

import zlib

import torch

from nasprune.pruning.criteria.base import ScoreContext, register_criterion
from nasprune.pruning.graph import Member


@register_criterion("random")
def random(members: list[Member], channels: int, ctx: ScoreContext) -> torch.Tensor:
    # Seeded per group (by its first layer's name) so the choice does not depend on order.
    name = members[0].name if members else ""
    g = torch.Generator().manual_seed(ctx.seed * 1_000_003 + zlib.crc32(name.encode()))
    return torch.rand(channels, generator=g, dtype=torch.float64)
