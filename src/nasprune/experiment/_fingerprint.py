"""Fingerprints: short hashes of exactly the settings a cached result was computed from.

A re-run reuses the unpruned model or a method's result only when its fingerprint matches,
so changing the fine-tuning recipe recomputes every method, while renaming the experiment
or adding a method recomputes nothing that exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any

from nasprune.config import to_dict
from nasprune.experiment.settings import SECTIONS

if TYPE_CHECKING:
    from nasprune.experiment.config import ExperimentConfig, MethodSpec

# Settings sections that belong to one method each: a method's fingerprint holds its own
# (in ``MethodSpec.settings``), never the others'.
METHOD_SECTIONS = tuple(SECTIONS.values())


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts: what a cached result was computed from."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shared_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """Everything that changes a method's result except the list of methods and labels."""
    d = to_dict(cfg)
    for key in ("name", "note", "methods", "seeds", "threads"):
        d.pop(key, None)
    if cfg.task is not None:  # the task replaces the built-in data set and zoo model
        for key in ("model", "model_kwargs", "data", "data_dir", "data_options"):
            d.pop(key, None)
    if (d.get("latency") or {}).get("runtime") == "torch":
        del d["latency"]["runtime"]  # the default: runs from before the option still match
    return d


def baseline_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """What the cached unpruned model depends on: the task's import path and arguments
    (it brings data and model), or the zoo model and built-in data set."""
    if cfg.task is not None:
        return {"task": cfg.task, "task_args": cfg.task_args, "checkpoint": cfg.checkpoint,
                "seed": cfg.seeds[0], "baseline": dataclasses.asdict(cfg.baseline)}
    return {"model": cfg.model, "model_kwargs": cfg.model_kwargs, "data": cfg.data,
            "data_dir": cfg.data_dir, "data_options": cfg.data_options,
            "checkpoint": cfg.checkpoint, "seed": cfg.seeds[0],
            "baseline": dataclasses.asdict(cfg.baseline)}


def baseline_fingerprint(cfg: ExperimentConfig, device: str) -> str:
    """The unpruned model's: its training, its data and how latency is timed, on ``device``."""
    return fingerprint(baseline_settings(cfg), {"latency": shared_settings(cfg)["latency"]},
                       device)


def method_fingerprint(cfg: ExperimentConfig, spec: MethodSpec, seed: int,
                       baseline_fp: str) -> str:
    """One method's result: the shared settings, its own entry, the seed and the baseline."""
    common = shared_settings(cfg)
    for key in METHOD_SECTIONS:  # the method's own section is in spec.settings
        common.pop(key, None)
    own = spec.to_dict()
    if (own.get("settings") or {}).get("rungs", 0) is None:
        del own["settings"]["rungs"]  # the default: searches from before the option match
    return fingerprint(common, own, seed, baseline_fp)


__all__ = ["baseline_fingerprint", "baseline_settings", "fingerprint", "method_fingerprint",
           "shared_settings"]
