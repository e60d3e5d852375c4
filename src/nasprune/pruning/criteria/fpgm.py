"""``fpgm``: filter pruning via the geometric median (He et al., CVPR 2019).

A filter close to all the others (small summed distance, i.e. near their geometric median)
is redundant: the rest can stand in for it. Scored on the layers whose output channels the
group removes; input-side weights are shared by every channel's successor, not redundancy.
"""

from __future__ import annotations

import torch

from nasprune.pruning.criteria.base import (
    ScoreContext,
    combine,
    register_criterion,
    to_group,
    weight_rows,
)
from nasprune.pruning.graph import Member


@register_criterion("fpgm")
def fpgm(members: list[Member], channels: int, ctx: ScoreContext) -> torch.Tensor:
    per_layer = []
    for m in members:
        rows = weight_rows(m) if m.role == "out" else None
        if rows is None or rows.shape[0] < 2:
            continue
        rows = rows.detach().double()
        per_layer.append(to_group(m, torch.cdist(rows, rows).sum(1), channels))
    return combine(per_layer, channels)
