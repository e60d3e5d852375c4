"""Channel importance criteria, looked up by name in ``CRITERIA``.

Adding one is one short module: a function ``score(members, channels, ctx)`` decorated
with ``@register_criterion("name")`` (see ``base.py``), imported below.
"""

from __future__ import annotations

from nasprune.pruning.criteria import bn_scale, fpgm, l1, l2, random, taylor  # noqa: F401
from nasprune.pruning.criteria.base import (
    CRITERIA,
    ScoreContext,
    combine,
    register_criterion,
    to_group,
    weight_rows,
)

__all__ = ["CRITERIA", "ScoreContext", "combine", "register_criterion", "to_group",
           "weight_rows"]
