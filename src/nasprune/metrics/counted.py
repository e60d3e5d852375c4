"""The layers the cost convention counts, and the batch-1 forward pass that sees them.

Shared by :mod:`nasprune.metrics.cost` (counting a real model) and
:mod:`nasprune.search.costmodel` (the analytic model the search uses), so both hook the
same modules and run the same pass — which is what keeps their numbers equal.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from nasprune.pruning.surgery import is_conv1d

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
LINEAR = (nn.Linear,)
MHA = (nn.MultiheadAttention,)
COUNTED = CONV + CONV_T + LINEAR + MHA


def is_counted(m: nn.Module) -> bool:
    """A layer the cost formulas count: conv, transposed conv, linear (Hugging Face's
    ``Conv1D`` too: a linear layer with its weight stored ``(in, out)``) or attention."""
    return isinstance(m, COUNTED) or is_conv1d(m)


def linear_dims(m: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of an ``nn.Linear`` or a ``Conv1D``."""
    return (m.nx, m.nf) if is_conv1d(m) else (m.in_features, m.out_features)


def first_sample(x: Any) -> Any:
    """Cut every tensor in ``x`` (tensor, tuple/list, dict) down to its first batch entry."""
    if isinstance(x, torch.Tensor):
        return x[:1] if x.dim() > 0 else x
    if isinstance(x, (list, tuple)):
        return type(x)(first_sample(v) for v in x)
    if isinstance(x, dict):
        return {k: first_sample(v) for k, v in x.items()}
    return x


def forward(model: nn.Module, example_inputs: Any, slice_batch: bool = True) -> Any:
    """``model`` on ``example_inputs`` (cut to batch 1 unless ``slice_batch`` is False)."""
    x = first_sample(example_inputs) if slice_batch else example_inputs
    if isinstance(x, dict):
        return model(**x)
    if isinstance(x, (list, tuple)):
        return model(*x)
    return model(x)


def counted_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of every counted module, skipping those inside attention.

    An ``nn.MultiheadAttention``'s out_proj runs through ``F.multi_head_attention_forward``
    and is counted by the attention formula: never count it twice.
    """
    inside_mha: set[int] = set()
    for mha in model.modules():
        if isinstance(mha, MHA):
            inside_mha.update(id(s) for s in mha.modules() if s is not mha)
    for name, m in model.named_modules():
        if is_counted(m) and id(m) not in inside_mha:
            yield name, m


def mha_rows(m: nn.MultiheadAttention, args: tuple, kwargs: dict) -> tuple[int, int, int, int]:
    """Query, key and value rows (batch · length, whatever the layout) and the batch size."""

    def arg(i: int, key: str) -> torch.Tensor:
        return args[i] if len(args) > i else kwargs[key]

    def rows(t: torch.Tensor) -> int:
        return t.numel() // t.shape[-1]

    q, k, v = arg(0, "query"), arg(1, "key"), arg(2, "value")
    batch = 1 if q.dim() == 2 else q.shape[0 if m.batch_first else 1]
    return rows(q), rows(k), rows(v), batch


__all__ = ["CONV", "CONV_T", "COUNTED", "LINEAR", "MHA", "counted_modules", "first_sample",
           "forward", "is_conv1d", "is_counted", "linear_dims", "mha_rows"]
