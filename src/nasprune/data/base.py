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
        rank: int = 0,
        world_size: int = 1,
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
            rank=rank,
            world_size=world_size,
        )


class BatchLoader:
    """Iterates ``(images float32 normalised, labels)`` batches from a resident split.

    With ``world_size`` N > 1 (data-parallel training) each of the ``len()`` steps has a
    global batch of N·``batch_size`` positions of the epoch's permutation, the same on every
    rank (same seed); rank r takes positions r, r+N, ... of it. The augmentation draws are
    made for the whole global batch and sliced the same way, so N ranks together see exactly
    the batches one process with batch N·``batch_size`` would.
    """

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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise NaspruneError(f"batch size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise NaspruneError(f"rank must be in 0..{world_size - 1}, got {rank}")
        self.device = torch.device(device)
        self.x = split.x.to(self.device)
        self.y = split.y.to(self.device)
        c = self.x.shape[1]
        self.mean = torch.tensor(mean, device=self.device).view(1, c, 1, 1) * 255.0
        self.std = torch.tensor(std, device=self.device).view(1, c, 1, 1) * 255.0
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.step_size = batch_size * world_size  # the global batch
        self.shuffle, self.pad, self.flip, self.drop_last = shuffle, pad, flip, drop_last
        # CPU generator: reproducible across devices, indices are cheap to move.
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.step_size if self.drop_last else -(-n // self.step_size)

    @property
    def num_samples(self) -> int:
        return int(self.x.shape[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        order = torch.randperm(n, generator=self.gen) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for i in range(len(self)):
            idx = order[i * self.step_size : (i + 1) * self.step_size]
            g = idx.shape[0]  # draws per augmentation: one per sample of the global batch
            idx = self._mine(idx)
            xb = self.x[idx]
            if self.pad:
                xb = self._random_crop(xb, g)
            if self.flip:
                xb = self._random_flip(xb, g)
            yield (xb.float() - self.mean) / self.std, self.y[idx]

    def _mine(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's positions of a global batch (all of it in one process)."""
        return t[self.rank :: self.world_size] if self.world_size > 1 else t

    def _random_crop(self, xb: torch.Tensor, g: int) -> torch.Tensor:
        """Pad by ``pad`` zeros and cut a random window per image, all in one gather."""
        b, c, h, w = xb.shape
        p = self.pad
        padded = torch.nn.functional.pad(xb, (p, p, p, p))
        oy = self._mine(torch.randint(0, 2 * p + 1, (g,), generator=self.gen)).to(self.device)
        ox = self._mine(torch.randint(0, 2 * p + 1, (g,), generator=self.gen)).to(self.device)
        rows = (oy[:, None] + torch.arange(h, device=self.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=self.device))[:, None, None, :]
        bi = torch.arange(b, device=self.device)[:, None, None, None]
        ci = torch.arange(c, device=self.device)[None, :, None, None]
        return padded[bi, ci, rows, cols]

    def _random_flip(self, xb: torch.Tensor, g: int) -> torch.Tensor:
        mask = self._mine(torch.rand(g, generator=self.gen) < 0.5).to(self.device)
        return torch.where(mask[:, None, None, None], xb.flip(3), xb)
