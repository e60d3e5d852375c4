"""Typed configuration: dataclass defaults < YAML file < overrides (CLI flags), validated.

Every section is a dataclass; ``load_config(cls, path, overrides)`` builds one from a YAML
file and a dict of overrides and rejects anything it does not understand with one clear
message: malformed YAML (with its line), unknown keys (with a "did you mean"), wrong types,
NaN/infinite numbers, values outside their range or not among the registered names.
Field constraints live in ``field(metadata=...)``: ``min``/``max`` (inclusive), ``gt``/``lt``
(exclusive) and ``choices`` (a callable returning the allowed names). ``save_resolved``
writes the final config next to a result so a run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

import yaml

from nasprune.errors import NaspruneError
from nasprune.registry import did_you_mean, shown

C = TypeVar("C")


def _registry_names(module: str, attr: str) -> Callable[[], list[str]]:
    """Allowed names read from a registry when validating (imported only then)."""

    def names() -> list[str]:
        import importlib

        return getattr(importlib.import_module(module), attr).names()

    return names


def _kw(default: Any, **meta: Any) -> Any:
    return field(default=default, metadata=meta)


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


# ---- YAML --------------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: reported as "keys must be strings" later
            duplicate = False
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark)
        if not isinstance(key, (list, dict)):
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML file as a dict; an empty file is ``{}``. Errors name the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NaspruneError(f"config file '{path}' does not exist") from exc
    except IsADirectoryError as exc:
        raise NaspruneError(f"config file '{path}' is a directory") from exc
    except UnicodeDecodeError as exc:
        raise NaspruneError(f"config file '{path}' is not UTF-8 text") from exc
    except OSError as exc:
        raise NaspruneError(f"cannot read config file '{path}': {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise NaspruneError(f"malformed YAML in '{path}'{_where(exc)}: {_problem(exc)}") from exc
    except RecursionError as exc:
        raise NaspruneError(f"config file '{path}' is nested too deeply") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NaspruneError(f"config file '{path}' must hold a mapping of keys to values, "
                            f"not a {_type_name(data)}")
    return data


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return f" at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f" at character {exc.position}"
    return ""


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return "unacceptable character"
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    return str(problem or exc).strip()


# ---- validation --------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _bad(name: str, expected: str, value: Any) -> NaspruneError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return NaspruneError(f"{name} must be {expected}, got {shown} ({_type_name(value)})")


def _check_scalar(value: Any, tp: Any, name: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _bad(name, "true or false", value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _bad(name, "an integer", value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(name, "a number", value)
        if not math.isfinite(value):
            raise NaspruneError(f"{name} must be a finite number, got {value}")
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _bad(name, "a string", value)
    if tp is Any or tp is object:
        return value
    raise TypeError(f"config fields of type {tp!r} are not supported")  # a bug in a section


def _convert(value: Any, tp: Any, name: str) -> Any:
    """Check ``value`` against the annotation ``tp``; nested dataclasses are built."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(value, option, name)
            except NaspruneError as exc:
                errors.append(exc)
        if len(options) == 1:
            raise errors[0]
        raise _bad(name, " or ".join(getattr(o, "__name__", str(o)) for o in options), value)
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise NaspruneError(f"{name} must be one of {', '.join(map(repr, args))}, "
                            f"got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _bad(name, "a list", value)
        item = args[0] if args else Any
        items = [_convert(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(name, "a mapping", value)
        vt = args[1] if len(args) == 2 else Any
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise NaspruneError(f"{name}: keys must be strings, got {bad[0]!r}")
        return {k: _convert(v, vt, f"{name}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, name)
    return _check_scalar(value, tp, name)


def _check_constraints(value: Any, meta: typing.Mapping[str, Any], name: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if "min" in meta and value < meta["min"]:
            raise NaspruneError(f"{name} must be ≥ {meta['min']}, got {value}")
        if "max" in meta and value > meta["max"]:
            raise NaspruneError(f"{name} must be ≤ {meta['max']}, got {value}")
        if "gt" in meta and value <= meta["gt"]:
            raise NaspruneError(f"{name} must be > {meta['gt']}, got {value}")
        if "lt" in meta and value >= meta["lt"]:
            raise NaspruneError(f"{name} must be < {meta['lt']}, got {value}")
    if "choices" in meta and isinstance(value, str):
        choices = list(meta["choices"]())
        if value not in choices:
            raise NaspruneError(f"unknown {name.rpartition('.')[2]} '{shown(value)}' in {name}: "
                                f"{did_you_mean(value, choices)}")


def from_dict(cls: type[C], data: Any, where: str | None = None) -> C:
    """Build the dataclass ``cls`` from plain data; missing keys take their defaults."""
    where = where or getattr(cls, "SECTION", None) or "config"
    if not isinstance(data, dict):
        raise NaspruneError(f"the {where} section must be a mapping, got "
                            f"{_type_name(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if not isinstance(key, str):
            raise NaspruneError(f"keys in the {where} section must be strings, got {key!r}")
        if key not in fields:
            raise NaspruneError(f"unknown key '{shown(key)}' in {where} section: "
                                f"{did_you_mean(key, list(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        path = name if where == "config" else f"{where}.{name}"
        value = _convert(data[name], hints[name], path)
        _check_constraints(value, f.metadata, path)
        kwargs[name] = value
    return cls(**kwargs)


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
                                f"{_type_name(data[section])}")
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
    from nasprune.checkpoint import write_atomic

    data = to_dict(cfg)
    section = getattr(cfg, "SECTION", None)
    if section:
        data = {section: data}
    text = ("# resolved nasprune config: defaults < config file < command-line flags\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return write_atomic(path, text)
