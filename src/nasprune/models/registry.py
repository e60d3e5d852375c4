"""The model registry: ``@register_model("name")``, ``create_model``, ``list_models``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from nasprune.errors import NaspruneError
from nasprune.registry import Registry, did_you_mean

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
    _check_options(name, factory, kwargs)
    model = factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
    # Recorded so save()/load() can rebuild the family without pickling anything.
    model.nasprune_arch = {  # type: ignore[attr-defined]
        "name": name,
        "kwargs": {"num_classes": num_classes, "in_channels": in_channels, **kwargs},
    }
    return model


def _check_options(name: str, factory: Callable[..., nn.Module], kwargs: dict) -> None:
    """Unknown keyword options are a user error naming the valid ones, not a TypeError."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no introspectable signature: let the call decide
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and k not in ("num_classes", "in_channels")]
    for key in kwargs:
        if key not in valid:
            hint = did_you_mean(key, valid) if valid else "it takes no options"
            raise NaspruneError(f"model '{name}' has no option '{key}': {hint}")


def list_models() -> list[str]:
    return MODELS.names()
