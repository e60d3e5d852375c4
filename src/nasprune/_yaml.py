"""Reading a YAML config strictly: duplicate keys, bad syntax and non-mappings are errors.

Every error is one NaspruneError naming the file and, where YAML knows it, the line and
column. Used by :func:`nasprune.config.read_yaml` (re-exported there).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from nasprune._config_fields import type_name
from nasprune.errors import NaspruneError


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
                            f"not a {type_name(data)}")
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


__all__ = ["read_yaml"]
