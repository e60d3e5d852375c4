"""Optimizers by name, each with a learning rate that works out of the box.

``sgd`` is ``torch.optim.SGD`` with the given momentum (0.9 by default, ``momentum=0`` gives
plain SGD); ``momentum`` and ``nesterov`` insist on a non-zero momentum. Weight decay is
applied to conv/linear weights only: decaying BatchNorm γ/β and biases only hurts accuracy
(and would fight the network-slimming L1 penalty on γ).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.registry import Registry
from nasprune.train.checks import check_number


@dataclass(frozen=True)
class OptimizerSpec:
    """How to build one optimizer: its default learning rate and a factory."""

    default_lr: float
    build: Callable[[list[dict], float, float], torch.optim.Optimizer]  # (groups, lr, momentum)


OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer")


def _register(name: str, default_lr: float):
    def deco(build):
        OPTIMIZERS.register(name)(OptimizerSpec(default_lr, build))
        return build

    return deco


def _need_momentum(name: str, momentum: float) -> None:
    if momentum <= 0:
        raise NaspruneError(f"optimizer '{name}' needs momentum > 0, got {momentum}")


@_register("sgd", 0.1)
def _sgd(groups, lr, momentum):
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


@_register("momentum", 0.1)
def _momentum(groups, lr, momentum):
    _need_momentum("momentum", momentum)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


@_register("nesterov", 0.1)
def _nesterov(groups, lr, momentum):
    _need_momentum("nesterov", momentum)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)


@_register("adagrad", 0.01)
def _adagrad(groups, lr, momentum):
    return torch.optim.Adagrad(groups, lr=lr)


@_register("rmsprop", 1e-3)
def _rmsprop(groups, lr, momentum):
    return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)


@_register("adam", 1e-3)
def _adam(groups, lr, momentum):
    return torch.optim.Adam(groups, lr=lr)


@_register("adamw", 1e-3)
def _adamw(groups, lr, momentum):
    return torch.optim.AdamW(groups, lr=lr)


@_register("adadelta", 1.0)
def _adadelta(groups, lr, momentum):
    return torch.optim.Adadelta(groups, lr=lr)


def default_lr(name: str) -> float:
    """The learning rate ``name`` uses when none is given."""
    return OPTIMIZERS.get(name).default_lr


def param_groups(params: Iterable[nn.Parameter] | nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters into decayed (≥ 2-D weights) and not decayed (biases, norm γ/β)."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(name: str, params: Iterable[nn.Parameter] | nn.Module, lr: float | None = None,
                   momentum: float = 0.9, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params`` (a module or an iterable of parameters)."""
    spec = OPTIMIZERS.get(name)
    lr = spec.default_lr if lr is None else lr
    check_number("lr", lr, low=0.0, low_inclusive=False)
    check_number("momentum", momentum, low=0.0, high=1.0)
    check_number("weight_decay", weight_decay, low=0.0)
    groups = param_groups(params, weight_decay)
    if not groups:
        raise NaspruneError("the model has no trainable parameters")
    return spec.build(groups, float(lr), float(momentum))

