"""Argument checks of the training functions: those of :mod:`nasprune.validate`, and
:func:`check_fit_args` for ``fit``.

Kept as a module so ``from nasprune.train.checks import check_int, check_number`` still works.
"""

from __future__ import annotations

from nasprune.errors import NaspruneError
from nasprune.validate import check_int, check_number


def check_fit_args(model, data, epochs, optimizer, lr, momentum, weight_decay, schedule,
                   label_smoothing, batch_size, seed, bn_l1, teacher, kd_temperature,
                   kd_weight, max_steps, callbacks) -> None:
    """The arguments of ``fit``: one clear NaspruneError for the first bad one."""
    from torch import nn

    from nasprune.train.optim import OPTIMIZERS  # late: optim imports this module
    from nasprune.train.schedule import SCHEDULES

    if not isinstance(model, nn.Module):
        raise NaspruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_int("epochs", epochs, low=0)
    check_int("batch_size", batch_size, low=1)
    check_int("seed", seed, low=0)
    OPTIMIZERS.get(optimizer)
    SCHEDULES.get(schedule)
    if lr is not None:
        check_number("lr", lr, low=0.0, low_inclusive=False)
    check_number("momentum", momentum, low=0.0, high=1.0)
    check_number("weight_decay", weight_decay, low=0.0)
    check_number("label_smoothing", label_smoothing, low=0.0, high=1.0)
    check_number("bn_l1", bn_l1, low=0.0)
    check_number("kd_temperature", kd_temperature, low=0.0, low_inclusive=False)
    kd = check_number("kd_weight", kd_weight, low=0.0)
    if kd > 1.0:
        raise NaspruneError(f"kd_weight must be ≤ 1, got {kd_weight!r}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise NaspruneError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    if max_steps is not None:
        check_int("max_steps", max_steps, low=1)
    if callbacks is not None and not all(callable(cb) for cb in callbacks):
        raise NaspruneError("callbacks must be callables cb(epoch, model, record)")


__all__ = ["check_fit_args", "check_int", "check_number"]
