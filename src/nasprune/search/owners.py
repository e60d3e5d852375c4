"""Which channel groups own each layer of a model, for the analytic cost model.

:class:`Owners` maps a layer name to the group setting its output channels, the groups
feeding its inputs and those its other per-channel parameters (BatchNorm, ...) follow.
"""

from __future__ import annotations

from torch import nn

from nasprune.metrics.counted import is_counted
from nasprune.pruning.graph import ChannelGroup


class Owners:
    """Which groups own each layer: its outputs, its inputs, its other parameters."""

    def __init__(self, groups: list[ChannelGroup]) -> None:
        self.out_of: dict[str, int] = {}
        self.in_of: dict[str, list[int]] = {}
        self.other_of: dict[str, list[int]] = {}
        for gi, g in enumerate(groups):
            for n in g.out_layers:
                self.out_of.setdefault(n, gi)
            for n in g.in_layers:
                self.in_of.setdefault(n, []).append(gi)
            for n in g.other_layers:
                self.other_of.setdefault(n, []).append(gi)

    def controlling(self, name: str) -> list[int]:
        """Groups whose width sets a module's per-channel size (other layers first)."""
        return self.other_of.get(name, []) + ([self.out_of[name]] if name in self.out_of else [])


def unused_params(model: nn.Module, ran: set[int], seen: set[int]) -> dict[str, int]:
    """Parameters of counted modules that never ran (they stay as they are), by module."""
    found: dict[str, int] = {}
    for n, m in model.named_modules():
        if is_counted(m) and id(m) not in ran:
            for p in m.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    found[n] = found.get(n, 0) + p.numel()
    return found


__all__ = ["Owners", "unused_params"]
