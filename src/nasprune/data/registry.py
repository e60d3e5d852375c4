"""The data-set registry: ``load_dataset(name, root=None, **kwargs)`` and ``list_datasets``."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

from nasprune.data.base import Dataset
from nasprune.errors import NaspruneError
from nasprune.registry import Registry

DATASETS: Registry[Callable[..., Dataset]] = Registry("data set")


def register_dataset(name: str):
    """Register a loader ``f(root=None, seed=0, **kwargs) -> Dataset``."""
    return DATASETS.register(name)


def load_dataset(name: str, root: str | None = None, seed: int = 0, **kwargs) -> Dataset:
    """Load a registered data set as train / val / test splits (seeded, reproducible)."""
    loader = DATASETS.get(name)
    params = inspect.signature(loader).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            known = sorted(set(params) - {"root", "seed"})
            raise NaspruneError(f"data set '{name}' has no option {', '.join(unknown)}; "
                                f"its options: {', '.join(known) or 'none'}")
    return loader(root=root, seed=seed, **kwargs)


def list_datasets() -> list[str]:
    return DATASETS.names()


def default_root(name: str) -> Path:
    """Where a data set lives when no root is given: ``$NASPRUNE_DATA/<name>`` or ``data/<name>``."""
    return Path(os.environ.get("NASPRUNE_DATA", "data")) / name
