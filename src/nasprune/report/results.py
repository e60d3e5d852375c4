"""Reading a finished run's ``results.json``: what every renderer starts from.

The runner (:mod:`nasprune.experiment`) writes the file; the report only reads it, so
rendering needs nothing from the experiment package. ``nasprune.experiment.load_result``
is this function.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nasprune._io import read_json
from nasprune.errors import NaspruneError

RESULTS_FILE = "results.json"


def load_result(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``results.json`` of a finished run (NaspruneError when it is not a run directory)."""
    doc = read_json(Path(run_dir) / RESULTS_FILE)
    if not isinstance(doc, dict) or "rows" not in doc:
        raise NaspruneError(f"'{run_dir}' is not an experiment run directory (no readable "
                            "results.json): run `nasprune experiment` first")
    return doc


__all__ = ["RESULTS_FILE", "load_result"]
