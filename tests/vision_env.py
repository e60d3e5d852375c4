"""The vision environment's modules, or a clean skip of the whole test module.

torchvision and timm need the torch they were built for, which is not the main
environment's: ``make test`` runs the tests marked ``vision`` in ``.venv-vision``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest
import torch


def vision_modules(*names: str) -> list[ModuleType]:
    """``names`` imported, or the calling test module skipped with the reason."""
    try:
        return [importlib.import_module(n) for n in names]
    # a torchvision built for another torch fails with RuntimeError, not ImportError
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"{', '.join(names)} not usable beside torch {torch.__version__} "
                    f"({type(exc).__name__}); run in the vision environment (make test)",
                    allow_module_level=True)
