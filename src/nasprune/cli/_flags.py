"""Flags several verbs share, and the parsing of their values.

Each ``add_*`` writes one flag (or one block of flags that always travel together) the same
way for every verb; the help texts differ per verb where the meaning does, so they are
parameters. Nothing heavy is imported here: ``nasprune --help`` builds every verb's parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from nasprune.errors import NaspruneError

DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda if any)"

# Defaults of the fit flags that mean "not given", so a --config file's values are kept.
NO_DEFAULTS = dict.fromkeys(("epochs", "batch_size", "optimizer", "momentum", "weight_decay",
                             "schedule", "label_smoothing", "augment", "seed"))


def add_checkpoint(p: argparse.ArgumentParser, help: str, required: bool = True) -> None:
    """``--checkpoint DIR``: a directory written by ``nasprune.save``."""
    p.add_argument("--checkpoint", required=required, default=None, metavar="DIR", help=help)


def add_data(p: argparse.ArgumentParser, help: str | None = None,
             download: bool = False) -> None:
    """``--data NAME`` and ``--data-dir DIR``; with ``download``, ``--download`` too.

    The verbs that may fetch a data set (train, evaluate, finetune) also say what
    ``--data-dir`` is for; the others leave it bare, as they always have.
    """
    p.add_argument("--data", default=None, metavar="NAME", help=help)
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the data set lives" if download else None)
    if download:
        p.add_argument("--download", action="store_true",
                       help="fetch the data set's official files if they are missing")


def add_device(p: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    p.add_argument("--device", default=None, help=help)


def add_threads(p: argparse.ArgumentParser, default: int | None = None,
                help: str = "CPU threads") -> None:
    p.add_argument("--threads", type=int, default=default, metavar="N", help=help)


def add_device_threads(p: argparse.ArgumentParser, **threads: Any) -> None:
    """``--device`` then ``--threads`` (``threads`` goes to :func:`add_threads`)."""
    add_device(p)
    add_threads(p, **threads)


RUNTIME_CHOICES = ("torch", "torch-compile", "onnxruntime")


def add_runtime(p: argparse.ArgumentParser) -> None:
    """``--runtime``, ``--latency-threads``, ``--latency-batch``: where latency is measured."""
    p.add_argument("--runtime", default=None, choices=RUNTIME_CHOICES,
                   help="runtime latency is measured on: torch (eager), torch-compile, "
                   "onnxruntime (CPU provider; CUDA with --device cuda; pip install "
                   "'nasprune[onnxruntime]') (default torch)")
    p.add_argument("--latency-threads", type=int, default=None, metavar="N",
                   help="CPU threads of the runtime (default 1)")
    p.add_argument("--latency-batch", type=int, default=None, metavar="N",
                   help="batch size latency is measured at (default 1)")


def make_runtime(name: str | None, threads: int | None, batch: int | None,
                 device: str | None) -> Any:
    """The :class:`~nasprune.metrics.runtime.Runtime` the runtime flags describe."""
    from nasprune.metrics.runtime import Runtime

    name = name or "torch"
    if name not in RUNTIME_CHOICES:
        raise NaspruneError(f"unknown runtime '{name}': choose from "
                            f"{', '.join(RUNTIME_CHOICES)}")
    dev = "cuda" if device is not None and str(device).startswith("cuda") else "cpu"
    return Runtime("torch" if name == "torch-compile" else name,
                   threads=1 if threads is None else threads,
                   batch_size=1 if batch is None else batch, device=dev,
                   compile=name == "torch-compile")


def add_quiet(p: argparse.ArgumentParser, help: str = "no progress bar") -> None:
    p.add_argument("--quiet", action="store_true", help=help)


def add_out(p: argparse.ArgumentParser, metavar: str, help: str, default: str | None = None,
            required: bool = False) -> None:
    p.add_argument("--out", default=default, required=required, metavar=metavar, help=help)


def add_config(p: argparse.ArgumentParser, section: str, bundled: str = "") -> None:
    """``--config FILE.yaml``: a YAML file whose ``section:`` (or flat keys) flags override."""
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help=f"YAML config (a `{section}:` section or flat keys){bundled}; flags "
                   "override it")


def add_fit_flags(p: argparse.ArgumentParser, defaults: dict, lr_help: str,
                  seed_help: str | None = None) -> None:
    """The optimisation flags ``train`` and ``finetune`` share (``nasprune.fit``'s)."""
    d = defaults
    p.add_argument("--epochs", type=int, default=d["epochs"], metavar="N")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], metavar="N")
    p.add_argument("--optimizer", default=d["optimizer"],
                   help="sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, adadelta")
    p.add_argument("--lr", type=float, default=None, help=lr_help)
    p.add_argument("--momentum", type=float, default=d["momentum"])
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    p.add_argument("--schedule", default=d["schedule"], help="constant, step, cosine, onecycle")
    p.add_argument("--label-smoothing", type=float, default=d["label_smoothing"])
    p.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                   default=d["augment"], help="no random crops/flips")
    p.add_argument("--seed", type=int, default=d["seed"], help=seed_help)
    add_device_threads(p)


def set_threads(n: int | None) -> None:
    """Apply ``--threads`` (None: leave torch's default)."""
    if n is not None:
        if n < 1:
            raise NaspruneError(f"--threads must be at least 1, got {n}")
        import torch

        torch.set_num_threads(n)


def config_path(arg: str | None) -> str | None:
    """A config file path, or the name of a bundled one (``--config demo``)."""
    from pathlib import Path

    if arg is None or Path(arg).exists() or "/" in arg or "\\" in arg:
        return arg
    from nasprune.config import bundled_config

    try:
        return str(bundled_config(arg))
    except NaspruneError:
        return arg  # reported as a missing file by the loader


def csv_list(text: str | None, cast: Callable[[str], Any] = str) -> list | None:
    """``a,b,c`` as a list (None stays None: "not given")."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [cast(t) for t in items]
    except ValueError as exc:
        raise NaspruneError(f"cannot read the list '{text}': {exc}") from None


def parse_options(items: list[str] | None, flag: str = "--option") -> dict | None:
    """Repeated ``--option KEY=VALUE`` as a dict; values are read as YAML (``3`` is an int)."""
    if not items:
        return None
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NaspruneError(f"{flag} must look like KEY=VALUE, got '{item}'")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise NaspruneError(f"{flag} {item}: cannot read the value: {exc}") from None
    return out


def add_task(p: argparse.ArgumentParser) -> None:
    """``--task MODULE:FUNCTION`` and repeated ``--task-arg KEY=VALUE``: a user's task."""
    p.add_argument("--task", default=None, metavar="MODULE:FUNCTION",
                   help="your own data, loss and metric: a function (package.module:function "
                   "or path/to/file.py:function) returning a nasprune.Task or (task, model); "
                   "replaces --data")
    p.add_argument("--task-arg", action="append", default=None, metavar="KEY=VALUE",
                   help="a keyword argument of the --task function, read as YAML "
                   "(repeatable)")


def load_task_flags(args: argparse.Namespace) -> Any:
    """The :class:`~nasprune.task_loader.LoadedTask` of ``--task``/``--task-arg`` (None
    without ``--task``); ``--data`` with it is a contradiction, reported as one."""
    if args.task is None:
        if args.task_arg:
            raise NaspruneError("--task-arg needs --task MODULE:FUNCTION")
        return None
    if getattr(args, "data", None) is not None:
        raise NaspruneError("give --task or --data, not both: the task brings its own data")
    from nasprune.task_loader import load_task

    return load_task(args.task, parse_options(args.task_arg, "--task-arg"))
