"""Seeded, stratified splitting of one pool of samples into train / val / test."""

from __future__ import annotations

import math

import numpy as np
import torch

from nasprune.data.base import Split
from nasprune.errors import NaspruneError


def _check_fraction(fraction: float, what: str = "fraction") -> None:
    if not 0.0 <= fraction < 1.0:
        raise NaspruneError(f"{what} must be in [0, 1), got {fraction}")


def _per_class_counts(counts: list[int], fraction: float, exact: bool) -> list[int]:
    """How many samples of each class to hold out.

    ``exact=False`` rounds each class on its own (the historical rule, kept so existing
    splits stay identical); ``exact=True`` hands out ``round(N * fraction)`` in total by
    largest remainder, so e.g. 60,000 MNIST images give exactly 10,000 validation images.
    """
    if not exact:
        return [int(round(n * fraction)) for n in counts]
    total = int(round(sum(counts) * fraction))
    shares = [n * fraction for n in counts]
    take = [math.floor(s) for s in shares]
    # Largest fractional remainder first; ties go to the earlier class (deterministic).
    order = sorted(range(len(counts)), key=lambda i: (-(shares[i] - take[i]), i))
    for i in order[: max(0, total - sum(take))]:
        take[i] += 1
    return take


def _stratified_indices(y: torch.Tensor, fraction: float, seed: int,
                        exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices so every class keeps the same share on both sides (seeded).

    Index bookkeeping runs in numpy: torch's multi-threaded sort takes ~0.5 s on 50,000
    labels on a busy 2-core machine, numpy's takes a millisecond. The random draws stay
    torch's seeded ``randperm``, so splits are unchanged.
    """
    g = torch.Generator().manual_seed(seed)
    yn = y.cpu().numpy()
    order = np.argsort(yn, kind="stable")  # each class's indices stay ascending
    _, sizes = np.unique(yn[order], return_counts=True)
    members = np.split(order, np.cumsum(sizes)[:-1]) if len(order) else []
    counts = _per_class_counts([len(m) for m in members], fraction, exact)
    take, keep = [], []
    for idx, k in zip(members, counts, strict=True):
        idx = idx[torch.randperm(len(idx), generator=g).numpy()]
        take.append(idx[:k])
        keep.append(idx[k:])
    keep_all = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    take_all = np.sort(np.concatenate(take)) if take else np.zeros(0, np.int64)
    return torch.from_numpy(keep_all.astype(np.int64)), torch.from_numpy(take_all.astype(np.int64))


def _take(split: Split, idx: torch.Tensor) -> Split:
    """``split[idx]``; numpy's gather is ~3× faster than torch's for a CPU uint8 tensor."""
    if split.x.device.type == "cpu":
        return Split(torch.from_numpy(split.x.numpy()[idx.numpy()]), split.y[idx])
    return Split(split.x[idx.to(split.x.device)], split.y[idx.to(split.y.device)])


def holdout(pool: Split, fraction: float, seed: int, exact: bool = False) -> tuple[Split, Split]:
    """Split ``pool`` into (rest, held-out) with ``fraction`` of each class held out."""
    _check_fraction(fraction)
    rest, held = _stratified_indices(pool.y, fraction, seed, exact)
    return _take(pool, rest), _take(pool, held)


def three_way_split(pool: Split, val_fraction: float, test_fraction: float,
                    seed: int, exact: bool = False) -> tuple[Split, Split, Split]:
    """Train / val / test from one pool; fractions are of the whole pool."""
    _check_fraction(val_fraction, "val_fraction")
    _check_fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1.0:
        raise NaspruneError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}"
        )
    rest, test = holdout(pool, test_fraction, seed, exact)
    train, val = holdout(rest, val_fraction / (1.0 - test_fraction), seed + 1, exact)
    return train, val, test
