"""Segmentation of scikit-learn's digits: real 8×8 images, masks derived from the pixels.

No hand-drawn masks exist for these images, so they are derived honestly and
reproducibly: a pixel is foreground when its raw intensity is at least 8 of 16 (half the
scale; uint8 ≥ 128 after the loader's ×255/16 scaling), and a foreground pixel's class is
the image's digit label + 1; background is class 0. That makes an 11-class problem
(background + ten digits): a model must find the stroke *and* recognise the digit.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from nasprune.data.base import Dataset, Split
from nasprune.data.digits import load_digits
from nasprune.errors import NaspruneError
from nasprune.task import Task

# Raw digits intensities run 0..16; half the scale, in the uint8 units of the splits.
FOREGROUND_UINT8 = 128
NUM_CLASSES = 11  # background + digits 0..9


def stroke_masks(split: Split) -> torch.Tensor:
    """``(N, H, W)`` int64 masks: 0 background, digit + 1 on the stroke (uint8 ≥ 128)."""
    foreground = split.x[:, 0] >= FOREGROUND_UINT8
    return torch.where(foreground, split.y[:, None, None] + 1, 0).long()


def _batches(data: Dataset, split: str, batch_size: int, shuffle: bool,
             seed: int) -> DataLoader:
    s = data.split(split)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1) * 255.0
    std = torch.tensor(data.std).view(1, -1, 1, 1) * 255.0
    images = (s.x.float() - mean) / std  # the built-in loader's normalisation
    return DataLoader(TensorDataset(images, stroke_masks(s)), batch_size=batch_size,
                      shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed) if shuffle else None)


def segmentation_digits(seed: int = 0, batch_size: int = 64, val_fraction: float = 0.15,
                        test_fraction: float = 0.2) -> Task:
    """An 11-class segmentation :class:`~nasprune.task.Task` on the digits images.

    Same train / val / test split as ``load_dataset("digits", seed=seed)`` and the same
    normalisation; batches are ``(images (N, 1, 8, 8) float, masks (N, 8, 8) long)``,
    training batches shuffled (seeded). The score is mIoU over the 11 classes; the default
    loss (pixel-wise cross-entropy) applies.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise NaspruneError(f"batch_size must be a positive integer, got {batch_size!r}")
    from nasprune.metrics.segmentation import miou  # lazy: keeps `import nasprune.data` light

    data = load_digits(seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    return Task(train=_batches(data, "train", batch_size, True, seed),
                val=_batches(data, "val", batch_size, False, seed),
                test=_batches(data, "test", batch_size, False, seed),
                score=miou(NUM_CLASSES), name="segmentation-digits", num_classes=NUM_CLASSES)
