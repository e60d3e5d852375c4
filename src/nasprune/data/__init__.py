"""Data sets as in-memory uint8 splits, looked up by name."""

from __future__ import annotations

from nasprune.data import cifar, digits, imagefolder, mnist  # noqa: F401  (registers)
from nasprune.data.base import BatchLoader, Dataset, Split
from nasprune.data.folder import FolderImages, folder_loader
from nasprune.data.registry import DATASETS, list_datasets, load_dataset, register_dataset
from nasprune.data.segmentation import segmentation_digits
from nasprune.data.tokens import token_digits

__all__ = ["DATASETS", "BatchLoader", "Dataset", "FolderImages", "Split", "folder_loader",
           "list_datasets", "load_dataset", "register_dataset", "segmentation_digits",
           "token_digits"]
