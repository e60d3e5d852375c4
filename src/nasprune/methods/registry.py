"""The experiment-method registry: what a method gets (:class:`Context`), what it returns
(:class:`Pruned`), ``METHODS`` and ``register_method``, and the helpers methods share.

A method takes the trained unpruned model (never modified) and returns a compressed copy;
the experiment runner then gives every copy the same fine-tuning and measures it. The
methods themselves live beside what they run (:mod:`nasprune.methods.baselines`,
``magnitude``, ``blocks``, ``sensitivity``, ``slimming``, ``nas``); importing
:mod:`nasprune.methods` registers them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.registry import Registry


@dataclass
class Context:
    """What a method gets: the config, its own settings, the trained model and the data."""

    cfg: Any  # ExperimentConfig
    spec: Any  # MethodSpec
    data: Any  # nasprune Dataset
    model: nn.Module  # the trained unpruned model: read only
    example: torch.Tensor
    base_macs: int
    seed: int
    device: torch.device
    work: Path  # scratch directory kept across interrupted runs of this method
    progress: bool = True

    @property
    def settings(self) -> Any:
        return self.spec.settings

    @property
    def target_macs(self) -> float:
        """The budget as an absolute MAC count."""
        return self.cfg.budget * self.base_macs

    def prune(self, ratios: Any, **kw: Any) -> nn.Module:
        """``nasprune.prune`` with the experiment's criterion and rounding."""
        from nasprune.pruning import prune

        kw.setdefault("criterion", self.cfg.criterion)
        kw.setdefault("round_to", self.cfg.round_to)
        return prune(self.model, self.example, ratios, data=self.data, **kw)


@dataclass
class Pruned:
    """A method's compressed model and what it cost to find it."""

    model: nn.Module
    search_seconds: float = 0.0  # analysis / search / bisection time
    extra_train_seconds: float = 0.0  # training besides the common fine-tuning
    finetune: bool = True  # False only for the unpruned reference
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able: ratios, notes
    artifacts: dict[str, Any] = field(default_factory=dict)  # written as <name>.json


Method = Callable[[Context], Pruned]
METHODS: Registry[Method] = Registry("experiment method")


def register_method(name: str) -> Callable[[Method], Method]:
    """Register ``fn(ctx) -> Pruned`` as the experiment method ``name``."""
    return METHODS.register(name)


def macs_of(model: nn.Module, example: torch.Tensor) -> int:
    """Dense MACs of ``model`` on ``example``."""
    from nasprune.metrics import count_macs

    return count_macs(model, example)


def ratios_of(model: nn.Module) -> dict[str, float] | None:
    """The per-group ratios ``prune`` recorded on ``model``, if any (for a method's info)."""
    info = getattr(model, "nasprune_pruning", None)
    ratios = info.get("ratios") if isinstance(info, dict) else None
    return {k: float(v) for k, v in ratios.items()} if isinstance(ratios, dict) else None


def smallest_cut(make: Callable[[float], tuple[Any, float]], limit: float, lo: float,
                   hi: float, steps: int = 16, what: str = "") -> tuple[Any, float]:
    """The smallest knob in ``[lo, hi]`` whose cost is ≤ ``limit`` (cost falls as it grows).

    ``make(knob) -> (model, cost)``; returns ``(model, knob)``. Raises NaspruneError when even
    ``hi`` costs too much.
    """
    best, cost = make(hi)
    if cost > limit:
        raise NaspruneError(f"{what} cannot reach the budget: at {hi:.3f} the model still has "
                            f"{cost:,.0f} MACs, the budget is {limit:,.0f}")
    first, cost_lo = make(lo)
    if cost_lo <= limit:
        return first, lo
    knob = hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        m, c = make(mid)
        if c <= limit:
            hi, best, knob = mid, m, mid
        else:
            lo = mid
    return best, knob


__all__ = ["METHODS", "Context", "Method", "Pruned", "macs_of", "ratios_of", "register_method",
           "smallest_cut"]
