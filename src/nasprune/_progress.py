"""Progress bars for passes over user batches that may be long (a DataLoader over disk).

A bar appears only when ``progress`` is on, stderr is a terminal, and the pass has run
for ``DELAY`` seconds: short passes (the in-memory data sets, small tests) print nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

DELAY = 2.0  # seconds before a bar shows


def _length(batches: Iterable[Any]) -> int | None:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return None


@contextmanager
def ticker(desc: str, enabled: bool, total: int | None = None,
           unit: str = "batch") -> Iterator[Callable[..., None]]:
    """``tick(n=1)`` to call as work is done; it advances a delayed bar when ``enabled``."""
    if not enabled:
        yield _nothing
        return
    from tqdm.auto import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal (logs, CI).
    with tqdm(total=total, desc=desc, disable=None, file=sys.stderr, delay=DELAY,
              leave=False, unit=unit, dynamic_ncols=True) as bar:
        yield lambda n=1: bar.update(n)


def _nothing(n: int = 1) -> None:
    pass


def progress_bar(batches: Iterable[Any], desc: str, enabled: bool) -> Iterator[Any]:
    """``batches`` as they come, with a delayed bar on stderr when ``enabled``."""
    if not enabled:
        yield from batches
        return
    with ticker(desc, enabled, _length(batches)) as tick:
        for batch in batches:
            yield batch
            tick()
