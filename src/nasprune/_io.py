"""Files that are never half-written, and JSON read back leniently.

Every file nasprune writes (checkpoints, results, reports, caches) goes through
:func:`atomic_path`: the content is written to a temp file in the target's directory, made
durable (fsync) and renamed onto the target in one ``os.replace``. A reader, or a run killed
at any instant, sees the old file or the new one, never a mix. The checkpoint's directory
writer (:func:`write_files_atomic`) builds on the same idea for several files at once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nasprune.errors import NaspruneError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """A fresh temp file beside ``path`` to write by name; renamed onto ``path`` on success.

    On a clean exit the temp file is fsynced, given ``mode`` (default: what a plain
    ``open()`` would give, 0666 & ~umask, since mkstemp makes it 0600) and renamed onto
    ``path``; on any error it is removed and ``path`` is untouched. OSErrors propagate as
    they are: each caller words its own message.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)
        finally:
            os.close(fd)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_file(path: str | os.PathLike, data: bytes | str, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`); OSError as raised."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(raw)
    return Path(path)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` via a temp file + ``os.replace``: never half-written.

    A failure is a NaspruneError naming the file (a full disk, a read-only directory).
    """
    try:
        return replace_file(path, data)
    except OSError as exc:
        raise NaspruneError(f"cannot write '{path}': {exc.strerror or exc}") from exc


def temp_dir_beside(target: Path) -> Path:
    """A fresh ``.NAME.tmp-XXXX`` directory next to ``target``, to be renamed onto it.

    mkdtemp makes it 0700; it gets the mode a plain mkdir would (0777 & ~umask), so the
    directory it becomes is readable by the same users as any other (workers on other
    hosts, a colleague's report).
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def write_files_atomic(directory: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into ``directory`` atomically.

    They are written into a sibling ``.DIR.tmp-XXXX`` first. A new directory then appears
    complete in one rename; an existing one gets each file renamed in, in the order given
    (a checkpoint puts its spec last). Other files in the directory are left alone.
    """
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        if directory.exists() and not directory.is_dir():
            raise NaspruneError(f"cannot save to '{directory}': it exists and is not a "
                                "directory")
        tmp = temp_dir_beside(directory)
    except OSError as exc:
        raise NaspruneError(f"cannot save to '{directory}': {exc.strerror or exc}") from exc
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if not directory.exists():
            os.replace(tmp, directory)
            return
        for name in files:
            os.replace(tmp / name, directory / name)
        tmp.rmdir()
    except OSError as exc:
        raise NaspruneError(f"cannot save to '{directory}': {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---- JSON --------------------------------------------------------------------------------

def write_json(path: str | os.PathLike, obj: Any, indent: int = 1,
               default: Callable[[Any], Any] | None = None) -> Path:
    """``obj`` as indented JSON plus a final newline, written with :func:`write_atomic`."""
    return write_atomic(path, json.dumps(obj, indent=indent, default=default) + "\n")


def read_json(path: str | os.PathLike) -> Any | None:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
