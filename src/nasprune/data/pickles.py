"""Restricted unpickling of the official CIFAR python batches.

Why pickle at all: the official CIFAR-10 "python version" *is* a set of pickles (dicts of
numpy arrays and label lists), and it is the format most people have on disk. These are
data arrays, never model weights (weights are safetensors only, see DESIGN.md). Still, a
plain ``pickle.load`` runs whatever a hostile file asks for, so the unpickler below
resolves only an allow-list of numpy reconstructors and refuses everything else.
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any

from nasprune.errors import NaspruneError


def _numpy_attr(module: str, name: str) -> Any:
    """numpy 2 moved ``numpy.core`` to ``numpy._core``; resolve either spelling."""
    for mod in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"{module}.{name} is not available in this numpy")


# Everything a pickled numpy array (any protocol, Python 2 or 3) needs, and nothing more.
_ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 rebuild bytes with it
})


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        # latin1: the official batches were written by Python 2; latin1 maps its byte
        # strings 1:1, which numpy needs to rebuild the arrays (numpy's own advice).
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            if module == "_codecs":
                import _codecs

                return _codecs.encode
            return _numpy_attr(module, name)
        raise NaspruneError(
            f"refusing to unpickle '{module}.{name}' from '{self.source}': official CIFAR "
            f"batches hold only numpy arrays and lists; the file is not a CIFAR batch or "
            f"was tampered with")

    def persistent_load(self, pid: Any) -> Any:
        raise NaspruneError(f"refusing persistent ids in '{self.source}'")


def load_data_pickle(data: bytes, source: str) -> Any:
    """Unpickle ``data`` allowing only builtins and numpy arrays; errors name ``source``."""
    try:
        return _DataUnpickler(io.BytesIO(data), source).load()
    except NaspruneError:
        raise
    except Exception as e:  # truncated or garbage input raises many kinds of errors
        raise NaspruneError(f"cannot read '{source}': not a valid CIFAR batch ({e})") from e
