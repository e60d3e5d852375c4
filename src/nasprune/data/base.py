"""In-memory splits and a fast batch loader.

A split is one uint8 tensor ``(N, C, H, W)`` plus int64 labels. The loader moves it to the
training device once, then normalises and augments whole batches with tensor ops — no
per-sample Python in the hot loop (the way airbench trains CIFAR-10 in seconds).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from nasprune.errors import NaspruneError

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """Images as uint8 ``(N, C, H, W)`` and labels as int64 ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError("Split.x must be a uint8 tensor of shape (N, C, H, W)")
        if self.y.shape != (self.x.shape[0],):
            raise ValueError("Split.y must hold one label per image")
        self.y = self.y.long()

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int, seed: int = 0) -> Split:
        """A seeded random subset of at most ``n`` samples."""
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n]
        return Split(self.x[idx], self.y[idx])


@dataclass
class Dataset:
    """Train / val / test splits with what a model and a loader need to know."""

    name: str
    train: Split
    val: Split
    test: Split
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    aug_pad: int = 0  # random-crop padding for training batches (0: no crop)
    aug_flip: bool = False  # horizontal flips make sense for photos, not for digits
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise NaspruneError(f"unknown split '{name}': choose from {', '.join(SPLITS)}")
        return getattr(self, name)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A random input of the right shape, for tracing and MACs counting."""
        return torch.randn(batch, *self.input_shape)

    def loader(
        self,
        split: str | Split,
        batch_size: int = 128,
        shuffle: bool = False,
        augment: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
    ) -> BatchLoader:
        s = self.split(split) if isinstance(split, str) else split
        return BatchLoader(
            s,
            batch_size=batch_size,
            mean=self.mean,
            std=self.std,
            shuffle=shuffle,
            pad=self.aug_pad if augment else 0,
            flip=self.aug_flip and augment,
            device=device,
            seed=seed,
            drop_last=drop_last,
        )


class BatchLoader:
    """Iterates ``(images float32 normalised, labels)`` batches from a resident split."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        shuffle: bool = False,
        pad: int = 0,
        flip: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise NaspruneError(f"batch size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.x = split.x.to(self.device)
        self.y = split.y.to(self.device)
        c = self.x.shape[1]
        self.mean = torch.tensor(mean, device=self.device).view(1, c, 1, 1) * 255.0
        self.std = torch.tensor(std, device=self.device).view(1, c, 1, 1) * 255.0
        self.batch_size = batch_size
        self.shuffle, self.pad, self.flip, self.drop_last = shuffle, pad, flip, drop_last
        # CPU generator: reproducible across devices, indices are cheap to move.
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return int(self.x.shape[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        order = torch.randperm(n, generator=self.gen) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            xb = self.x[idx]
            if self.pad:
                xb = self._random_crop(xb)
            if self.flip:
                xb = self._random_flip(xb)
            yield (xb.float() - self.mean) / self.std, self.y[idx]

    def _random_crop(self, xb: torch.Tensor) -> torch.Tensor:
        """Pad by ``pad`` zeros and cut a random window per image, all in one gather."""
        b, c, h, w = xb.shape
        p = self.pad
        padded = torch.nn.functional.pad(xb, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (b,), generator=self.gen).to(self.device)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=self.gen).to(self.device)
        rows = (oy[:, None] + torch.arange(h, device=self.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=self.device))[:, None, None, :]
        bi = torch.arange(b, device=self.device)[:, None, None, None]
        ci = torch.arange(c, device=self.device)[None, :, None, None]
        return padded[bi, ci, rows, cols]

    def _random_flip(self, xb: torch.Tensor) -> torch.Tensor:
        mask = (torch.rand(xb.shape[0], generator=self.gen) < 0.5).to(self.device)
        return torch.where(mask[:, None, None, None], xb.flip(3), xb)
