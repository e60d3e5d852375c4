"""Argument checks shared by the training functions: bad values become NaspruneErrors."""

from __future__ import annotations

import math

from nasprune.errors import NaspruneError


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


def check_int(name: str, value: object, low: int | None = None) -> int:
    """An integer (not a bool) ≥ ``low``, else a clear NaspruneError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise NaspruneError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise NaspruneError(f"{name} must be ≥ {low}, got {value}")
    return value
