"""The experiment's reference and one-knob baselines: ``unpruned``, ``uniform``, ``global``.

``uniform`` gives every group one ratio, ``global`` ranks all channels together
(group-normalised importance); each knob is bisected to the largest MACs within the budget.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

from torch import nn

from nasprune.methods.registry import (
    Context,
    Pruned,
    macs_of,
    ratios_of,
    register_method,
    smallest_cut,
)


@register_method("unpruned")
def unpruned(ctx: Context) -> Pruned:
    """The reference: the trained model itself, not fine-tuned further."""
    return Pruned(copy.deepcopy(ctx.model), finetune=False,
                  info={"note": "the trained model as is (no pruning, no fine-tuning)"})


def _one_knob(ctx: Context, prune_at: Callable[[float], nn.Module], knob: str,
              what: str) -> Pruned:
    """Structured pruning steered by one number, bisected to the MACs budget."""
    start = time.perf_counter()

    def make(r: float) -> tuple[nn.Module, float]:
        m = prune_at(r)
        return m, float(macs_of(m, ctx.example))

    model, value = smallest_cut(make, ctx.target_macs, 0.0, 0.95, steps=14, what=what)
    return Pruned(model, search_seconds=time.perf_counter() - start,
                  info={knob: value, "ratios": ratios_of(model)})


@register_method("uniform")
def uniform(ctx: Context) -> Pruned:
    """One ratio for every group, bisected to the largest MACs within the budget."""
    return _one_knob(ctx, ctx.prune, "ratio", "uniform pruning")


@register_method("global")
def global_method(ctx: Context) -> Pruned:
    """One global channel ranking; the global fraction bisected to the budget."""
    return _one_knob(ctx, lambda r: ctx.prune("global", global_target=r), "global_fraction",
                     "global pruning")


__all__ = ["global_method", "uniform", "unpruned"]
