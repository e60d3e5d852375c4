"""An ImageFolder tree read lazily from disk by a torch ``DataLoader`` (worker processes).

The ``imagefolder`` data set decodes every image into memory once: the fast path for
anything that fits. For trees that do not, :func:`folder_loader` reads one split
(``root/<split>/<class>/<image>``) image by image in ``num_workers`` processes and
normalises each exactly as the in-memory loader does, so the same images give the same
batches, scores and losses whichever way they are read. The result is an ordinary
``DataLoader``: pass it (or a :class:`~nasprune.task.Task` of several) to ``fit``,
``evaluate``, ``search`` and the proxy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from nasprune.data.images import decode_one
from nasprune.data.imagetree import SPLIT_DIRS, check_classes, scan_directory
from nasprune.errors import NaspruneError


class FolderImages(torch.utils.data.Dataset):
    """One split of an ImageFolder directory: ``(normalised float image, class index)``.

    Classes are the sorted class folders of ``train/`` (as in the ``imagefolder`` data set);
    ``mean``/``std`` (one value per channel, in [0, 1] units) also fix the channel count:
    one value reads grayscale, three read RGB. ``image_size`` resizes to a square (aspect
    kept, centre crop); None keeps each image's size, which must then be the same for all.
    """

    def __init__(self, root: str | os.PathLike, split: str, mean: Sequence[float],
                 std: Sequence[float], image_size: int | None = None) -> None:
        if len(mean) != len(std) or len(mean) not in (1, 3):
            raise NaspruneError(f"mean and std need 1 (grayscale) or 3 (RGB) values each, got "
                                f"{len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise NaspruneError(f"std values must be positive, got {tuple(std)}")
        if image_size is not None and image_size < 1:
            raise NaspruneError(f"image_size must be positive, got {image_size}")
        if split not in SPLIT_DIRS:
            raise NaspruneError(f"unknown split '{split}': choose from {', '.join(SPLIT_DIRS)}")
        tree, _ = scan_directory(Path(root))
        if split not in tree.splits:
            have = ", ".join(s for s in SPLIT_DIRS if s in tree.splits) or "none"
            raise NaspruneError(f"'{root}' has no {split}/ folder of class directories "
                                f"(splits found: {have})")
        self.classes = check_classes(tree)
        index = {c: i for i, c in enumerate(self.classes)}
        by_class = tree.splits[split]
        self.items: list[tuple[str, int]] = [
            (str(path), index[c]) for c in sorted(by_class) for _, path in by_class[c]]
        self.mode = "L" if len(mean) == 1 else "RGB"
        self.size = image_size
        c = len(mean)
        # The in-memory loader's arithmetic: float32 (x - 255·mean) / (255·std), bit for bit.
        self.mean = torch.tensor(mean).view(c, 1, 1) * 255.0
        self.std = torch.tensor(std).view(c, 1, 1) * 255.0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        try:
            arr, _ = decode_one(path, self.size, self.mode)
        except Exception as e:  # PIL raises many types for damaged files
            raise NaspruneError(f"cannot read image '{path}': {type(e).__name__}: {e}") from e
        x = torch.tensor(arr).permute(2, 0, 1)  # a copy: PIL's array is read-only
        return (x.float() - self.mean) / self.std, label


def folder_loader(root: str | os.PathLike, split: str, mean: Sequence[float],
                  std: Sequence[float], batch_size: int = 128, num_workers: int = 2,
                  shuffle: bool = False, image_size: int | None = None, seed: int = 0,
                  sampler: Any = None, **loader_kw: Any) -> DataLoader:
    """A ``DataLoader`` of ``(images, labels)`` batches read lazily from ``root/<split>/``.

    ``num_workers`` processes decode images (0: in this process); they persist between
    passes, so repeated validation does not restart them. ``shuffle`` draws a seeded order
    each pass; ``sampler`` (indices into the split, class folders sorted, files sorted
    within) fixes one instead. Further keyword arguments go to ``DataLoader``.
    """
    if batch_size < 1:
        raise NaspruneError(f"batch size must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise NaspruneError(f"num_workers must be 0 or more, got {num_workers}")
    images = FolderImages(root, split, mean, std, image_size)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    kw: dict[str, Any] = {"persistent_workers": num_workers > 0}
    kw.update(loader_kw)
    return DataLoader(images, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=num_workers, generator=generator, **kw)
