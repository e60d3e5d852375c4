"""The model registry: ``@register_model("name")``, ``create_model``, ``list_models``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from nasprune.errors import NaspruneError
from nasprune.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory ``f(num_classes=..., in_channels=..., **kwargs) -> nn.Module``."""
    return MODELS.register(name)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a registered model; the name and arguments are kept on the module for saving."""
    factory = MODELS.get(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise NaspruneError(f"num_classes must be an integer ≥ 2, got {num_classes!r}")
    if in_channels not in (1, 3):
        raise NaspruneError(f"in_channels must be 1 or 3, got {in_channels!r}")
    model = factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
    # Recorded so save()/load() can rebuild the family without pickling anything.
    model.nasprune_arch = {  # type: ignore[attr-defined]
        "name": name,
        "kwargs": {"num_classes": num_classes, "in_channels": in_channels, **kwargs},
    }
    return model


def list_models() -> list[str]:
    return MODELS.names()
