"""The sparsity ramp of :func:`nasprune.methods.gradual.prune_while_training`.

A ``fit`` callback that raises the weight sparsity one schedule step at the end of each
epoch in a window, holding a step back (adaptive) while validation got worse; and the check
of the window's arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.unstructured import mask_smallest


def check_fraction(name: str, value: Any, high_inclusive: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok:
        ok = 0.0 < value <= 1.0 if high_inclusive else 0.0 <= value < 1.0
    if not ok:
        interval = "(0, 1]" if high_inclusive else "[0, 1)"
        raise NaspruneError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def check_count(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise NaspruneError(f"{name} must be an integer ≥ {low}, got {value!r}")
    return value


def training_window(target_sparsity: Any, epochs: Any, start_epoch: Any, end_epoch: Any,
                     steps: Any, tolerance: Any) -> tuple[float, int, int, int]:
    """Checked ``(target, start_epoch, end_epoch, steps)`` for :func:`prune_while_training`."""
    target = check_fraction("target_sparsity", target_sparsity)
    epochs = check_count("epochs", epochs)
    start_epoch = check_count("start_epoch", start_epoch)
    if end_epoch is None:
        end_epoch = max(start_epoch, epochs - 1)
    end_epoch = check_count("end_epoch", end_epoch)
    if not (start_epoch <= end_epoch <= epochs):
        raise NaspruneError(f"need start_epoch ≤ end_epoch ≤ epochs, got {start_epoch}, "
                            f"{end_epoch}, {epochs}")
    window = end_epoch - start_epoch + 1
    steps = check_count("steps", -(-window // 2) if steps is None else steps)
    if steps > window:
        raise NaspruneError(f"{steps} sparsity steps do not fit in epochs {start_epoch}.."
                            f"{end_epoch} (one step per epoch at most)")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise NaspruneError(f"tolerance must be a number ≥ 0, got {tolerance!r}")
    return target, start_epoch, end_epoch, steps


@dataclass
class SparsityRamp:
    """The ``fit`` callback of :func:`prune_while_training`: one step up per epoch, or held."""

    history: list[dict[str, Any]]
    sched: Callable[[int, int, float, float], float]
    target: float
    steps: int
    start_epoch: int
    end_epoch: int
    adaptive: bool
    tolerance: float
    scope: str
    layers: Iterable[str | nn.Module] | None
    maximize: bool = True  # the direction of a task's score (top-1: higher is better)
    advances: int = 0
    ref: float | None = None  # val accuracy (or task score) just before the last increment
    sparsity: float = 0.0

    def __call__(self, epoch: int, m: nn.Module, record: dict) -> None:
        val, key = record.get("val_acc"), "val_acc"
        if val is None and record.get("val_score") is not None:
            val, key = record["val_score"], "val_score"  # a task's score
        entry = {"epoch": epoch, "sparsity": self.sparsity, key: val, "held": False}
        self.history.append(entry)
        if epoch < self.start_epoch or self.advances >= self.steps:
            return
        spare = (self.end_epoch - epoch + 1) - (self.steps - self.advances)
        if (self.adaptive and spare > 0 and val is not None and self.ref is not None
                and self._worse(val)):
            entry["held"] = True
            return
        self.advances += 1
        self.ref = val
        goal = self.sched(self.advances, self.steps, 0.0, self.target)
        self.sparsity = mask_smallest(m, sparsity=goal, scope=self.scope,
                                      layers=self.layers).sparsity
        entry["pruned_to"] = self.sparsity

    def _worse(self, val: float) -> bool:
        """More than ``tolerance`` worse than before the last increment."""
        ref = float(self.ref)  # type: ignore[arg-type]  # set by the first increment
        return val < ref - self.tolerance if self.maximize else val > ref + self.tolerance


__all__ = ["SparsityRamp", "check_count", "check_fraction", "training_window"]
