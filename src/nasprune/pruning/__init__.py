"""Pruning primitives: dependency groups, channel criteria, structured (physical) and
unstructured pruning, block removal, width specs and masks.

``groups`` lists what can be pruned, ``prune`` removes channels, ``CRITERIA`` names the
importance measures, ``mask_smallest`` zeroes small weights, ``residual_blocks`` and
``without_blocks`` find and drop whole blocks (Transformer layers too); ``attention`` makes
a Transformer's heads and FFN widths the units and keeps its hidden width (``mha``,
``fused_qkv``, ``window_attention``: PyTorch, timm and Swin attention). Torch-Pruning is
touched by ``graph``, ``members``, ``structured`` and ``window_attention`` (a leaf pruner). Nothing here imports training, metrics, search or the methods: methods that
need data, training or measurements (``threshold`` with its report, ``remove_blocks``,
``sensitivity``, ``slim``, gradual pruning) live in :mod:`nasprune.methods`, and their old
names here still resolve, lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from nasprune.pruning.criteria import CRITERIA
from nasprune.pruning.graph import ChannelGroup, groups, kept_channels
from nasprune.pruning.layers import residual_blocks, without_blocks
from nasprune.pruning.structured import GroupPlan, plan, prune, removed_channels
from nasprune.pruning.unstructured import mask_smallest

__all__ = [
    "CRITERIA",
    "ChannelGroup",
    "GroupPlan",
    "ThresholdReport",
    "groups",
    "kept_channels",
    "mask_smallest",
    "plan",
    "prune",
    "remove_blocks",
    "removed_channels",
    "residual_blocks",
    "threshold",
    "without_blocks",
]

# Names that moved to nasprune.methods (they train, evaluate or measure); resolved on first
# use so that importing the primitives never imports training or metrics. ``threshold`` and
# ``remove_blocks`` wrap the primitives ``mask_smallest`` and ``without_blocks`` here.
_MOVED = {"GradualResult", "SensitivityTable", "ThresholdReport", "cubic_schedule",
          "iterative_prune", "linear_schedule", "prune_while_training",
          "ratios_from_sensitivity", "remove_blocks", "sensitivity", "slim", "threshold"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module("nasprune.methods"), name)
    if name == "gradual":
        return importlib.import_module("nasprune.methods.gradual")
    raise AttributeError(f"module 'nasprune.pruning' has no attribute '{name}'")
