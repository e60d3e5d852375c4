"""Adaptive BatchNorm: re-estimate running statistics after pruning (EagleEye's trick).

A freshly pruned network keeps the BatchNorm statistics of the unpruned one, which no longer
match its activations; a few forward passes in train mode fix that and make the accuracy of
a candidate a fair proxy of what fine-tuning would reach.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasprune.task import Forward, default_forward, to_device


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, batches: int = 20,
                   forward: Forward = default_forward) -> None:
    """Reset BN running stats and re-estimate them on ``batches`` batches; ends in eval mode.

    Only BatchNorm layers switch to train mode (dropout stays off), and ``momentum=None``
    makes the estimate a plain cumulative average over the batches seen. ``forward``
    feeds one batch to the model (a task's routing; default: tensors, pairs, dicts).
    """
    bns = batchnorm_layers(model)
    model.eval()
    if not bns or batches <= 0:
        return
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            forward(model, to_device(batch, device))
    finally:
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum
        model.eval()
