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
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
EXPORT_FORMATS = ("onnx", "torchscript")


# ---- atomic files ----------------------------------------------------------------------

def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def temp_dir_beside(target: Path) -> Path:
    """A fresh ``.NAME.tmp-XXXX`` directory next to ``target``, to be renamed onto it.

    mkdtemp makes it 0700; it gets the mode a plain mkdir would (0777 & ~umask), so the
    directory it becomes is readable by the same users as any other (workers on other
    hosts, a colleague's report).
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` via a temp file + ``os.replace``: never half-written."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    except OSError as exc:
        raise NaspruneError(f"cannot write '{path}': {exc.strerror or exc}") from exc
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise NaspruneError(f"cannot write '{path}': {exc.strerror or exc}") from exc
        raise
    return path


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into ``directory`` atomically.

    They are written into a sibling ``.DIR.tmp-XXXX`` first. A new directory then appears
    complete in one rename; an existing one gets each file renamed in, in the order given
    (``save`` puts the spec last). Other files in the directory are left alone.
    """
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        if directory.exists() and not directory.is_dir():
            raise NaspruneError(f"cannot save to '{directory}': it exists and is not a "
                                "directory")
        tmp = temp_dir_beside(directory)
    except OSError as exc:
        raise NaspruneError(f"cannot save to '{directory}': {exc.strerror or exc}") from exc
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if not directory.exists():
            os.replace(tmp, directory)
            return
        for name in files:
            os.replace(tmp / name, directory / name)
        tmp.rmdir()
    except OSError as exc:
        raise NaspruneError(f"cannot save to '{directory}': {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
    _write_files(directory, {name: blob, SPEC_FILE: text.encode()})  # spec last
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


def _read_weights(directory: Path, info: dict) -> dict[str, torch.Tensor]:
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


def _base_model(doc: dict, base: nn.Module | None) -> nn.Module:
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


def _check_weights(tensors: dict[str, torch.Tensor], spec_tensors: dict[str, dict]) -> None:
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


def load(directory: str | os.PathLike, base: nn.Module | None = None) -> nn.Module:
    """Rebuild a saved model (pruned or not) and load its weights; returned in eval mode.

    Registered models are rebuilt from their family; a user model needs ``base`` (the
    original, unpruned module; it is copied, not changed). Any corrupt, tampered or
    mismatched file raises NaspruneError naming the problem; nothing is unpickled.
    """
    directory = Path(directory)
    doc = read_spec(directory)
    tensors = _read_weights(directory, doc["weights"])
    for alias, target in doc.get("aliases", {}).items():
        if target not in tensors:
            raise NaspruneError(f"spec.json aliases '{alias}' to '{target}', which "
                                f"{doc['weights']['file']} does not hold")
        tensors[alias] = tensors[target]
    _check_weights(tensors, doc["spec"]["tensors"])
    model = apply_spec(_base_model(doc, base), doc["spec"])
    if any(t.is_meta for t in model.state_dict().values()):
        model = model.to_empty(device="cpu")  # every value is then loaded below
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


# ---- export ----------------------------------------------------------------------------

def export(model: nn.Module, path: str | os.PathLike, example_inputs,
           format: str = "onnx") -> Path:  # noqa: A002  (the contract's argument name)
    """Export ``model`` (a CPU copy in eval mode) to ONNX or TorchScript at ``path``.

    ONNX uses the TorchScript-based exporter (``dynamo=False``: the dynamo exporter needs
    ``onnxscript``) with opset 17 and a dynamic batch dimension.
    """
    if format not in EXPORT_FORMATS:
        raise NaspruneError(f"unknown export format '{format}': choose from "
                            f"{', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(
        example_inputs)
    inputs = tuple(x.detach().cpu() if isinstance(x, torch.Tensor) else x for x in inputs)
    net = copy.deepcopy(model).cpu().eval()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=_parent(path))
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if format == "onnx":
                _export_onnx(net, inputs, tmp)
            else:
                torch.jit.save(torch.jit.trace(net, inputs), tmp)
        os.replace(tmp, path)
    except NaspruneError:
        raise
    except Exception as exc:  # exporters raise many types for unsupported ops
        raise NaspruneError(f"{format} export failed: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _parent(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NaspruneError(f"cannot write '{path}': {exc.strerror or exc}") from exc
    return path.parent


def _export_onnx(net: nn.Module, inputs: tuple, dest: str) -> None:
    names = [f"input{i}" if i else "input" for i in range(len(inputs))]
    axes = {n: {0: "batch"} for n in names} | {"output": {0: "batch"}}
    torch.onnx.export(net, inputs, dest, dynamo=False, opset_version=17, input_names=names,
                      output_names=["output"], dynamic_axes=axes)
