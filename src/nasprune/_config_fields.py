"""Validating plain config data against a dataclass: types, finiteness, ranges, names.

:func:`from_dict` builds a config dataclass from a dict (a YAML section), checking each
value against the field's annotation (nested dataclasses, lists, dicts, unions, literals)
and its ``field(metadata=...)`` constraints: ``min``/``max`` (inclusive), ``gt``/``lt``
(exclusive) and ``choices`` (a callable returning the allowed names). Re-exported as
:func:`nasprune.config.from_dict`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, TypeVar, Union

from nasprune.errors import NaspruneError
from nasprune.registry import did_you_mean, shown

C = TypeVar("C")


def type_name(value: Any) -> str:
    """How a config value's type reads in an error message ("mapping", "integer", ...)."""
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _bad(name: str, expected: str, value: Any) -> NaspruneError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return NaspruneError(f"{name} must be {expected}, got {shown} ({type_name(value)})")


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
                            f"{type_name(data)}")
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


__all__ = ["from_dict", "type_name"]
