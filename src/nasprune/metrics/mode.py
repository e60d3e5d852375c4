"""Run a model in eval mode for a while, then give every module its own flag back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration; each submodule's ``training`` flag is restored afterwards.

    Per module rather than one ``model.train(was_training)``: a model may deliberately keep
    some parts in a different mode (e.g. frozen BatchNorm during fine-tuning).
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
