"""Pruning methods that need data or training: sensitivity analysis, network slimming,
gradual (iterative) pruning.

They build on the primitives in :mod:`nasprune.pruning` and on :mod:`nasprune.train` and
:mod:`nasprune.metrics`, which ``pruning`` itself never imports.
"""

from __future__ import annotations

from nasprune.methods.gradual import (
    GradualResult,
    cubic_schedule,
    iterative_prune,
    linear_schedule,
    prune_while_training,
)
from nasprune.methods.sensitivity import SensitivityTable, ratios_from_sensitivity, sensitivity
from nasprune.methods.slimming import slim

__all__ = ["GradualResult", "SensitivityTable", "cubic_schedule", "iterative_prune",
           "linear_schedule", "prune_while_training", "ratios_from_sensitivity",
           "sensitivity", "slim"]
