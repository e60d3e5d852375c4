"""Download official data files, verifying their published checksums.

Files land in a temporary name and are renamed only after the checksum matched, so an
interrupted or tampered download never looks like a complete file.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from nasprune.errors import NaspruneError

_CHUNK = 1 << 20


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_md5(path: Path, md5: str) -> None:
    got = md5_file(path)
    if got != md5:
        raise NaspruneError(
            f"wrong checksum for '{path}': md5 {got}, expected {md5} (the file is corrupt "
            f"or not the official one; delete it to download it again)")


def fetch(urls: Sequence[str], dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Make sure ``dest`` holds the file with checksum ``md5``, downloading it if missing.

    ``urls`` are mirrors tried in order when one cannot be reached; a download whose
    checksum does not match is an error at once (a mirror serving wrong data is not
    something to paper over).
    """
    if dest.is_file():
        verify_md5(dest, md5)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    failures = []
    for url in urls:
        h = hashlib.md5()
        try:
            print(f"downloading {url}", file=sys.stderr)
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                for block in iter(lambda r=r: r.read(_CHUNK), b""):
                    h.update(block)
                    f.write(block)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            tmp.unlink(missing_ok=True)
            failures.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        got = h.hexdigest()
        if got != md5:
            tmp.unlink(missing_ok=True)
            raise NaspruneError(
                f"wrong checksum for {url}: md5 {got}, expected {md5}; the download is "
                f"corrupt or was tampered with")
        os.replace(tmp, dest)
        return dest
    raise NaspruneError(
        f"could not download {dest.name} ({'; '.join(failures)}); without network access, "
        f"put the file into '{dest.parent}' yourself")
