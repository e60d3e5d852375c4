"""Pruning methods that need data or training, and the experiment's method registry.

Sensitivity analysis, network slimming, gradual (iterative) pruning, block removal ranked by
evaluation and magnitude pruning with its size/MACs report. They build on the primitives in
:mod:`nasprune.pruning` and on :mod:`nasprune.train` and :mod:`nasprune.metrics`, which
``pruning`` itself never imports.

Each file also registers the experiment method it implements (``METHODS`` in
:mod:`nasprune.methods.registry`): ``unpruned``/``uniform``/``global`` (``baselines``),
``threshold`` (``magnitude``), ``layer`` (``blocks``), ``sensitivity``, ``slimming`` and
``nas:<strategy>`` (``nas``). Importing this package registers them all.
"""

from __future__ import annotations

from nasprune.methods import baselines, nas  # noqa: F401  (they register experiment methods)
from nasprune.methods.allocation import ratios_from_sensitivity
from nasprune.methods.blocks import remove_blocks, sensitivity_scores
from nasprune.methods.gradual import (
    GradualResult,
    cubic_schedule,
    iterative_prune,
    linear_schedule,
    prune_to_macs,
    prune_while_training,
)
from nasprune.methods.magnitude import ThresholdReport, threshold
from nasprune.methods.registry import METHODS, Context, Pruned, register_method, smallest_cut
from nasprune.methods.sensitivity import SensitivityTable, sensitivity
from nasprune.methods.slimming import slim

__all__ = ["METHODS", "Context", "GradualResult", "Pruned", "SensitivityTable",
           "ThresholdReport", "cubic_schedule", "iterative_prune", "linear_schedule",
           "prune_to_macs", "prune_while_training", "ratios_from_sensitivity",
           "register_method", "remove_blocks", "sensitivity", "sensitivity_scores", "slim",
           "smallest_cut", "threshold"]
