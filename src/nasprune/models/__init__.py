"""Model zoo: every model is registered by name and built with ``create_model``."""

from __future__ import annotations

# Importing a family's module registers its models.
from nasprune.models import (  # noqa: F401
    alexnet,
    mobilenetv2,
    resnet18,
    resnet_cifar,
    small,
    unet,
    vgg,
)
from nasprune.models.registry import MODELS, create_model, list_models, register_model

__all__ = ["MODELS", "create_model", "list_models", "register_model"]
