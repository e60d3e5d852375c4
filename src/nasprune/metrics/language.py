"""Perplexity as a task score for language models (negated, so higher is better)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nasprune.errors import NaspruneError
from nasprune.task import targets_of


def _tokens(labels: torch.Tensor, shift: bool) -> torch.Tensor:
    """The labels that are predicted: one position on when the model shifts them."""
    return labels[..., 1:] if shift else labels


def _nll_and_count(out: Any, batch: Any, shift: bool, ignore_index: int) -> tuple[float, int]:
    """Summed token negative log-likelihood of one batch and the tokens it covers."""
    labels = targets_of(batch)
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if logits is None and isinstance(out, dict):
        logits = out.get("logits")
    if isinstance(logits, torch.Tensor):
        if shift:
            logits = logits[..., :-1, :]
        tokens = _tokens(labels, shift).to(logits.device)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens.reshape(-1),
                              ignore_index=ignore_index, reduction="sum")
        return float(nll), int((tokens != ignore_index).sum())
    own = getattr(out, "loss", None)
    if own is None and isinstance(out, dict):
        own = out.get("loss")
    if not isinstance(own, torch.Tensor):
        raise NaspruneError("perplexity needs outputs with logits (and labels in the batch) "
                            "or a .loss")
    # The model's loss is a mean over its predicted tokens: weight it by their number.
    count = int((_tokens(labels, shift) != ignore_index).sum())
    return float(own) * count, count


def negative_perplexity(outputs: Sequence[Any], batches: Sequence[Any], *, shift: bool = False,
                        ignore_index: int = -100) -> float:
    """``-exp(mean token NLL)`` over all batches (a task score with ``maximize=True``).

    From logits ``(N, T, V)`` against labels ``(N, T)`` when the outputs carry logits, else
    from each output's ``.loss`` weighted by its token count. Labels equal to
    ``ignore_index`` (padding) are skipped. Hugging Face causal LMs predict the *next*
    token: pass ``shift=True`` (``functools.partial``) so logits at position t meet label
    t + 1, as their own loss does.
    """
    total, count = 0.0, 0
    for out, batch in zip(outputs, batches, strict=True):
        nll, n = _nll_and_count(out, batch, shift, ignore_index)
        total += nll
        count += n
    if count == 0:
        raise NaspruneError("perplexity: no tokens to score (all labels ignored?)")
    return -math.exp(total / count)
