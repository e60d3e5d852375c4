"""Experiments: every compression method at one budget on one trained model, compared.

``experiment(config, out_dir)`` runs (or resumes) a comparison and writes ``results.json``,
``results.csv``, ``results.md``, ``plots/*.png`` and ``report.html`` (rendered by
:mod:`nasprune.report`); ``register_method`` adds a method.
"""

from __future__ import annotations

from nasprune._callable_module import make_callable
from nasprune.experiment.config import (
    ExperimentConfig,
    bundled_configs,
    load_experiment_config,
)
from nasprune.experiment.runner import ExperimentResult, experiment, load_result
from nasprune.methods import METHODS, Context, Pruned, register_method

__all__ = ["METHODS", "Context", "ExperimentConfig", "ExperimentResult", "Pruned",
           "bundled_configs", "experiment", "load_experiment_config", "load_result",
           "register_method"]

make_callable(__name__, experiment)
