"""Width spec: a pruned architecture as plain data, and the rebuild from it.

``capture_spec(model)`` records, for every module with parameters of a known type, the
constructor arguments pruning can change (channels, features, groups, heads, ...), blocks
replaced by ``Identity`` (layer pruning), and the shape of every tensor in the state dict.
``apply_spec(model, spec)`` takes a fresh, unpruned model of the same family and resizes
it to match, so saved weights load without pickling any Python object.

Module types are looked up by short name ("Conv2d") in the fixed table of
:mod:`nasprune.pruning.module_kinds` (``KINDS``, re-exported here), never imported from a
path, so a spec can only ever build those torch.nn layers.
"""

from __future__ import annotations

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.attention import (
    CONFIG_KEYS,
    attention_layers,
    config_widths,
    set_config_widths,
    sync_heads,
)
from nasprune.pruning.conv1d import fused_heads, sync_conv1d
from nasprune.pruning.fused_qkv import fused_layers, sync_fused
from nasprune.pruning.gqa import gqa_heads
from nasprune.pruning.masks import MASK
from nasprune.pruning.module_kinds import CONVS, KINDS, ModuleKind, kind_fields, kind_of
from nasprune.pruning.window_attention import window_heads

SPEC_VERSION = 1


def capture_spec(model: nn.Module) -> dict:
    """Shapes of every known module and every state-dict tensor of ``model``, as JSON data."""
    modules: dict[str, dict] = {}
    for name, m in model.named_modules():
        kind = kind_of(m)
        if kind is not None and name:
            modules[name] = {"type": kind, **kind_fields(m, kind)}
    tensors = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
               for k, v in model.state_dict().items()}
    spec = {"version": SPEC_VERSION, "modules": modules, "tensors": tensors}
    heads = {n: a.heads for n, a in attention_layers(model, widths=False).items()}
    heads.update(fused_heads(model))
    heads.update(gqa_heads(model))
    heads.update({n: m.num_heads for n, m in fused_layers(model).items()})
    heads.update(window_heads(model))
    if heads:  # Transformers: head counts (checked on load) and the config's widths
        spec["attention"] = {"heads": heads, "config": config_widths(model)}
    return spec


# ---- validation of untrusted spec data -------------------------------------------------

def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _check_module_record(name: str, rec: object) -> str:
    if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
        raise NaspruneError(f"spec entry for module '{name}' is malformed (no type)")
    kind = rec["type"]
    if kind not in KINDS:
        raise NaspruneError(f"spec names module type '{kind}' for '{name}', which is not an "
                            f"allowed layer type (allowed: {', '.join(sorted(KINDS))})")
    expected = set(kind_fields(_prototype(kind), kind))
    got = set(rec) - {"type"}
    if got != expected:
        raise NaspruneError(f"spec entry for '{name}' ({kind}) has fields {sorted(got)}, "
                            f"expected {sorted(expected)}")
    for key in expected:
        value = rec[key]
        ok = (isinstance(value, list) and value and all(_is_count(v) for v in value)
              if key == "normalized_shape" else _is_count(value))
        if not ok:
            raise NaspruneError(f"spec entry for '{name}': {key} must be a positive integer"
                                f"{' list' if key == 'normalized_shape' else ''}, got {value!r}")
    return kind


_PROTOTYPES: dict[str, nn.Module] = {}


def _prototype(kind: str) -> nn.Module:
    """A tiny instance of ``kind``, used only to know which fields a record must have."""
    if kind not in _PROTOTYPES:
        cls = KINDS[kind].cls
        args = {"Linear": (1, 1), "LayerNorm": (1,), "GroupNorm": (1, 1), "Embedding": (1, 1),
                "PReLU": (), "MultiheadAttention": (1, 1), "Identity": (),
                "Skip": (), "WindowAttention": (1, [1, 1], [0, 0], 1, 1)}.get(kind, (1,))
        if kind in {c.__name__ for c in CONVS}:
            args = (1, 1, 1)
        _PROTOTYPES[kind] = cls(*args)
    return _PROTOTYPES[kind]


def _check_tensors(tensors: object) -> dict[str, dict]:
    if not isinstance(tensors, dict):
        raise NaspruneError("spec 'tensors' must be a mapping of name → {shape, dtype}")
    for key, rec in tensors.items():
        if (not isinstance(rec, dict) or not isinstance(rec.get("shape"), list)
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                           for s in rec["shape"]) or not isinstance(rec.get("dtype"), str)):
            raise NaspruneError(f"spec entry for tensor '{key}' is malformed")
    return tensors


def validate_spec(spec: object) -> dict:
    """Check untrusted spec data; return it, or raise NaspruneError naming the problem."""
    if not isinstance(spec, dict):
        raise NaspruneError("width spec must be a JSON object")
    if spec.get("version") != SPEC_VERSION:
        raise NaspruneError(f"unsupported width spec version {spec.get('version')!r} "
                            f"(this nasprune reads version {SPEC_VERSION})")
    modules = spec.get("modules")
    if not isinstance(modules, dict):
        raise NaspruneError("spec 'modules' must be a mapping of name → record")
    for name, rec in modules.items():
        _check_module_record(name, rec)
    _check_tensors(spec.get("tensors"))
    _check_attention(spec.get("attention", {}))
    return spec


def _check_attention(rec: object) -> None:
    """The optional Transformer record: ``{"heads": {layer: n}, "config": {key: n}}``."""
    ok = isinstance(rec, dict) and set(rec) <= {"heads", "config"} and all(
        isinstance(rec.get(k, {}), dict) and all(
            isinstance(n, str) and _is_count(v) for n, v in rec.get(k, {}).items())
        for k in ("heads", "config"))
    if ok and not set(rec.get("config", {})) <= set(CONFIG_KEYS):  # never any other attribute
        ok = False
    if not ok:
        raise NaspruneError("spec 'attention' must be {heads: {layer: count}, config: "
                            "{key: count}} with positive integer counts")


# ---- rebuilding ------------------------------------------------------------------------

def _parents(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """id(module) → every (parent, attribute) that holds it (shared modules included)."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for parent in model.modules():
        for key, child in parent._modules.items():
            if child is not None:
                owners.setdefault(id(child), []).append((parent, key))
    return owners


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent, key in _parents(model).get(id(old), []):
        parent._modules[key] = new


def _device_of(module: nn.Module) -> torch.device:
    ref = next(module.parameters(), None)
    return ref.device if ref is not None else torch.device("cpu")


def _dtype_like(new: nn.Module, old: nn.Module) -> nn.Module:
    ref = next(old.parameters(), None)
    if ref is not None and ref.is_floating_point() and ref.dtype != torch.float32:
        new = new.to(dtype=ref.dtype)
    return new.train(old.training)


def _find(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise NaspruneError(f"the spec names module '{name}', which this model does not "
                            "have: the checkpoint is for a different model") from exc


def _rebuild_modules(model: nn.Module, modules: dict[str, dict]) -> None:
    # Removed blocks (Identity, Skip) first: their children are not in the spec.
    order = sorted(modules, key=lambda n: (KINDS[modules[n]["type"]].build is not None,
                                           n.count(".")))
    for name in order:
        rec = modules[name]
        kind = rec["type"]
        current = _find(model, name)
        if KINDS[kind].build is None:
            if type(current) is not KINDS[kind].cls:
                _replace(model, current, KINDS[kind].cls())
            continue
        if kind_of(current) != kind and type(current).__name__ not in KINDS[kind].replaces:
            raise NaspruneError(f"the spec says '{name}' is a {kind} but the model has a "
                                f"{type(current).__name__}: the checkpoint is for a "
                                "different model")
        fields = {k: v for k, v in rec.items() if k != "type"}
        if kind_of(current) == kind and kind_fields(current, kind) == fields:
            continue
        try:
            # Built where the old one lives: on the meta device a spec is checked for free.
            with torch.device(_device_of(current)):
                new = KINDS[kind].build(current, fields)  # type: ignore[misc]
        except (ValueError, AssertionError, TypeError, RuntimeError) as exc:
            raise NaspruneError(f"cannot rebuild '{name}' ({kind}) with {fields}: "
                                f"{exc}") from exc
        _replace(model, current, _dtype_like(new, current))


def _owner(model: nn.Module, key: str) -> tuple[nn.Module, str]:
    mod_name, _, attr = key.rpartition(".")
    return _find(model, mod_name) if mod_name else model, attr


def _resize_tensor(model: nn.Module, key: str, shape: list[int]) -> None:
    """Resize a raw parameter/buffer of a user module (one pruning cut without a layer)."""
    module, attr = _owner(model, key)
    if type(module).__module__.startswith("torch.nn"):
        raise NaspruneError(f"tensor '{key}' has shape {list(module.state_dict()[attr].shape)} "
                            f"in the model but {shape} in the spec, and "
                            f"{type(module).__name__} layers cannot be resized")
    old = getattr(module, attr)
    new = torch.empty(shape, dtype=old.dtype, device=old.device)
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        module._buffers[attr] = new


def _restore_tensors(model: nn.Module, tensors: dict[str, dict]) -> None:
    """Add mask buffers and resize raw tensors so the state dict matches the spec."""
    state = model.state_dict()
    for key, rec in tensors.items():
        if key not in state:
            if key.rpartition(".")[2] != MASK:
                raise NaspruneError(f"the spec has tensor '{key}', which this model does not "
                                    "have: the checkpoint is for a different model")
            module, _ = _owner(model, key)
            ref = getattr(module, "weight", None)
            module.register_buffer(MASK, torch.ones(rec["shape"], dtype=torch.bool,
                                                    device=ref.device if ref is not None
                                                    else "cpu"))
        elif list(state[key].shape) != rec["shape"]:
            _resize_tensor(model, key, rec["shape"])
    _match_dtypes(model, tensors)
    missing = [k for k in model.state_dict() if k not in tensors]
    if missing:
        raise NaspruneError(f"the model has tensor '{missing[0]}' that the spec does not "
                            f"({len(missing)} in all): the checkpoint is for a different model")


def _match_dtypes(model: nn.Module, tensors: dict[str, dict]) -> None:
    """Floating tensors take the saved dtype (a bf16 model loads as bf16, not fp32)."""
    state = model.state_dict()
    for key, rec in tensors.items():
        want = getattr(torch, rec["dtype"], None)
        have = state[key]
        if (not isinstance(want, torch.dtype) or not want.is_floating_point
                or not have.is_floating_point() or have.dtype == want):
            continue
        module, attr = _owner(model, key)
        if attr in module._parameters:
            module._parameters[attr].data = module._parameters[attr].data.to(want)
        else:
            module._buffers[attr] = module._buffers[attr].to(want)


def apply_spec(model: nn.Module, spec: dict) -> nn.Module:
    """Resize ``model`` (in place) to the widths in ``spec``; returns it.

    Raises NaspruneError when the spec is malformed, names a type outside the allow-list,
    or does not fit the model (a checkpoint of another family).
    """
    validate_spec(spec)
    _rebuild_modules(model, spec["modules"])
    _restore_tensors(model, spec["tensors"])
    _sync_norm_sizes(model)
    _restore_attention(model, spec.get("attention", {}))
    return model


def _sync_norm_sizes(model: nn.Module) -> None:
    """Norm subclasses (torchvision's and timm's ``LayerNorm2d``) are resized as raw
    tensors, not rebuilt: their size attributes follow the resized weights."""
    for m in model.modules():
        w = getattr(m, "weight", None)
        if kind_of(m) is not None or not isinstance(w, torch.Tensor):
            continue
        if isinstance(m, nn.LayerNorm):
            m.normalized_shape = tuple(w.shape)
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            m.num_features = int(w.shape[0])
        elif isinstance(m, nn.GroupNorm):
            m.num_channels = int(w.shape[0])


def _restore_attention(model: nn.Module, rec: dict) -> None:
    """Head attributes follow the rebuilt projections; they must match the recorded counts."""
    heads = {**sync_heads(model), **sync_conv1d(model), **gqa_heads(model),
             **sync_fused(model), **window_heads(model)}
    if rec and heads != rec.get("heads", {}):
        raise NaspruneError(f"the spec records attention heads {rec.get('heads')} but the "
                            f"rebuilt model has {heads}: the checkpoint is for a different "
                            "model")
    set_config_widths(model, rec.get("config", {}))


__all__ = ["KINDS", "SPEC_VERSION", "ModuleKind", "apply_spec", "capture_spec", "kind_fields",
           "validate_spec"]
