"""nasprune: automated neural-network pruning driven by neural architecture search.

The public API (see README). Names resolve lazily so ``import nasprune`` stays fast and
the CLI starts quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

from nasprune.errors import NaspruneError

__version__ = "0.1.0"

_API: dict[str, str] = {
    "create_model": "nasprune.models",
    "list_models": "nasprune.models",
    "register_model": "nasprune.models",
    "load_dataset": "nasprune.data",
    "list_datasets": "nasprune.data",
    "fit": "nasprune.train",
    "finetune": "nasprune.train",
    "evaluate": "nasprune.metrics",
    "prune": "nasprune.pruning",
    "save": "nasprune.checkpoint",
    "load": "nasprune.checkpoint",
    "export": "nasprune.checkpoint",
    "search": "nasprune.search",
    "Budget": "nasprune.search",
    "experiment": "nasprune.experiment",
    "Task": "nasprune.task",
}

__all__ = ["NaspruneError", "__version__", *_API]


# Subpackages reachable as attributes after a plain ``import nasprune``
# (``nasprune.pruning.groups(...)``), imported on first use.
_SUBPACKAGES = {"checkpoint", "data", "experiment", "methods", "metrics", "models", "pruning",
                "report", "search", "task", "train"}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'nasprune' has no attribute '{name}'")
