"""Sparsity schedules for gradual pruning: how far along the way to the target each step is.

``SPARSITY_SCHEDULES`` names them (``schedule="cubic"`` in
:func:`~nasprune.methods.gradual.iterative_prune` and ``prune_while_training``).
"""

from __future__ import annotations

from collections.abc import Callable

from nasprune.errors import NaspruneError
from nasprune.registry import Registry

SPARSITY_SCHEDULES: Registry[Callable[[int, int, float, float], float]] = Registry(
    "sparsity schedule"
)


def _progress(step: int, total: int) -> float:
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise NaspruneError(f"total steps must be a positive integer, got {total!r}")
    return min(max(step / total, 0.0), 1.0)


@SPARSITY_SCHEDULES.register("cubic")
def cubic_schedule(step: int, total: int, initial: float, final: float) -> float:
    """Zhu & Gupta's ``s_t = s_f + (s_i − s_f)(1 − t/n)³``: fast early, gentle near the end.

    ``step`` is clamped to ``[0, total]``, so the value is ``initial`` at 0 and ``final`` from
    ``total`` on.
    """
    return final + (initial - final) * (1.0 - _progress(step, total)) ** 3


@SPARSITY_SCHEDULES.register("linear")
def linear_schedule(step: int, total: int, initial: float, final: float) -> float:
    """Equal increments from ``initial`` (step 0) to ``final`` (step ``total``)."""
    return initial + (final - initial) * _progress(step, total)


__all__ = ["SPARSITY_SCHEDULES", "cubic_schedule", "linear_schedule"]
