"""A folder of human-written text as a labelled, de-duplicated, seeded train/val/test corpus.

The folder is what a package leaves on disk (the files of Debian's ``fortunes*`` packages
extracted with ``dpkg-deb -x``, see ``bench/transformers_prepare.sh``) or any tree of
UTF-8 text files. Classes are either the top-level sub-folders (``classes="folder"``: e.g.
one folder per language) or the files themselves (``classes="file"``: e.g. one fortune file
per topic). A file holds records: fortune cookies (lines of ``%`` between them),
paragraphs (blank lines between them), lines, or the whole file.

Records are de-duplicated *before* splitting (whitespace- and case-insensitive), so no text
appears in two splits — fortune collections repeat many quotes across files. Each class is
then split on its own with a seeded permutation: ``val_fraction`` and ``test_fraction`` of
its records (rounded), the rest for training. The same folder, seed and fractions always
give the same splits. This module needs nothing beyond the standard library and numpy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasprune.errors import NaspruneError

RECORD_KINDS = ("auto", "fortune", "paragraph", "line", "file")
CLASS_KINDS = ("auto", "folder", "file")
SKIP_SUFFIXES = (".dat",)  # strfile's binary index beside every fortune file
_FORTUNE_SEP = re.compile(r"(?m)^%[ \t\r]*$")
_PARAGRAPH_SEP = re.compile(r"\n[ \t\r]*\n")


@dataclass(frozen=True)
class TextSplit:
    """Texts and their class indices, in a fixed order."""

    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TextCorpus:
    """Class names and the train / val / test splits of one text folder."""

    classes: list[str]
    train: TextSplit
    val: TextSplit
    test: TextSplit
    name: str = "text"

    def split(self, name: str) -> TextSplit:
        if name not in ("train", "val", "test"):
            raise NaspruneError(f"unknown split '{name}': choose from train, val, test")
        return getattr(self, name)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _text_files(folder: Path, seen: set[Path]) -> list[Path]:
    """Regular text files under ``folder`` (sorted, recursive), each real file once.

    Hidden files and ``.dat`` indexes are skipped; a symbolic link counts as its target
    (fortune packages link ``name.u8`` to ``name``), so a text is never read twice.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or name.endswith(SKIP_SUFFIXES) or not path.is_file():
                continue
            real = path.resolve()
            if real not in seen:
                seen.add(real)
                out.append(path)
    return out


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NaspruneError(f"'{path}' is not UTF-8 text (byte {exc.start}): convert it or "
                            "move it out of the corpus folder") from exc
    except OSError as exc:
        raise NaspruneError(f"cannot read '{path}': {exc.strerror or exc}") from exc


def split_records(text: str, records: str = "auto") -> list[str]:
    """The non-empty records of one file's text (stripped); see the module docstring.

    ``auto`` means fortune records when some line is a lone ``%``, else paragraphs.
    """
    if records not in RECORD_KINDS:
        raise NaspruneError(f"unknown record kind '{records}': choose from "
                            f"{', '.join(RECORD_KINDS)}")
    if records == "auto":
        records = "fortune" if _FORTUNE_SEP.search(text) else "paragraph"
    if records == "fortune":
        parts = _FORTUNE_SEP.split(text)
    elif records == "paragraph":
        parts = _PARAGRAPH_SEP.split(text)
    elif records == "line":
        parts = text.splitlines()
    else:
        parts = [text]
    return [p.strip() for p in parts if p.strip()]


def _class_files(root: Path, classes: str) -> dict[str, list[Path]]:
    """Class name -> its files, in sorted class order."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes == "auto":
        top_files = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
        classes = "folder" if subdirs and not top_files else "file"
    seen: set[Path] = set()
    if classes == "folder":
        groups = {d.name: _text_files(d, seen) for d in subdirs}
        return {k: v for k, v in groups.items() if v}
    return {str(p.relative_to(root)): [p] for p in _text_files(root, seen)}


def _dedupe(per_class: list[list[str]]) -> list[list[str]]:
    """Each text once over the whole corpus: the first occurrence (class order) is kept."""
    seen: set[str] = set()
    out = []
    for texts in per_class:
        kept = []
        for t in texts:
            key = " ".join(t.split()).casefold()
            if key not in seen:
                seen.add(key)
                kept.append(t)
        out.append(kept)
    return out


def _check_args(val_fraction: float, test_fraction: float, max_per_class: int | None,
                min_chars: int) -> None:
    for what, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0:
            raise NaspruneError(f"{what} must be in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1.0:
        raise NaspruneError(f"val_fraction + test_fraction must be below 1, got "
                            f"{val_fraction} + {test_fraction}")
    if max_per_class is not None and (isinstance(max_per_class, bool)
                                      or not isinstance(max_per_class, int) or max_per_class < 3):
        raise NaspruneError(f"max_per_class must be an integer >= 3 or None, got {max_per_class!r}")
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 1:
        raise NaspruneError(f"min_chars must be a positive integer, got {min_chars!r}")


def read_text_corpus(root: str | os.PathLike, classes: str = "auto", records: str = "auto",
                     val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                     max_per_class: int | None = None, min_chars: int = 1,
                     name: str | None = None) -> TextCorpus:
    """Read, de-duplicate and split the text under ``root`` (see the module docstring).

    ``classes="auto"`` takes the sub-folders as classes when ``root`` holds only folders,
    else every file. Records shorter than ``min_chars`` are dropped. ``max_per_class``
    keeps a seeded random sample of that many records per class (to bound training time)
    before splitting. Raises NaspruneError for a missing folder, a non-UTF-8 file, bad
    arguments, or a folder without text records.
    """
    if classes not in CLASS_KINDS:
        raise NaspruneError(f"unknown class kind '{classes}': choose from {', '.join(CLASS_KINDS)}")
    _check_args(val_fraction, test_fraction, max_per_class, min_chars)
    root = Path(root)
    if not root.is_dir():
        raise NaspruneError(f"text corpus folder '{root}' does not exist")
    groups = _class_files(root, classes)
    texts = [[r for p in files for r in split_records(_read(p), records) if len(r) >= min_chars]
             for files in groups.values()]
    texts = _dedupe(texts)
    names = [n for n, t in zip(groups, texts, strict=True) if t]
    texts = [t for t in texts if t]
    if not names:
        raise NaspruneError(f"'{root}' holds no text records (UTF-8 files, one class per "
                            "file or per sub-folder)")
    parts: dict[str, tuple[list[str], list[int]]] = {s: ([], []) for s in ("train", "val", "test")}
    rng = np.random.default_rng(seed)
    for label, items in enumerate(texts):
        order = rng.permutation(len(items))
        if max_per_class is not None:
            order = order[:max_per_class]
        n_val = int(round(len(order) * val_fraction))
        n_test = int(round(len(order) * test_fraction))
        cuts = {"val": order[:n_val], "test": order[n_val:n_val + n_test],
                "train": order[n_val + n_test:]}
        for split, idx in cuts.items():
            for i in sorted(idx):  # file order inside a split: stable, readable
                parts[split][0].append(items[i])
                parts[split][1].append(label)
    return TextCorpus(classes=names, name=name or root.name,
                      **{s: TextSplit(t, y) for s, (t, y) in parts.items()})


__all__ = ["CLASS_KINDS", "RECORD_KINDS", "TextCorpus", "TextSplit", "read_text_corpus",
           "split_records"]
