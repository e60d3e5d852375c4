"""Model zoo: every model is registered by name and built with ``create_model``."""

from __future__ import annotations

from nasprune.models import small  # noqa: F401  (registers)
from nasprune.models.registry import MODELS, create_model, list_models, register_model

__all__ = ["MODELS", "create_model", "list_models", "register_model"]
