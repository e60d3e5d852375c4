"""Name → object registries (models, datasets, criteria, strategies, optimizers).

Lookups of unknown names raise :class:`NaspruneError` with a "did you mean" hint, so the
CLI and configs can use plain strings.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nasprune.errors import NaspruneError

T = TypeVar("T")


def shown(name: object) -> str:
    """``name`` for a one-line message: control characters (newlines...) escaped."""
    text = str(name)
    return text if text.isprintable() else repr(text)[1:-1]


def did_you_mean(name: str, choices: list[str]) -> str:
    """A short hint naming the closest valid choice, or listing them all."""
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return "choose from: " + ", ".join(sorted(choices))


class Registry(Generic[T]):
    """A named collection of factories; ``kind`` words the error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if not isinstance(name, str) or name not in self._items:
            raise NaspruneError(
                f"unknown {self.kind} '{shown(name)}': "
                f"{did_you_mean(str(name), list(self._items))}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
