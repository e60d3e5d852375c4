"""scikit-learn's bundled digits (1,797 real 8×8 images): the embedded default, no download."""

from __future__ import annotations

import torch

from nasprune.data.base import Dataset, Split
from nasprune.data.registry import register_dataset
from nasprune.data.splits import three_way_split


@register_dataset("digits")
def load_digits(root: str | None = None, seed: int = 0, val_fraction: float = 0.15,
                test_fraction: float = 0.2, download: bool = False) -> Dataset:
    """Digits scaled from 0..16 to uint8 0..255, split stratified into train / val / test.

    ``root`` and ``download`` are accepted for a uniform call but unused: the data ship
    with scikit-learn.
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy((bunch.images * (255.0 / 16.0)).round()).to(torch.uint8)[:, None]
    y = torch.from_numpy(bunch.target).long()
    train, val, test = three_way_split(Split(x, y), val_fraction, test_fraction, seed)
    return Dataset(
        name="digits",
        train=train,
        val=val,
        test=test,
        classes=[str(i) for i in range(10)],
        mean=(0.3066,),
        std=(0.3765,),
        aug_pad=1,
        aug_flip=False,
    )
