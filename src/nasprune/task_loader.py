"""A user's task named by an import path: ``package.module:factory`` or ``file.py:factory``.

The command line (``--task``) and many-worker searches rebuild the user's task from this
path and its keyword arguments in every process — never from a pickled object, which
would not survive another host, another Python or a new version of the user's code.

The contract: ``factory(**task_args)`` returns a :class:`~nasprune.task.Task`, or a pair
``(task, model)`` whose model is a ``torch.nn.Module``. The model serves when no
checkpoint is given; with a checkpoint, it is the architecture the checkpoint's weights
(and pruned widths) are loaded into, which is how a model that nasprune cannot rebuild on
its own (a user's module) is read back.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from nasprune.errors import NaspruneError
from nasprune.task import Task

CONTRACT = "a nasprune.Task or a (Task, torch.nn.Module) pair"


@dataclass
class LoadedTask:
    """What ``--task SPEC --task-arg K=V`` resolved to, and how to name it again."""

    spec: str
    args: dict[str, Any] = field(default_factory=dict)
    task: Task = field(default_factory=Task)
    model: nn.Module | None = None

    def record(self) -> dict[str, Any]:
        """The import path and arguments, for result files (a re-run rebuilds the task)."""
        return {"task": self.spec, "task_args": dict(self.args)}

    def model_from(self, checkpoint: str | os.PathLike | None) -> nn.Module:
        """The model to work on, in eval mode: the checkpoint's (loaded into a copy of the
        factory's model when it gives one), else the factory's."""
        if checkpoint is None:
            if self.model is None:
                raise NaspruneError(f"the task factory '{self.spec}' returns no model: pass "
                                    "--checkpoint DIR, or return (task, model) from it")
            return self.model.eval()
        from nasprune.checkpoint import load

        if not Path(checkpoint).is_dir():
            raise NaspruneError(f"checkpoint directory not found: {checkpoint}")
        return load(checkpoint, base=self.model)


def split_spec(spec: str) -> tuple[str, str]:
    """``(module or file, function)`` of ``spec``; the last ``:`` splits (``C:\\x.py:f``)."""
    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise NaspruneError(f"--task must look like package.module:function or "
                            f"path/to/file.py:function, got '{spec}'")
    return where, name


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def import_target(where: str) -> Any:
    """The module ``where`` names: a dotted module (the current directory is searched too,
    as ``python -m`` would) or a ``.py`` file (its directory on the path while it runs, so it
    can import its neighbours)."""
    if _is_file(where):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise NaspruneError(f"task file not found: {where}")
        name = f"nasprune_user_task_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise NaspruneError(f"cannot import the task file '{where}': not a Python file")
        module = importlib.util.module_from_spec(spec)
        search_dir, modname = str(path.parent), name
    else:
        module, search_dir, modname = None, os.getcwd(), where
    added = search_dir not in sys.path
    if added:
        sys.path.insert(0, search_dir)
    try:
        if module is None:
            return importlib.import_module(where)
        sys.modules[modname] = module  # dataclasses and pickling look the module up by name
        spec.loader.exec_module(module)
        return module
    except Exception as exc:  # an ImportError, or any error the module raises on import
        if module is not None:
            sys.modules.pop(modname, None)
        raise NaspruneError(f"cannot import the task module '{where}': "
                            f"{_first_line(exc)}") from exc
    finally:
        if added:
            sys.path.remove(search_dir)


def _checked(result: Any, spec: str) -> tuple[Task, nn.Module | None]:
    """``(task, model)`` of what the factory returned; one clear error for anything else."""
    if isinstance(result, Task):
        return result, None
    if (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Task)
            and isinstance(result[1], nn.Module)):
        return result[0], result[1]
    if isinstance(result, tuple):
        got = f"a tuple of ({', '.join(type(r).__name__ for r in result)})"
    else:
        got = f"a {type(result).__name__}"
    raise NaspruneError(f"the task factory '{spec}' returned {got}; expected {CONTRACT}")


def load_task(spec: str, args: dict[str, Any] | None = None) -> LoadedTask:
    """Import ``spec`` (``module:function`` or ``file.py:function``) and call the function
    with ``args`` as keyword arguments; see the module docstring for what it must return."""
    args = dict(args or {})
    where, name = split_spec(spec)
    module = import_target(where)
    if not hasattr(module, name):
        public = sorted(n for n, v in vars(module).items() if not n.startswith("_")
                        and inspect.isfunction(v))
        from nasprune.registry import did_you_mean

        hint = did_you_mean(name, public) if public else "it defines no functions"
        raise NaspruneError(f"the task module '{where}' has no attribute '{name}': {hint}")
    factory = getattr(module, name)
    if not callable(factory):
        raise NaspruneError(f"'{spec}' is a {type(factory).__name__}, not a function; "
                            f"it must return {CONTRACT}")
    try:
        result = factory(**args)
    except NaspruneError as exc:
        raise NaspruneError(f"the task factory '{spec}' failed: {exc}") from exc
    except Exception as exc:  # the user's code: wrong --task-arg names, missing files, ...
        raise NaspruneError(f"the task factory '{spec}' failed: {_first_line(exc)}") from exc
    task, model = _checked(result, spec)
    return LoadedTask(spec=spec, args=args, task=task, model=model)
