"""Experiments and reports: compare compression methods at one budget, tables, plots, HTML.

``experiment(config, out_dir)`` runs (or resumes) a comparison and writes ``results.json``,
``results.csv``, ``results.md``, ``plots/*.png`` and ``report.html``; ``write_report``
redraws the plots and the HTML of a finished run; ``register_method`` adds a method.
"""

from __future__ import annotations

from nasprune.report.config import ExperimentConfig, bundled_configs, load_experiment_config
from nasprune.report.experiment import ExperimentResult, experiment, load_result
from nasprune.report.html import write_report
from nasprune.report.methods import METHODS, Context, Pruned, register_method
from nasprune.report.plots import make_plots

__all__ = ["METHODS", "Context", "ExperimentConfig", "ExperimentResult", "Pruned",
           "bundled_configs", "experiment", "load_experiment_config", "load_result",
           "make_plots", "register_method", "write_report"]
