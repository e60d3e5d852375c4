"""Checkpoints without pickle: ``spec.json`` (data) + ``weights.safetensors`` (tensors).

``save`` writes the model's family and constructor arguments (``nasprune_arch``), its width
spec (every layer's channel counts, so a pruned model can be rebuilt), how it was pruned,
free-form ``meta`` (metrics, config) and the sha256 of the weights. ``load`` rebuilds the
architecture from registered code only, checks the hash and every shape, and loads the
tensors with safetensors: a downloaded checkpoint can never run code. ``export`` writes
ONNX or TorchScript for deployment.

Overwriting a checkpoint never loses it: the new weights go to the other of two file names
(``weights.safetensors`` / ``weights.1.safetensors``), then ``spec.json``, which names its
weights file, is replaced in one rename, and only then is the old weights file removed. A
kill at any instant leaves a spec whose named weights are complete: the old save or the new.

The atomic file and directory writers live in :mod:`nasprune._io`, reading the weights back
in :mod:`nasprune._checkpoint_weights`, ``export`` in :mod:`nasprune._export`; their public
names stay importable from here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasprune._checkpoint_weights import base_model, check_weights, read_weights
from nasprune._export import EXPORT_FORMATS, export
from nasprune._io import temp_dir_beside, write_atomic, write_files_atomic
from nasprune.errors import NaspruneError
from nasprune.pruning.spec import apply_spec, capture_spec, validate_spec

FORMAT = "nasprune-checkpoint"
VERSION = 1
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.safetensors"
# The alternate name an overwrite writes its weights under, so the old ones stay until the
# new spec is in place. A spec may name only these two files (never a path).
WEIGHTS_FILES = (WEIGHTS_FILE, "weights.1.safetensors")
MAX_SPEC_BYTES = 64 * 2**20  # a spec is small; refuse to parse absurd files


# ---- save ------------------------------------------------------------------------------

def _json_default(obj: Any) -> Any:
    """Plain-data versions of NumPy/torch scalars, arrays, paths, sets and dataclasses."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tied tensors (one storage under several names) are stored once plus an alias."""
    seen: dict[tuple, str] = {}
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for key, t in state.items():
        ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(),
                 tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        unique[key] = t
    return unique, aliases


def _named_weights(directory: Path) -> str | None:
    """The weights file an existing ``spec.json`` in ``directory`` names, if any."""
    try:
        name = json.loads((directory / SPEC_FILE).read_text(encoding="utf-8"))["weights"]["file"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return name if name in WEIGHTS_FILES else None


def save(model: nn.Module, directory: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write ``spec.json`` + ``weights.safetensors`` into ``directory`` (atomically).

    ``meta`` is any JSON-able dict (metrics, config, notes) kept in the spec. Returns the
    directory. Other files already in the directory are left alone. Overwriting a
    checkpoint alternates the weights file name (module docstring), so a save killed
    halfway leaves the previous checkpoint loadable.
    """
    from safetensors.torch import save as st_save

    if not isinstance(model, nn.Module):
        raise NaspruneError(f"save needs a torch.nn.Module, got {type(model).__name__}")
    if meta is not None and not isinstance(meta, dict):
        raise NaspruneError(f"meta must be a dict, got {type(meta).__name__}")
    directory = Path(directory)
    old = _named_weights(directory)
    name = WEIGHTS_FILES[1] if old == WEIGHTS_FILE else WEIGHTS_FILE
    unique, aliases = _dedupe(model.state_dict())
    blob = st_save({k: v.detach().to("cpu", copy=True).contiguous() for k, v in unique.items()})
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "arch": getattr(model, "nasprune_arch", None),
        "pruning": getattr(model, "nasprune_pruning", None),
        "meta": meta,
        "weights": {"file": name, "sha256": hashlib.sha256(blob).hexdigest(),
                    "bytes": len(blob)},
        "aliases": aliases,
        "spec": capture_spec(model),
    }
    text = json.dumps(doc, indent=1, default=_json_default)
    write_files_atomic(directory, {name: blob, SPEC_FILE: text.encode()})  # spec last
    if old is not None and old != name:
        try:  # the new spec is in place: the old weights are no longer named by anything
            (directory / old).unlink(missing_ok=True)
        except OSError:
            pass  # a stale file costs disk space only; the next save replaces it
    return directory


# ---- load ------------------------------------------------------------------------------

def _check_header(doc: object, where: Path) -> dict:
    """Validate everything in spec.json except the width spec itself."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise NaspruneError(f"'{where}' is not a nasprune checkpoint spec")
    if doc.get("version") != VERSION:
        raise NaspruneError(f"'{where}' has checkpoint version {doc.get('version')!r}; this "
                            f"nasprune reads version {VERSION}")
    arch = doc.get("arch")
    if arch is not None and not (isinstance(arch, dict) and isinstance(arch.get("name"), str)
                                 and isinstance(arch.get("kwargs", {}), dict)):
        raise NaspruneError(f"'{where}': 'arch' must be null or {{name, kwargs}}")
    for key in ("pruning", "meta"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise NaspruneError(f"'{where}': '{key}' must be null or an object")
    weights = doc.get("weights")
    if not (isinstance(weights, dict) and weights.get("file") in WEIGHTS_FILES
            and isinstance(weights.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", weights["sha256"])
            and isinstance(weights.get("bytes"), int) and weights["bytes"] >= 0):
        raise NaspruneError(f"'{where}': 'weights' must name {' or '.join(WEIGHTS_FILES)} "
                            "with its sha256 and size")
    aliases = doc.get("aliases", {})
    if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        raise NaspruneError(f"'{where}': 'aliases' must map tensor names to tensor names")
    validate_spec(doc.get("spec"))
    return doc


def read_spec(directory: str | os.PathLike) -> dict:
    """The validated contents of a checkpoint's ``spec.json`` (no weights are read)."""
    path = Path(directory) / SPEC_FILE
    if not Path(directory).is_dir():
        raise NaspruneError(f"checkpoint directory '{directory}' does not exist")
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise NaspruneError(f"'{path}' is {size} bytes, too large to be a spec")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NaspruneError(f"'{directory}' is not a checkpoint: {SPEC_FILE} is missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise NaspruneError(f"cannot read '{path}': {exc}") from exc
    except json.JSONDecodeError as exc:
        raise NaspruneError(f"'{path}' is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    except RecursionError as exc:
        raise NaspruneError(f"'{path}' is nested too deeply") from exc
    return _check_header(doc, path)


def load(directory: str | os.PathLike, base: nn.Module | None = None) -> nn.Module:
    """Rebuild a saved model (pruned or not) and load its weights; returned in eval mode.

    Registered models are rebuilt from their family; a user model needs ``base`` (the
    original, unpruned module; it is copied, not changed). Any corrupt, tampered or
    mismatched file raises NaspruneError naming the problem; nothing is unpickled.
    """
    directory = Path(directory)
    doc = read_spec(directory)
    tensors = read_weights(directory, doc["weights"])
    for alias, target in doc.get("aliases", {}).items():
        if target not in tensors:
            raise NaspruneError(f"spec.json aliases '{alias}' to '{target}', which "
                                f"{doc['weights']['file']} does not hold")
        tensors[alias] = tensors[target]
    check_weights(tensors, doc["spec"]["tensors"])
    model = apply_spec(base_model(doc, base), doc["spec"])
    if any(t.is_meta for t in model.state_dict().values()):
        model = model.to_empty(device="cpu")  # every value is then loaded below
    # safetensors keep no per-module state-dict versions; the rebuilt model's own are the
    # saved model's (same code), and some modules refuse a load without them (MNASNet).
    tensors = OrderedDict(tensors)
    tensors._metadata = getattr(model.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise NaspruneError(f"the weights do not fit the rebuilt model: "
                            f"{str(exc).splitlines()[0]}") from exc
    if doc["arch"] is not None:
        model.nasprune_arch = doc["arch"]  # type: ignore[attr-defined]
    if doc.get("pruning") is not None:
        model.nasprune_pruning = doc["pruning"]  # type: ignore[attr-defined]
    return model.eval()


# ---- the data a checkpoint was trained on ----------------------------------------------

def recorded_dataset(directory: str | os.PathLike, data: str | None = None,
                     data_dir: str | None = None, download: bool = False,
                     seed: int | None = None, fallback_seed: int = 0) -> tuple[Any, dict]:
    """The data set a checkpoint records (``meta.data``), split with its recorded seed.

    ``data``/``seed`` override the record (``fallback_seed`` when it has no seed); with the
    recorded seed the split is the training run's, so its validation and test images stay
    unseen. Returns ``(dataset, meta)``.
    """
    from nasprune.data import load_dataset

    meta = read_spec(directory).get("meta") or {}
    name = data or meta.get("data")
    if not isinstance(name, str):
        raise NaspruneError(f"checkpoint '{directory}' does not record its data set: "
                            "pass --data NAME")
    split_seed = meta.get("seed", fallback_seed) if seed is None else seed
    if not isinstance(split_seed, int) or isinstance(split_seed, bool) or split_seed < 0:
        raise NaspruneError(f"checkpoint '{directory}' records split seed {split_seed!r}: "
                            "pass --seed N")
    extra = {"download": True} if download else {}
    return load_dataset(name, root=data_dir, seed=split_seed, **extra), meta


__all__ = ["EXPORT_FORMATS", "FORMAT", "SPEC_FILE", "VERSION", "WEIGHTS_FILE", "WEIGHTS_FILES",
           "export", "load", "read_spec", "recorded_dataset", "save", "temp_dir_beside",
           "write_atomic"]
