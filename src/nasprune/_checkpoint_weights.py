"""Reading a checkpoint's tensors back: verified bytes, decoded safely, onto a rebuilt model.

The weights file is size- and sha256-checked before safetensors decodes it (no pickle), the
decoded tensors must be exactly the ones the spec lists, and the model they go into is built
from registered code only (on the meta device first, so a hostile spec's sizes cost
nothing). Used by :func:`nasprune.checkpoint.load`.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import torch
from torch import nn

from nasprune.errors import NaspruneError


def read_weights(directory: Path, info: dict) -> dict[str, torch.Tensor]:
    """Read, size-check, hash-check and decode the weights file (safetensors, no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = directory / info["file"]  # one of WEIGHTS_FILES, checked by _check_header
    try:
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise NaspruneError(f"checkpoint '{directory}' has no {info['file']}") from exc
    except OSError as exc:
        raise NaspruneError(f"cannot read '{path}': {exc.strerror or exc}") from exc
    if len(blob) < info["bytes"]:
        raise NaspruneError(f"'{path}' is truncated: {len(blob)} bytes, expected "
                            f"{info['bytes']}")
    if len(blob) > info["bytes"]:
        raise NaspruneError(f"'{path}' has {len(blob)} bytes, expected {info['bytes']}: "
                            "the file was modified")
    if hashlib.sha256(blob).hexdigest() != info["sha256"]:
        raise NaspruneError(f"'{path}' failed its sha256 check: the weights were modified "
                            "or corrupted")
    try:
        return st_load(blob)
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise NaspruneError(f"'{path}' is not a valid safetensors file: {exc}") from exc


def base_model(doc: dict, base: nn.Module | None) -> nn.Module:
    """A fresh model to resize: a copy of ``base``, or the registered family of the spec."""
    if base is not None:
        if not isinstance(base, nn.Module):
            raise NaspruneError(f"base must be a torch.nn.Module, got {type(base).__name__}")
        return copy.deepcopy(base)
    arch = doc["arch"]
    if arch is None:
        raise NaspruneError("this checkpoint holds a user model (no registered family): "
                            "pass the original module, e.g. load(path, base=MyNet())")
    from nasprune.models import MODELS, create_model

    if arch["name"] not in MODELS:
        raise NaspruneError(f"the checkpoint's model '{arch['name']}' is not a registered "
                            f"model: {_hint(arch['name'], MODELS)}")
    kwargs = arch.get("kwargs", {})
    # On the meta device first: the spec's widths are checked against the family without
    # allocating anything, so absurd sizes in a hostile spec cost nothing.
    if not doc.get("aliases"):
        try:
            with torch.device("meta"):
                model = create_model(arch["name"], **kwargs)
            if not _transient_buffers(model):
                return model
        except NaspruneError:
            raise
        except Exception:  # noqa: BLE001  (a family that cannot build on meta: build for real)
            pass
    with torch.random.fork_rng(devices=[]):  # building a model must not move the user's RNG
        try:
            return create_model(arch["name"], **kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise NaspruneError(f"cannot build model '{arch['name']}' with the checkpoint's "
                                f"arguments {kwargs}: {exc}") from exc


def _transient_buffers(model: nn.Module) -> bool:
    """Buffers outside the state dict would stay uninitialised after ``to_empty``."""
    state = model.state_dict(keep_vars=True)
    return any(all(b is not v for v in state.values()) for b in model.buffers())


def _hint(name: str, registry) -> str:
    from nasprune.registry import did_you_mean

    return did_you_mean(name, registry.names())


def check_weights(tensors: dict[str, torch.Tensor], spec_tensors: dict[str, dict]) -> None:
    """The decoded weights must be exactly the tensors the spec describes."""
    for key, rec in spec_tensors.items():
        if key not in tensors:
            raise NaspruneError(f"the weights file has no tensor '{key}' that spec.json lists")
        t = tensors[key]
        if list(t.shape) != rec["shape"] or str(t.dtype).removeprefix("torch.") != rec["dtype"]:
            raise NaspruneError(
                f"tensor '{key}' is {t.dtype} {list(t.shape)} in the weights file but "
                f"{rec['dtype']} {rec['shape']} in spec.json: the files do not belong together")
    extra = sorted(set(tensors) - set(spec_tensors))
    if extra:
        raise NaspruneError(f"the weights file has tensor '{extra[0]}' that spec.json does not "
                            "list")


