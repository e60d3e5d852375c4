"""A decode cache: uint8 arrays of a data set stored as ``.safetensors``, keyed by source.

Decoding 60,000 JPEGs takes seconds to minutes; reading the decoded arrays back takes well
under a second. The cache key is a fingerprint of the source (every file's relative path,
size and modification time, or the archive's) plus the decode options, so editing,
adding or removing one image invalidates it. The format is safetensors, never pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

from nasprune._io import atomic_path

CACHE_DIRNAME = ".nasprune-cache"
CACHE_VERSION = "1"  # bump when the stored layout or the decoding changes


def user_cache_dir() -> Path:
    """``$NASPRUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/nasprune``, else ``~/.cache/nasprune``."""
    if os.environ.get("NASPRUNE_CACHE_DIR"):
        return Path(os.environ["NASPRUNE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nasprune"


def _writable_dir(path: Path) -> bool:
    """Whether we may create and write ``path``.

    A directory without any write permission bit counts as read-only even for root (who
    could write anyway): it was made read-only on purpose, e.g. a shared data mount.
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    try:
        if not probe.is_dir() or not probe.stat().st_mode & 0o222:
            return False
        if not os.access(probe, os.W_OK | os.X_OK):
            return False
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True


def cache_dir_for(source: Path, override: str | os.PathLike | None = None) -> Path:
    """Where to cache data decoded from ``source``.

    Next to the data (``<dir>/.nasprune-cache``) so it travels and is deleted with it;
    the user cache directory when that place is read-only (e.g. a shared data mount).
    """
    if override is not None:
        return Path(override)
    near = (source if source.is_dir() else source.parent) / CACHE_DIRNAME
    return near if _writable_dir(near) else user_cache_dir()


def fingerprint(entries: Iterable[tuple[str, int, int]], **options: object) -> str:
    """sha256 over ``(relative path, size, mtime_ns)`` of every source file plus options."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": CACHE_VERSION, **options}, sort_keys=True).encode())
    for name, size, mtime in entries:
        h.update(f"\0{name}\0{size}\0{mtime}".encode())
    return h.hexdigest()


def stat_entry(path: Path, name: str) -> tuple[str, int, int]:
    st = path.stat()
    return name, st.st_size, st.st_mtime_ns


def cache_path(cache_dir: Path, dataset: str, key: str) -> Path:
    return cache_dir / f"{dataset}-{key[:24]}.safetensors"


def load_cached(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """The cached tensors and metadata, or None when absent or unreadable (then rebuilt)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as e:  # a damaged cache is ours to rebuild, not the user's problem
        warnings.warn(f"ignoring unreadable data cache {path}: {e}", stacklevel=2)
        return None
    if meta.get("nasprune_cache_version") != CACHE_VERSION:
        return None
    return tensors, meta


def save_cached(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bool:
    """Write the cache atomically (temp file + rename); False (with a warning) if impossible."""
    from safetensors.torch import save_file

    meta = {**meta, "nasprune_cache_version": CACHE_VERSION}
    try:
        # mode 0644: mkstemp makes it private; a data cache is not secret
        with atomic_path(path, mode=0o644) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    except OSError as e:
        warnings.warn(f"could not write data cache {path}: {e}", stacklevel=2)
        return False
    _drop_stale(path, meta.get("source", ""))
    return True


def _drop_stale(keep: Path, source: str) -> None:
    """Delete older caches of the same data set and source, so edits don't pile up files."""
    from safetensors import safe_open

    prefix = keep.name.rsplit("-", 1)[0] + "-"
    for other in keep.parent.glob(prefix + "*.safetensors"):
        if other == keep:
            continue
        try:
            with safe_open(str(other), framework="pt") as f:
                same = (f.metadata() or {}).get("source") == source
            if same:
                other.unlink()
        except Exception:  # not ours or unreadable: leave it alone
            continue
