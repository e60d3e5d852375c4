"""CIFAR-10: official python pickles, an ImageFolder tree, an archive of either, or download.

``root`` may be a directory holding ``cifar-10-batches-py/`` (or its files directly), an
ImageFolder tree ``train/<class>/*``, ``test/<class>/*``, such a tree or the official
archive as a ``.tar.gz``, or a directory containing ``cifar-10-python.tar.gz``. With
``download=True`` the official archive is fetched and its md5 verified. The 50,000
training images are split 40,000 / 10,000 train / val (seeded, stratified); the 10,000
official test images are the test split.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nasprune.data import cache as cache_mod
from nasprune.data.base import Dataset, Split
from nasprune.data.download import fetch, verify_md5
from nasprune.data.images import is_image_name
from nasprune.data.imagetree import (
    decode_tree,
    is_archive,
    load_tree,
    read_archive,
    tree_from_files,
)
from nasprune.data.pickles import load_data_pickle
from nasprune.data.registry import default_root, register_dataset
from nasprune.data.splits import holdout
from nasprune.errors import NaspruneError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of the 50,000 training images
STD = (0.2470, 0.2435, 0.2616)
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # published on the CIFAR page
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
VAL_FRACTION = 0.2  # 10,000 of the 50,000 training images, as in the seed text


def _locate(root: Path) -> tuple[str, Path] | None:
    """Which of the accepted layouts ``root`` is: ("pickles"|"tree"|"archive", path)."""
    candidates = [root]
    if root.is_dir():
        candidates += [root / "cifar10", root / "cifar-10"]
    for c in candidates:
        if is_archive(c):
            return "archive", c
        if not c.is_dir():
            continue
        if (c / BATCH_DIR / TRAIN_BATCHES[0]).is_file():
            return "pickles", c / BATCH_DIR
        if (c / TRAIN_BATCHES[0]).is_file():
            return "pickles", c
        if (c / "train").is_dir():
            return "tree", c
        if (c / ARCHIVE).is_file():
            return "archive", c / ARCHIVE
    return None


def _parse_batch(obj: object, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,)) from one unpickled batch dict."""
    if not isinstance(obj, dict):
        raise NaspruneError(f"'{source}' is not a CIFAR-10 batch (no dict inside)")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = d.get("data"), d.get("labels")
    if labels is None and "fine_labels" in d:
        raise NaspruneError(f"'{source}' is a CIFAR-100 batch, not CIFAR-10")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32 or labels is None:
        raise NaspruneError(f"'{source}' is not a CIFAR-10 batch (expected 'data' uint8 "
                            f"N×3072 and 'labels')")
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (data.shape[0],) or (y.size and (y.min() < 0 or y.max() >= 10)):
        raise NaspruneError(f"'{source}' has {y.size} labels for {data.shape[0]} images or "
                            f"labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), y


def _splits_from_pickles(blobs: dict[str, bytes], source: str) -> dict[str, Split]:
    """Train and test pools from the raw bytes of the official batch files."""
    missing = [n for n in [*TRAIN_BATCHES, TEST_BATCH] if n not in blobs]
    if missing:
        raise NaspruneError(f"CIFAR-10 batch file(s) {', '.join(missing)} missing in "
                            f"'{source}'")
    if META in blobs:
        meta = load_data_pickle(blobs[META], f"{source}/{META}")
        names = meta.get("label_names") if isinstance(meta, dict) else None
        names = [n.decode() if isinstance(n, bytes) else n for n in names or []]
        if names and names != CLASSES:
            raise NaspruneError(f"'{source}/{META}' lists classes {names}, not CIFAR-10's")
    parts = [_parse_batch(load_data_pickle(blobs[n], f"{source}/{n}"), f"{source}/{n}")
             for n in TRAIN_BATCHES]
    tx, ty = _parse_batch(load_data_pickle(blobs[TEST_BATCH], f"{source}/{TEST_BATCH}"),
                          f"{source}/{TEST_BATCH}")
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return {"train": Split(torch.from_numpy(x), torch.from_numpy(y)),
            "test": Split(torch.from_numpy(np.ascontiguousarray(tx)), torch.from_numpy(ty))}


def _read_pickle_dir(path: Path) -> dict[str, Split]:
    blobs = {}
    for name in [*TRAIN_BATCHES, TEST_BATCH, META]:
        f = path / name
        if f.is_file():
            blobs[name] = f.read_bytes()
    return _splits_from_pickles(blobs, str(path))


def _archive_splits(path: Path, cache: bool, cache_dir, workers: int | None
                    ) -> tuple[dict[str, Split], list[str] | None, dict]:
    """An archive of the official pickles or of an ImageFolder tree, via the decode cache."""
    t0 = time.perf_counter()
    key = cache_mod.fingerprint([cache_mod.stat_entry(path, path.resolve().as_posix())],
                                dataset="cifar10", size=32, channels=3)
    cpath = None
    if cache:
        cpath = cache_mod.cache_path(cache_mod.cache_dir_for(path, cache_dir), "cifar10", key)
        hit = cache_mod.load_cached(cpath)
        if hit is not None:
            tensors, meta = hit
            splits = {s: Split(tensors[f"{s}.x"], tensors[f"{s}.y"])
                      for s in json.loads(meta["splits"])}
            return splits, json.loads(meta["classes"]), {
                "source": str(path), "cache": str(cpath), "cache_hit": True,
                "load_seconds": time.perf_counter() - t0}
    official = {*TRAIN_BATCHES, TEST_BATCH, META}
    files = read_archive(path, keep=lambda n: n.rsplit("/", 1)[-1] in official
                         or is_image_name(n))
    pickled = {n.rsplit("/", 1)[-1]: b for n, b in files.items()
               if n.rsplit("/", 1)[-1] in official}
    if TRAIN_BATCHES[0] in pickled:
        splits, classes = _splits_from_pickles(pickled, str(path)), list(CLASSES)
    else:
        images = {n: b for n, b in files.items() if n.rsplit("/", 1)[-1] not in official}
        if len(images) >= 5000:
            print(f"decoding {len(images)} images from {path}"
                  + (f" (cached in {cpath.parent} for next time)" if cpath else ""),
                  file=sys.stderr)
        splits, classes = decode_tree(tree_from_files(str(path), images), 32, 3, workers)
    decode_seconds = time.perf_counter() - t0
    saved = cpath is not None and cache_mod.save_cached(
        cpath,
        {f"{s}.{a}": getattr(sp, a) for s, sp in splits.items() for a in ("x", "y")},
        {"classes": json.dumps(classes), "splits": json.dumps(list(splits)),
         "source": str(path.resolve()), "fingerprint": key})
    return splits, classes, {"source": str(path), "cache": str(cpath) if saved else None,
                             "cache_hit": False, "decode_seconds": decode_seconds,
                             "load_seconds": time.perf_counter() - t0}


def _to_standard_order(splits: dict[str, Split], classes: list[str] | None,
                       source: str) -> dict[str, Split]:
    """Relabel a tree's (alphabetical) class indices into CIFAR-10's standard order."""
    if classes is None or classes == CLASSES:
        return splits
    unknown = sorted(set(classes) - set(CLASSES))
    missing = sorted(set(CLASSES) - set(classes))
    if unknown or missing:
        raise NaspruneError(
            f"'{source}' does not hold the CIFAR-10 classes (unknown: {unknown or 'none'}, "
            f"missing: {missing or 'none'}); use load_dataset('imagefolder', ...) for "
            f"other data")
    remap = torch.tensor([CLASSES.index(c) for c in classes])
    return {s: Split(sp.x, remap[sp.y]) for s, sp in splits.items()}


@register_dataset("cifar10")
def load_cifar10(root: str | os.PathLike | None = None, seed: int = 0, download: bool = False,
                 val_fraction: float = VAL_FRACTION, cache: bool = True,
                 cache_dir: str | os.PathLike | None = None,
                 workers: int | None = None) -> Dataset:
    """CIFAR-10 as 40,000 / 10,000 / 10,000 uint8 splits (3×32×32), classes in standard order.

    ``cache``/``cache_dir``: where decoded JPEG/PNG trees and archives are kept as
    safetensors (default ``<data>/.nasprune-cache``); ``workers``: decoding processes.
    """
    base = Path(root) if root is not None else default_root("cifar10")
    found = _locate(base)
    if download and (found is None or found[0] == "archive"):
        target = found[1] if found else (base if not base.is_file() else base.parent) / ARCHIVE
        if found and target.name == ARCHIVE:
            verify_md5(target, ARCHIVE_MD5)
        elif not found:
            fetch([URL], target, ARCHIVE_MD5)
        found = ("archive", target)
    if found is None:
        what = "does not exist" if not base.exists() else "holds no CIFAR-10 data"
        raise NaspruneError(
            f"CIFAR-10 data directory '{base}' {what}: expected {BATCH_DIR}/ (official "
            f"python batches), train/ and test/ class folders, or {ARCHIVE}; pass "
            f"download=True (CLI: --download) to fetch the official archive")
    kind, path = found
    t0 = time.perf_counter()
    if kind == "pickles":
        splits, classes = _read_pickle_dir(path), list(CLASSES)
        info = {"source": str(path), "cache": None, "cache_hit": False,
                "load_seconds": time.perf_counter() - t0}
    elif kind == "tree":
        splits, classes, info = load_tree(path, "cifar10", size=32, channels=3, cache=cache,
                                          cache_dir=cache_dir, workers=workers)
    else:
        splits, classes, info = _archive_splits(path, cache, cache_dir, workers)
    if "train" not in splits or "test" not in splits:
        raise NaspruneError(f"'{path}' needs both train/ and test/ class folders for CIFAR-10")
    splits = _to_standard_order(splits, classes, str(path))
    for s, sp in splits.items():
        if tuple(sp.x.shape[1:]) != (3, 32, 32):
            raise NaspruneError(f"CIFAR-10 {s} images in '{path}' have shape "
                                f"{tuple(sp.x.shape[1:])}, expected (3, 32, 32)")
    if "val" in splits:
        train, val = splits["train"], splits["val"]
    else:
        train, val = holdout(splits["train"], val_fraction, seed, exact=True)
    return Dataset(name="cifar10", train=train, val=val, test=splits["test"],
                   classes=list(CLASSES), mean=MEAN, std=STD, aug_pad=4, aug_flip=True,
                   meta={"format": kind, **info})
