"""Data sets as in-memory uint8 splits, looked up by name; text folders as tasks."""

from __future__ import annotations

from nasprune.data import cifar, digits, imagefolder, mnist  # noqa: F401  (registers)
from nasprune.data.base import BatchLoader, Dataset, Split
from nasprune.data.folder import FolderImages, folder_loader
from nasprune.data.registry import DATASETS, list_datasets, load_dataset, register_dataset
from nasprune.data.segmentation import segmentation_digits
from nasprune.data.text import (
    classification_task,
    language_model_task,
    load_tokenizer,
    train_tokenizer,
)
from nasprune.data.textcorpus import TextCorpus, read_text_corpus
from nasprune.data.tokens import token_digits

__all__ = ["DATASETS", "BatchLoader", "Dataset", "FolderImages", "Split", "TextCorpus",
           "classification_task", "folder_loader", "language_model_task", "list_datasets",
           "load_dataset", "load_tokenizer", "read_text_corpus", "register_dataset",
           "segmentation_digits", "token_digits", "train_tokenizer"]
