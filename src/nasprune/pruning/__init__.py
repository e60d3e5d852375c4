"""Pruning primitives: dependency groups, channel criteria, structured (physical) and
unstructured pruning, block removal, width specs and masks.

``groups`` lists what can be pruned, ``prune`` removes channels, ``CRITERIA`` names the
importance measures. Only ``graph`` and ``structured`` touch Torch-Pruning. Methods that
need data or training live in :mod:`nasprune.methods`; their old names here still resolve.
"""

from __future__ import annotations

import importlib
from typing import Any

from nasprune.pruning.criteria import CRITERIA
from nasprune.pruning.graph import ChannelGroup, groups, kept_channels
from nasprune.pruning.layers import remove_blocks, residual_blocks
from nasprune.pruning.structured import GroupPlan, plan, prune, removed_channels
from nasprune.pruning.unstructured import ThresholdReport, threshold

__all__ = [
    "CRITERIA",
    "ChannelGroup",
    "GroupPlan",
    "ThresholdReport",
    "groups",
    "kept_channels",
    "plan",
    "prune",
    "remove_blocks",
    "removed_channels",
    "residual_blocks",
    "threshold",
]

# Names that moved to nasprune.methods (they train or evaluate); resolved on first use so
# that importing the primitives never imports training or metrics.
_MOVED = {"GradualResult", "SensitivityTable", "cubic_schedule", "iterative_prune",
          "linear_schedule", "prune_while_training", "ratios_from_sensitivity",
          "sensitivity", "slim"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module("nasprune.methods"), name)
    if name == "gradual":
        return importlib.import_module("nasprune.methods.gradual")
    raise AttributeError(f"module 'nasprune.pruning' has no attribute '{name}'")
