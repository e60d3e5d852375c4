"""The digits as token sequences: real data for sequence models (transformers) without a
download.

Each 8×8 image becomes 65 token ids — a CLS token, then one token per pixel, row by row,
naming the pixel's position and intensity (0..16) — and batches are dicts ``{"input_ids", "attention_mask", "labels"}`` as a
Hugging Face model takes them. The train / val / test split is exactly that of
``load_dataset("digits")`` with the same seed and fractions, so results compare directly.
This module imports nothing from ``transformers``.
"""

from __future__ import annotations

import torch

from nasprune.data.digits import load_digits
from nasprune.errors import NaspruneError
from nasprune.task import Task

PAD_ID = 0
CLS_ID = 1
PIXEL_OFFSET = 2  # intensity v (0..16) of pixel p (0..63) is token id 2 + 17·p + v
LEVELS = 17
PIXELS = 64
VOCAB_SIZE = PIXEL_OFFSET + PIXELS * LEVELS
SEQ_LEN = 1 + PIXELS


def digit_tokens(images: torch.Tensor) -> torch.Tensor:
    """``(N, 65)`` token ids of digits images stored as uint8 0..255 (``(N, 1, 8, 8)``).

    The built-in data set scaled 0..16 by 255/16 and rounded; rounding back recovers the
    original intensities exactly (the steps are ~16 apart). A token names its pixel as
    well as the intensity, so one embedding carries both: a small transformer learns the
    digits in a few epochs (intensity tokens alone leave it to learn position × intensity
    interactions, many times slower).
    """
    levels = (images.reshape(images.shape[0], -1).double() * (16.0 / 255.0)).round().long()
    if levels.shape[1] != PIXELS:
        raise NaspruneError(f"expected 8×8 digits images, got shape {tuple(images.shape[1:])}")
    ids = PIXEL_OFFSET + torch.arange(PIXELS) * LEVELS + levels
    cls = torch.full((images.shape[0], 1), CLS_ID, dtype=torch.long)
    return torch.cat([cls, ids], dim=1)


def _batches(ids: torch.Tensor, labels: torch.Tensor, batch_size: int,
             order: torch.Tensor | None = None) -> list[dict[str, torch.Tensor]]:
    if order is not None:
        ids, labels = ids[order], labels[order]
    mask = torch.ones_like(ids)
    return [{"input_ids": ids[i:i + batch_size], "attention_mask": mask[i:i + batch_size],
             "labels": labels[i:i + batch_size]} for i in range(0, len(ids), batch_size)]


def token_digits(batch_size: int = 64, seed: int = 0, val_fraction: float = 0.15,
                 test_fraction: float = 0.2) -> Task:
    """A :class:`~nasprune.task.Task` of lists of dict batches over the digits as tokens.

    Training batches are shuffled once (seeded by ``seed``); validation and test batches
    keep the split's order. Vocabulary: ``VOCAB_SIZE`` ids (``PAD_ID``, ``CLS_ID``, then
    17 intensities for each of the 64 pixels); every sequence is ``SEQ_LEN`` tokens with a full attention mask.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NaspruneError(f"batch_size must be a positive integer, got {batch_size!r}")
    data = load_digits(seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    splits = {}
    for name in ("train", "val", "test"):
        s = data.split(name)
        splits[name] = _batches(digit_tokens(s.x), s.y.long(), batch_size,
                                order if name == "train" else None)
    return Task(**splits, name="digits-tokens", num_classes=data.num_classes)


__all__ = ["CLS_ID", "LEVELS", "PAD_ID", "PIXELS", "PIXEL_OFFSET", "SEQ_LEN", "VOCAB_SIZE", "digit_tokens",
           "token_digits"]
