"""Wall-clock timing of a block of code (training time, search time)."""

from __future__ import annotations

import time
from types import TracebackType


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``; uses ``time.perf_counter``.

    While the block runs, ``seconds`` reads the time elapsed so far.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._stop: float | None = None

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        self._stop = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop = time.perf_counter()

    @property
    def seconds(self) -> float:
        if self._start is None:
            return 0.0
        end = self._stop if self._stop is not None else time.perf_counter()
        return end - self._start
