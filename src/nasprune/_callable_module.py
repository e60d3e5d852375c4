"""Let a package be called like the function it is named after.

``nasprune.search(...)`` and ``nasprune.experiment(...)`` are public functions, yet
``nasprune.search`` and ``nasprune.experiment`` are also packages: once a subpackage is
imported, Python sets the parent's attribute to the module, shadowing the function. Making
the module callable keeps both spellings working.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


def make_callable(module_name: str, fn: Callable[..., Any]) -> None:
    """Calling the module ``module_name`` calls ``fn``."""

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
