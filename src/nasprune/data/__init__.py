"""Data sets as in-memory uint8 splits, looked up by name."""

from __future__ import annotations

from nasprune.data import cifar, digits, imagefolder, mnist  # noqa: F401  (registers)
from nasprune.data.base import BatchLoader, Dataset, Split
from nasprune.data.registry import DATASETS, list_datasets, load_dataset, register_dataset
from nasprune.data.segmentation import segmentation_digits

__all__ = ["DATASETS", "BatchLoader", "Dataset", "Split", "list_datasets", "load_dataset",
           "register_dataset", "segmentation_digits"]
