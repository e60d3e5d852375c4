"""Pruning: dependency groups, channel criteria and structured (physical) pruning.

``groups`` lists what can be pruned, ``prune`` removes channels, ``CRITERIA`` names the
importance measures. Only ``graph`` and ``structured`` touch Torch-Pruning.
"""

from __future__ import annotations

from nasprune.pruning.criteria import CRITERIA
from nasprune.pruning.gradual import (
    GradualResult,
    cubic_schedule,
    iterative_prune,
    linear_schedule,
    prune_while_training,
)
from nasprune.pruning.graph import ChannelGroup, groups, kept_channels
from nasprune.pruning.layers import remove_blocks, residual_blocks
from nasprune.pruning.sensitivity import SensitivityTable, ratios_from_sensitivity, sensitivity
from nasprune.pruning.slimming import slim
from nasprune.pruning.structured import GroupPlan, plan, prune, removed_channels
from nasprune.pruning.unstructured import ThresholdReport, threshold

__all__ = [
    "CRITERIA",
    "ChannelGroup",
    "GroupPlan",
    "groups",
    "kept_channels",
    "plan",
    "prune",
    "removed_channels",
    "GradualResult",
    "SensitivityTable",
    "ThresholdReport",
    "cubic_schedule",
    "iterative_prune",
    "linear_schedule",
    "prune_while_training",
    "ratios_from_sensitivity",
    "remove_blocks",
    "residual_blocks",
    "sensitivity",
    "slim",
    "threshold",
]
