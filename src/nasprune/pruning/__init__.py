"""Pruning: dependency groups, channel criteria and structured (physical) pruning.

``groups`` lists what can be pruned, ``prune`` removes channels, ``CRITERIA`` names the
importance measures. Only ``graph`` and ``structured`` touch Torch-Pruning.
"""

from __future__ import annotations

from nasprune.pruning.criteria import CRITERIA
from nasprune.pruning.graph import ChannelGroup, groups, kept_channels
from nasprune.pruning.structured import GroupPlan, plan, prune, removed_channels

__all__ = [
    "CRITERIA",
    "ChannelGroup",
    "GroupPlan",
    "groups",
    "kept_channels",
    "plan",
    "prune",
    "removed_channels",
]
