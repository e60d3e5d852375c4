"""The run directory's files: where each result lives, how it is written, when it is reused.

A method's result is built in a temp directory beside ``methods/<name>/`` and renamed into
place only when complete (:func:`commit_dir`); :func:`reusable` tells whether a finished
result can stand for a re-run. JSON goes through :mod:`nasprune._io` (atomic).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nasprune import _io
from nasprune._io import read_json

if TYPE_CHECKING:
    from nasprune.experiment.config import ExperimentConfig, MethodSpec

RESULT_FILE = "result.json"
MODEL_DIR = "model"


@dataclass
class ExperimentResult:
    """What :func:`experiment` produced: one row per method and seed, and where it is."""

    run_dir: Path
    config: ExperimentConfig
    rows: list[dict[str, Any]]
    baseline: dict[str, Any]
    computed: list[str] = field(default_factory=list)  # method dirs computed by this call
    skipped: list[str] = field(default_factory=list)  # finished earlier, reused
    seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [r["method"] for r in self.rows if r["status"] != "ok"]

    def row(self, method: str, seed: int | None = None) -> dict[str, Any]:
        """The row of ``method`` (and ``seed`` when the experiment has several)."""
        for r in self.rows:
            if r["method"] == method and (seed is None or r["seed"] == seed):
                return r
        raise KeyError(method)

    def markdown(self) -> str:
        from nasprune.report.tables import to_markdown

        return to_markdown(self.rows, self.baseline)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


def write_json(path: Path, obj: Any) -> Path:
    """``obj`` as JSON at ``path``, atomically; arrays, paths and configs become plain data."""
    return _io.write_json(path, obj, indent=1, default=_jsonable)


def log(progress: bool, msg: str) -> None:
    """A progress line on stderr (stdout stays free for the caller)."""
    if progress:
        print(msg, file=sys.stderr, flush=True)


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions and machine: what a reader needs to judge the timings."""
    import platform

    import nasprune

    dev = torch.device(device) if device is not None else torch.device("cpu")
    name = (torch.cuda.get_device_name(dev) if dev.type == "cuda" and torch.cuda.is_available()
            else platform.processor() or platform.machine())
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "nasprune": nasprune.__version__,
        "platform": platform.platform(),
        "device": str(dev),
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def method_dir_name(spec: MethodSpec, seed: int, seeds: list[int]) -> str:
    return spec.slug if len(seeds) == 1 else f"{spec.slug}-seed{seed}"


def reusable(folder: Path, fp: str) -> dict[str, Any] | None:
    """The finished result in ``folder`` when it was computed from fingerprint ``fp``."""
    old = read_json(folder / RESULT_FILE)
    if (old and old.get("status") == "ok" and old.get("fingerprint") == fp
            and (folder / MODEL_DIR / "spec.json").exists()):
        return old
    return None


def commit_dir(tmp: Path, final: Path) -> None:
    """Move the finished ``tmp`` directory to ``final``, replacing an old one."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["MODEL_DIR", "RESULT_FILE", "ExperimentResult", "commit_dir", "environment", "log", "method_dir_name",
           "read_json", "reusable", "write_json"]
