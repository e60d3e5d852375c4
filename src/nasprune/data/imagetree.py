"""ImageFolder trees (``[split/]<class>/<image>``) from a directory or a tar archive.

Two layouts: ``train/<class>/*`` with optional ``val/`` and ``test/`` next to it, or a
single tree of class directories. An archive (``.tar``, ``.tar.gz``, ...) is read directly,
never extracted: its images are decoded from memory, and the decoded arrays go to the
safetensors cache, so the 60,000 small files never touch the disk.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nasprune.data import cache as cache_mod
from nasprune.data.base import Split
from nasprune.data.images import Item, decode_images, is_image_name
from nasprune.errors import NaspruneError

SPLIT_DIRS = ("train", "val", "test")
ALL = "all"  # the split key of a single tree without train/ and test/
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


@dataclass
class ImageTree:
    """Images grouped by split (``train``/``val``/``test`` or ``all``) and class name."""

    source: str  # for messages
    splits: dict[str, dict[str, list[Item]]] = field(default_factory=dict)

    def count(self) -> int:
        return sum(len(v) for s in self.splits.values() for v in s.values())


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _walk_images(directory: str, rel: str, out: list[tuple[str, str, int, int]]) -> None:
    """Append (path, relative path, size, mtime_ns) of every image below ``directory``.

    Plain strings and ``os.scandir`` rather than pathlib: listing 60,000 files is on every
    load's path (the cache key needs their sizes and times), and pathlib triples its cost.
    """
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if _hidden(e.name):
            continue
        if e.is_dir():
            _walk_images(e.path, f"{rel}/{e.name}", out)
        elif is_image_name(e.name) and e.is_file():
            st = e.stat()
            out.append((e.path, f"{rel}/{e.name}", st.st_size, st.st_mtime_ns))


def scan_directory(root: Path) -> tuple[ImageTree, list[tuple[str, int, int]]]:
    """List a directory tree; also returns (relative path, size, mtime) for the cache key."""
    if not root.is_dir():
        raise NaspruneError(f"data directory '{root}' does not exist")
    if (root / "train").is_dir():
        split_dirs = {s: s for s in SPLIT_DIRS if (root / s).is_dir()}
    else:
        split_dirs = {ALL: ""}
    tree = ImageTree(str(root))
    entries: list[tuple[str, int, int]] = []
    for split, sub in split_dirs.items():
        sdir = os.path.join(str(root), sub) if sub else str(root)
        classes: dict[str, list[Item]] = {}
        with os.scandir(sdir) as it:
            class_dirs = sorted((e for e in it if e.is_dir() and not _hidden(e.name)),
                                key=lambda e: e.name)
        for cdir in class_dirs:
            found: list[tuple[str, str, int, int]] = []
            _walk_images(cdir.path, f"{sub}/{cdir.name}" if sub else cdir.name, found)
            classes[cdir.name] = [(path, path) for path, _, _, _ in found]
            entries.extend((rel, size, mtime) for _, rel, size, mtime in found)
        tree.splits[split] = classes
    return tree, entries


def read_archive(path: Path, keep=is_image_name) -> dict[str, bytes]:
    """All regular files of a tar archive whose name passes ``keep``, read into memory."""
    try:
        files: dict[str, bytes] = {}
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                # "tar czf x.tgz ." writes "./train/..."; "." itself is not a hidden part.
                parts = [p for p in m.name.split("/") if p not in ("", ".")]
                name = "/".join(parts)
                if not m.isfile() or any(_hidden(p) for p in parts) or not keep(name):
                    continue
                f = tf.extractfile(m)
                if f is not None:
                    files[name] = f.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise NaspruneError(f"cannot read archive '{path}': {e}") from e
    return files


def tree_from_files(source: str, files: dict[str, bytes]) -> ImageTree:
    """Arrange archive members ``[prefix/][split/]class/.../image`` into an ImageTree."""
    paths = {name: [p for p in name.split("/") if p] for name in files}
    # Strip wrapper directories such as "cifar10/" that every member shares.
    while paths:
        heads = {p[0] for p in paths.values()}
        depth = min(len(p) for p in paths.values())
        if len(heads) == 1 and depth >= 3 and next(iter(heads)) not in SPLIT_DIRS:
            paths = {k: p[1:] for k, p in paths.items()}
        else:
            break
    split_layout = any(p[0] == "train" and len(p) >= 3 for p in paths.values())
    tree = ImageTree(source)
    for name in sorted(paths):
        p = paths[name]
        if split_layout:
            if p[0] not in SPLIT_DIRS or len(p) < 3:
                continue
            split, cls = p[0], p[1]
        else:
            if len(p) < 2:
                continue
            split, cls = ALL, p[0]
        tree.splits.setdefault(split, {}).setdefault(cls, []).append(
            (f"{source}:{name}", files[name]))
    return tree


def check_classes(tree: ImageTree) -> list[str]:
    """Class names (from train, or the single tree); every other split must match them."""
    base = "train" if "train" in tree.splits else ALL
    if tree.count() == 0 or base not in tree.splits:
        raise NaspruneError(
            f"no images found in '{tree.source}' (expected train/<class>/<image> and "
            f"test/<class>/<image>, or <class>/<image>)")
    classes = sorted(tree.splits[base])
    where = "train/" if base == "train" else "the tree"
    for c in classes:
        if not tree.splits[base][c]:
            raise NaspruneError(f"class '{c}' in {where} of '{tree.source}' has no images")
    for split, by_class in tree.splits.items():
        if split == base:
            continue
        for c in classes:
            if not by_class.get(c):
                raise NaspruneError(
                    f"class '{c}' is in train/ but has no images in {split}/ of "
                    f"'{tree.source}'")
        for c in sorted(by_class):
            if c not in tree.splits[base] and by_class[c]:
                raise NaspruneError(
                    f"class '{c}' in {split}/ of '{tree.source}' does not exist in train/")
    return classes


def decode_tree(tree: ImageTree, size: int | None, channels: int | None,
                workers: int | None) -> tuple[dict[str, Split], list[str]]:
    """Decode every split of ``tree`` into uint8 ``(N, C, H, W)`` splits, labels by class."""
    if channels not in (None, 1, 3):
        raise NaspruneError(f"channels must be 1, 3 or None (auto), got {channels}")
    classes = check_classes(tree)
    index = {c: i for i, c in enumerate(classes)}
    items: list[Item] = []
    labels: list[int] = []
    bounds: dict[str, tuple[int, int]] = {}
    for split, by_class in tree.splits.items():
        start = len(items)
        for c in sorted(by_class):
            items.extend(by_class[c])
            labels.extend([index[c]] * len(by_class[c]))
        bounds[split] = (start, len(items))
    x, gray = decode_images(items, size=size, mode="L" if channels == 1 else "RGB",
                            workers=workers)
    if channels is None and gray.all():
        x = x[..., :1]  # every image was grayscale: converting to RGB only copied it 3×
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.tensor(labels, dtype=torch.long)
    return {s: Split(xt[a:b], yt[a:b]) for s, (a, b) in bounds.items()}, classes


def load_tree(source: Path, dataset: str, size: int | None = None,
              channels: int | None = None, cache: bool = True,
              cache_dir: str | os.PathLike | None = None,
              workers: int | None = None) -> tuple[dict[str, Split], list[str], dict]:
    """Decoded splits of an ImageFolder directory or archive, through the decode cache.

    Returns (splits by name, class names, info for ``Dataset.meta``).
    """
    t0 = time.perf_counter()
    archive = is_archive(source)
    if archive:
        entries = [cache_mod.stat_entry(source, source.resolve().as_posix())]
        tree = None
    else:
        tree, entries = scan_directory(source)
        if not entries:
            check_classes(tree)  # raises "no images" with the layout it expects
    # The absolute location is part of the key: two copies of a tree may share the user
    # cache directory (read-only data), and must not be mistaken for each other.
    key = cache_mod.fingerprint(entries, dataset=dataset, size=size, channels=channels,
                                source=source.resolve().as_posix())
    path = None
    if cache:
        path = cache_mod.cache_path(cache_mod.cache_dir_for(source, cache_dir), dataset, key)
        hit = cache_mod.load_cached(path)
        if hit is not None:
            tensors, meta = hit
            splits = {s: Split(tensors[f"{s}.x"], tensors[f"{s}.y"])
                      for s in json.loads(meta["splits"])}
            info = {"source": str(source), "cache": str(path), "cache_hit": True,
                    "load_seconds": time.perf_counter() - t0}
            return splits, json.loads(meta["classes"]), info
    if tree is None:
        tree = tree_from_files(str(source), read_archive(source))
    if tree.count() >= 5000:  # say why this first load takes a while
        print(f"decoding {tree.count()} images from {source}"
              + (f" (cached in {path.parent} for next time)" if path else ""), file=sys.stderr)
    splits, classes = decode_tree(tree, size, channels, workers)
    decode_seconds = time.perf_counter() - t0
    if path is not None:
        tensors = {}
        for s, sp in splits.items():
            tensors[f"{s}.x"], tensors[f"{s}.y"] = sp.x, sp.y
        meta = {"classes": json.dumps(classes), "splits": json.dumps(list(splits)),
                "source": str(source.resolve()), "fingerprint": key}
        if not cache_mod.save_cached(path, tensors, meta):
            path = None
    info = {"source": str(source), "cache": str(path) if path else None, "cache_hit": False,
            "decode_seconds": decode_seconds, "load_seconds": time.perf_counter() - t0}
    return splits, classes, info
