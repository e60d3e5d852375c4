"""Seeded, stratified splitting of one pool of samples into train / val / test."""

from __future__ import annotations

import torch

from nasprune.data.base import Split


def _stratified_indices(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices so every class keeps the same share on both sides (seeded)."""
    g = torch.Generator().manual_seed(seed)
    take, keep = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * fraction))
        take.append(idx[:k])
        keep.append(idx[k:])
    return torch.cat(keep).sort().values, torch.cat(take).sort().values


def holdout(pool: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split ``pool`` into (rest, held-out) with ``fraction`` of each class held out."""
    rest, held = _stratified_indices(pool.y, fraction, seed)
    return Split(pool.x[rest], pool.y[rest]), Split(pool.x[held], pool.y[held])


def three_way_split(pool: Split, val_fraction: float, test_fraction: float,
                    seed: int) -> tuple[Split, Split, Split]:
    """Train / val / test from one pool; fractions are of the whole pool."""
    rest, test = holdout(pool, test_fraction, seed)
    train, val = holdout(rest, val_fraction / (1.0 - test_fraction), seed + 1)
    return train, val, test
