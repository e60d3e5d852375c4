"""``bn_scale``: |γ| of the group's BatchNorm layers (network slimming, Liu et al., 2017).

Trained with an L1 penalty on γ (``fit(..., bn_l1=1e-4)``), unimportant channels get γ ≈ 0.
Groups without a BatchNorm fall back to ``l1`` so every group gets a score.
"""

from __future__ import annotations

import torch
from torch import nn

from nasprune.pruning.criteria.base import (
    ScoreContext,
    combine,
    magnitude,
    register_criterion,
    to_group,
)
from nasprune.pruning.graph import Member

_BN = nn.modules.batchnorm._BatchNorm


@register_criterion("bn_scale")
def bn_scale(members: list[Member], channels: int, ctx: ScoreContext) -> torch.Tensor:
    per_layer = [
        to_group(m, m.module.weight.detach().abs()[m.idx], channels)
        for m in members
        if isinstance(m.module, _BN) and m.module.affine
    ]
    return combine(per_layer, channels) if per_layer else magnitude(members, channels, p=1)
