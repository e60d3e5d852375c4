"""The proxy's fixed batches: drawn once, in the layout candidates run in, their size.

Helpers of :class:`nasprune.search.proxy.Proxy`, kept apart so the proxy reads as what it
scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def accepts_nhwc(model: nn.Module, batch: Any, example: Any) -> bool:
    """Whether a task's candidates can run in NHWC: its batches are ``(4-D float images,
    ...)`` and the model takes them in that layout (one that ``.view()`` s a conv output
    does not: channels-last outputs are not contiguous)."""
    if not (isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor)
            and batch[0].dim() == 4 and batch[0].is_floating_point()
            and isinstance(example, torch.Tensor) and example.dim() == 4):
        return False
    import copy

    # A copy in NHWC, as candidates run: the user's model keeps its layout and mode.
    trial = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    device = next((p.device for p in trial.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            trial(example.to(device).contiguous(memory_format=torch.channels_last))
        return True
    except RuntimeError:
        return False


def nbytes(batches: list) -> int:
    """Bytes held by the tensors of ``batches``."""
    total = 0
    stack = list(batches)
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def head(batches: list, size: int, exact: bool) -> tuple[list, int]:
    """The batches from the start of ``batches`` holding ``size`` samples, and their count.

    ``exact``: the last batch is cut to make exactly ``size`` (a built-in data set's seeded
    subset, whose first ``size`` samples are the subset of that size); otherwise whole
    batches until at least ``size`` (as a task's validation batches are drawn).
    """
    from nasprune.task import batch_len

    out: list = []
    count = 0
    for batch in batches:
        if count >= size:
            break
        n = batch_len(batch)
        if exact and count + n > size:
            batch, n = _cut(batch, size - count), size - count
        out.append(batch)
        count += n
    return out, count


def _cut(batch: Any, n: int) -> Any:
    """The first ``n`` samples of a tensor, tuple/list or dict batch."""
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, dict):
        return {k: _cut(v, n) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_cut(v, n) for v in batch)
    return batch


def to_channels_last(batches: list) -> list:
    """``(x, y)`` batches with a 4-D ``x`` in NHWC memory layout (others as they are)."""
    return [(b[0].contiguous(memory_format=torch.channels_last), *b[1:])
            if isinstance(b, (tuple, list)) and isinstance(b[0], torch.Tensor)
            and b[0].dim() == 4 else b for b in batches]
