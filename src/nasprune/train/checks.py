"""Argument checks of the training functions: those of :mod:`nasprune.validate`.

Kept as a module so ``from nasprune.train.checks import check_int, check_number`` still works.
"""

from __future__ import annotations

from nasprune.validate import check_int, check_number

__all__ = ["check_int", "check_number"]
