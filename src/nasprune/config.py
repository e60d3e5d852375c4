"""Typed configuration: dataclass defaults < YAML file < overrides (CLI flags), validated.

Every section is a dataclass; ``load_config(cls, path, overrides)`` builds one from a YAML
file and a dict of overrides and rejects anything it does not understand with one clear
message: malformed YAML (with its line), unknown keys (with a "did you mean"), wrong types,
NaN/infinite numbers, values outside their range or not among the registered names.
Field constraints live in ``field(metadata=...)``: ``min``/``max`` (inclusive), ``gt``/``lt``
(exclusive) and ``choices`` (a callable returning the allowed names). ``save_resolved``
writes the final config next to a result so a run can be repeated exactly.

Reading YAML lives in :mod:`nasprune._yaml`, checking values in :mod:`nasprune._config_fields`;
``read_yaml`` and ``from_dict`` stay importable from here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from nasprune._config_fields import from_dict, type_name
from nasprune._io import write_atomic
from nasprune._yaml import read_yaml
from nasprune.errors import NaspruneError
from nasprune.registry import did_you_mean

C = TypeVar("C")


def _registry_names(module: str, attr: str) -> Callable[[], list[str]]:
    """Allowed names read from a registry when validating (imported only then)."""

    def names() -> list[str]:
        import importlib

        return getattr(importlib.import_module(module), attr).names()

    return names


def _kw(default: Any, **meta: Any) -> Any:
    """A dataclass field with validation constraints (``min``, ``choices``, ...) as metadata."""
    return field(default=default, metadata=meta)


def _list(default: list) -> Any:
    """A list field whose default is copied for every instance."""
    return field(default_factory=lambda: list(default))


@dataclass
class TrainConfig:
    """What ``nasprune train`` trains, on what, and how (see ``nasprune.fit``)."""

    SECTION: ClassVar[str] = "train"

    model: str = _kw("digitscnn", choices=_registry_names("nasprune.models", "MODELS"))
    data: str = _kw("digits", choices=_registry_names("nasprune.data", "DATASETS"))
    data_dir: str | None = None
    epochs: int = _kw(10, min=0)
    batch_size: int = _kw(128, min=1)
    optimizer: str = _kw("sgd", choices=_registry_names("nasprune.train.optim", "OPTIMIZERS"))
    lr: float | None = _kw(None, gt=0.0)  # None: the optimizer's default
    momentum: float = _kw(0.9, min=0.0, lt=1.0)
    weight_decay: float = _kw(5e-4, min=0.0)
    schedule: str = _kw("cosine",
                        choices=_registry_names("nasprune.train.schedule", "SCHEDULES"))
    label_smoothing: float = _kw(0.0, min=0.0, lt=1.0)
    bn_l1: float = _kw(0.0, min=0.0)
    augment: bool = True
    seed: int = _kw(0, min=0)
    device: str | None = None  # None: CUDA when available
    out: str | None = None  # None: runs/<model>-<data>


def _nest(overrides: dict | None) -> dict:
    """Overrides with dotted keys ("train.epochs") nested; None values mean "not given"."""
    out: dict = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if not isinstance(key, str):
            raise NaspruneError(f"override keys must be strings, got {key!r}")
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise NaspruneError(f"override '{key}' conflicts with a value for '{p}'")
        node[leaf] = _nest(value) if isinstance(value, dict) else value
    return out


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(cls: type[C], path: str | os.PathLike | None = None,
                overrides: dict | None = None, section: str | None = None) -> C:
    """Defaults of ``cls`` < YAML file ``path`` < ``overrides`` → a validated ``cls``.

    ``section`` (default ``cls.SECTION``): when the file has a top-level mapping of that
    name, only it is read (other sections belong to other commands); otherwise the whole
    file is the section. Raises NaspruneError naming the offending key or line.
    """
    section = section or getattr(cls, "SECTION", None)
    data = read_yaml(path) if path is not None else {}
    if section and section in data:
        if not isinstance(data[section], dict):
            raise NaspruneError(f"the {section} section of '{path}' must be a mapping, got "
                                f"{type_name(data[section])}")
        data = data[section]
    return from_dict(cls, _merge(data, _nest(overrides)), section)


def bundled_config(name: str) -> Path:
    """Path of a config file shipped in ``nasprune/configs`` (``name`` with or without .yaml)."""
    from importlib.resources import files

    folder = Path(str(files("nasprune") / "configs"))
    available = sorted(p.name for p in folder.glob("*.yaml"))
    file = name if name.endswith(".yaml") else f"{name}.yaml"
    if file not in available:
        raise NaspruneError(f"no bundled config '{name}': "
                            f"{did_you_mean(file, available) if available else 'none ship'}")
    return folder / file


# ---- writing -----------------------------------------------------------------------------

def to_dict(cfg: Any) -> dict:
    """Plain data (tuples as lists) for YAML/JSON output."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def save_resolved(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved ``cfg`` as YAML (under its section name), atomically."""
    data = to_dict(cfg)
    section = getattr(cfg, "SECTION", None)
    if section:
        data = {section: data}
    text = ("# resolved nasprune config: defaults < config file < command-line flags\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return write_atomic(path, text)


__all__ = ["TrainConfig", "bundled_config", "from_dict", "load_config", "read_yaml",
           "save_resolved", "to_dict"]
