"""Argument checks shared across nasprune: a bad number becomes a clear NaspruneError.

Booleans are rejected where an integer or number is asked for (``True`` is an ``int`` to
Python, never a meaningful count or rate here).
"""

from __future__ import annotations

import math

from nasprune.errors import NaspruneError


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: object, low: int | None = None) -> int:
    """An integer (not a bool) ≥ ``low``, else a clear NaspruneError."""
    if not _is_int(value):
        raise NaspruneError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:  # type: ignore[operator]
        raise NaspruneError(f"{name} must be ≥ {low}, got {value}")
    return value  # type: ignore[return-value]


def check_count(name: str, value: object, low: int = 0) -> int:
    """A count: an integer (not a bool) ≥ ``low``, one message naming both requirements."""
    if not _is_int(value) or value < low:  # type: ignore[operator]
        raise NaspruneError(f"{name} must be an integer ≥ {low}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def check_number(name: str, value: object, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True) -> float:
    """A finite real number within bounds (``high`` exclusive), else a clear NaspruneError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NaspruneError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise NaspruneError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (v < low or (v == low and not low_inclusive)):
        bound = "≥" if low_inclusive else ">"
        raise NaspruneError(f"{name} must be {bound} {low:g}, got {value!r}")
    if high is not None and v >= high:
        raise NaspruneError(f"{name} must be < {high:g}, got {value!r}")
    return v


def check_positive_number(name: str, value: object) -> float:
    """A finite number > 0, with one message for every way of missing it."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise NaspruneError(f"{name} must be a positive number, got {value!r}")
    return float(value)


__all__ = ["check_count", "check_int", "check_number", "check_positive_number"]
