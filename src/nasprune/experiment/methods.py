"""The compression methods an experiment compares: re-exported from :mod:`nasprune.methods`.

The registry (``METHODS``, ``Context``, ``Pruned``, ``register_method``, ``smallest_cut``)
is :mod:`nasprune.methods.registry`; each method lives beside what it runs. Importing
:mod:`nasprune.methods` registers them all.
"""

from __future__ import annotations

import nasprune.methods  # noqa: F401  (registers every method)
from nasprune.methods.registry import METHODS, Context, Pruned, register_method, smallest_cut

__all__ = ["METHODS", "Context", "Pruned", "smallest_cut", "register_method"]
