"""``imagefolder``: any user data set laid out as class folders, resized to a square.

Uses ``train/``, ``val/`` and ``test/`` when present and carves what is missing out of
the training images (seeded, stratified); a single tree of class folders is split three
ways. Grayscale when every image is (or ``channels=1``), RGB otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from nasprune.data.base import Dataset
from nasprune.data.imagetree import ALL, load_tree
from nasprune.data.registry import register_dataset
from nasprune.data.splits import holdout, three_way_split
from nasprune.errors import NaspruneError


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, in chunks (bounded memory)."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(x), chunk):
        b = x[i : i + chunk].to(torch.float64) / 255.0
        s += b.sum(dim=(0, 2, 3))
        s2 += (b * b).sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


@register_dataset("imagefolder")
def load_imagefolder(root: str | os.PathLike | None = None, seed: int = 0,
                     image_size: int | None = 32, channels: int | None = None,
                     val_fraction: float = 0.1, test_fraction: float = 0.2,
                     flip: bool = True, cache: bool = True,
                     cache_dir: str | os.PathLike | None = None,
                     workers: int | None = None) -> Dataset:
    """Class-folder images (a directory or a tar archive) as train / val / test splits.

    ``image_size``: side of the square the images are resized to (None keeps their size,
    which must then be the same for all); ``channels``: 1, 3 or None (auto);
    ``val_fraction`` / ``test_fraction``: of the training images, used only for the
    splits the tree does not provide; mean/std are measured on the training split.
    """
    if root is None:
        raise NaspruneError("imagefolder needs root= (CLI: --data-dir), the folder of "
                            "class directories")
    if image_size is not None and image_size < 1:
        raise NaspruneError(f"image_size must be positive, got {image_size}")
    name = "imagefolder"
    splits, classes, info = load_tree(Path(root), name, size=image_size, channels=channels,
                                      cache=cache, cache_dir=cache_dir, workers=workers)
    if ALL in splits:
        train, val, test = three_way_split(splits[ALL], val_fraction, test_fraction, seed,
                                           exact=True)
    else:
        train = splits["train"]
        test = splits.get("test")
        val = splits.get("val")
        if test is None:
            train, test = holdout(train, test_fraction, seed, exact=True)
        if val is None:
            train, val = holdout(train, val_fraction, seed + 1, exact=True)
    if len(train) == 0:
        raise NaspruneError(f"no training images left in '{root}' after the splits")
    mean, std = channel_stats(train.x)
    side = train.x.shape[-1]
    return Dataset(name=name, train=train, val=val, test=test,
                   classes=classes, mean=mean, std=std, aug_pad=max(1, side // 8),
                   aug_flip=flip, meta={"format": "imagefolder", **info})
