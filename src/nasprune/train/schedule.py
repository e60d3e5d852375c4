"""Learning-rate schedules by name, stepped once per optimizer step (not per epoch).

Each schedule is a multiplier ``f(step, total) -> float`` on the base learning rate, wrapped
in a ``LambdaLR`` so it composes with any optimizer and resumes like any torch scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from nasprune.registry import Registry
from nasprune.train.checks import check_int, check_number

Multiplier = Callable[[int, int], float]

SCHEDULES: Registry[Multiplier] = Registry("schedule")

# One-cycle shape as in torch's OneCycleLR defaults (Smith & Topin): warm up for 30 % of the
# steps from lr/25 to lr, then cosine-anneal to lr/(25·10⁴).
ONECYCLE_WARMUP = 0.3
ONECYCLE_START = 1.0 / 25.0
ONECYCLE_END = ONECYCLE_START / 1e4


@SCHEDULES.register("constant")
def constant(step: int, total: int) -> float:
    return 1.0


@SCHEDULES.register("step")
def step_decay(step: int, total: int) -> float:
    """×0.1 at 50 % and again at 75 % of training (the classic CIFAR recipe)."""
    t = step / max(total, 1)
    return 1.0 if t < 0.5 else 0.1 if t < 0.75 else 0.01


@SCHEDULES.register("cosine")
def cosine(step: int, total: int) -> float:
    """Half a cosine from 1 to 0 over ``total`` steps."""
    t = min(step / max(total, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _cos_interp(a: float, b: float, t: float) -> float:
    return b + (a - b) * 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


@SCHEDULES.register("onecycle")
def onecycle(step: int, total: int) -> float:
    """Cosine warm-up to the peak at 30 % of the steps, then cosine annealing to ~0."""
    peak = max(int(ONECYCLE_WARMUP * total), 1)
    if step < peak:
        return _cos_interp(ONECYCLE_START, 1.0, step / peak)
    return _cos_interp(1.0, ONECYCLE_END, (step - peak) / max(total - peak, 1))


def make_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int,
                  lr: float | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler for ``optimizer`` over ``total_steps`` steps.

    ``lr`` (optional) resets every parameter group's base learning rate first.
    """
    fn = SCHEDULES.get(name)
    total = check_int("total_steps", total_steps, low=1)
    if lr is not None:
        check_number("lr", lr, low=0.0, low_inclusive=False)
        for group in optimizer.param_groups:
            group["lr"] = float(lr)
            group.pop("initial_lr", None)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: fn(s, total))
