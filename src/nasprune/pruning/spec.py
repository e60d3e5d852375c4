"""Width spec: a pruned architecture as plain data, and the rebuild from it.

``capture_spec(model)`` records, for every module with parameters of a known type, the
constructor arguments pruning can change (channels, features, groups, heads, ...), blocks
replaced by ``Identity`` (layer pruning), and the shape of every tensor in the state dict.
``apply_spec(model, spec)`` takes a fresh, unpruned model of the same family and resizes
it to match, so saved weights load without pickling any Python object.

Module types are looked up by short name ("Conv2d") in the fixed table below, never
imported from a path, so a spec can only ever build these torch.nn layers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.masks import MASK

SPEC_VERSION = 1


def _conv_fields(m: nn.Module) -> dict:
    return {"in_channels": m.in_channels, "out_channels": m.out_channels, "groups": m.groups}


def _conv_build(old: nn.Module, rec: dict) -> nn.Module:
    kw = dict(kernel_size=old.kernel_size, stride=old.stride, padding=old.padding,
              dilation=old.dilation, groups=rec["groups"], bias=old.bias is not None,
              padding_mode=old.padding_mode)
    if isinstance(old, nn.modules.conv._ConvTransposeNd):
        kw["output_padding"] = old.output_padding
    return type(old)(rec["in_channels"], rec["out_channels"], **kw)


def _linear_build(old: nn.Linear, rec: dict) -> nn.Module:
    return nn.Linear(rec["in_features"], rec["out_features"], bias=old.bias is not None)


def _bias_kw(cls: type[nn.Module], old: nn.Module) -> dict:
    """Norm layers gained a ``bias`` switch in recent torch; pass it only where it exists."""
    if "bias" in inspect.signature(cls.__init__).parameters:
        return {"bias": getattr(old, "bias", None) is not None or not _has_affine(old)}
    return {}


def _has_affine(m: nn.Module) -> bool:
    return bool(getattr(m, "affine", getattr(m, "elementwise_affine", True)))


def _norm_build(old: nn.Module, rec: dict) -> nn.Module:
    return type(old)(rec["num_features"], eps=old.eps, momentum=old.momentum,
                     affine=old.affine, track_running_stats=old.track_running_stats,
                     **_bias_kw(type(old), old))


def _layernorm_build(old: nn.LayerNorm, rec: dict) -> nn.Module:
    return nn.LayerNorm(rec["normalized_shape"], eps=old.eps,
                        elementwise_affine=old.elementwise_affine,
                        **_bias_kw(nn.LayerNorm, old))


def _groupnorm_build(old: nn.GroupNorm, rec: dict) -> nn.Module:
    return nn.GroupNorm(rec["num_groups"], rec["num_channels"], eps=old.eps, affine=old.affine,
                        **_bias_kw(nn.GroupNorm, old))


def _embedding_build(old: nn.Embedding, rec: dict) -> nn.Module:
    return nn.Embedding(rec["num_embeddings"], rec["embedding_dim"], padding_idx=old.padding_idx,
                        max_norm=old.max_norm, norm_type=old.norm_type,
                        scale_grad_by_freq=old.scale_grad_by_freq, sparse=old.sparse)


def _mha_fields(m: nn.MultiheadAttention) -> dict:
    return {"embed_dim": m.embed_dim, "num_heads": m.num_heads, "head_dim": m.head_dim,
            "kdim": m.kdim, "vdim": m.vdim}


def _mha_build(old: nn.MultiheadAttention, rec: dict) -> nn.Module:
    if rec["head_dim"] * rec["num_heads"] != rec["embed_dim"]:
        raise NaspruneError(f"attention spec is inconsistent: head_dim {rec['head_dim']} × "
                            f"num_heads {rec['num_heads']} ≠ embed_dim {rec['embed_dim']}")
    return nn.MultiheadAttention(
        rec["embed_dim"], rec["num_heads"], dropout=old.dropout,
        bias=old.in_proj_bias is not None, add_bias_kv=old.bias_k is not None,
        add_zero_attn=old.add_zero_attn, kdim=rec["kdim"], vdim=rec["vdim"],
        batch_first=old.batch_first)


@dataclass(frozen=True)
class ModuleKind:
    """How one allowed module type is described (``fields``) and rebuilt (``build``)."""

    cls: type[nn.Module]
    fields: Callable[[Any], dict]
    build: Callable[[Any, dict], nn.Module] | None  # None: no shape to change (Identity)


def _attrs(*names: str) -> Callable[[nn.Module], dict]:
    def get(m: nn.Module) -> dict:
        return {n: list(getattr(m, n)) if isinstance(getattr(m, n), tuple) else getattr(m, n)
                for n in names}

    return get


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
          nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)

# The allow-list: the only module types a spec can name or build.
KINDS: dict[str, ModuleKind] = {
    **{c.__name__: ModuleKind(c, _conv_fields, _conv_build) for c in _CONVS},
    **{c.__name__: ModuleKind(c, _attrs("num_features"), _norm_build) for c in _NORMS},
    "Linear": ModuleKind(nn.Linear, _attrs("in_features", "out_features"), _linear_build),
    "LayerNorm": ModuleKind(nn.LayerNorm, _attrs("normalized_shape"), _layernorm_build),
    "GroupNorm": ModuleKind(nn.GroupNorm, _attrs("num_groups", "num_channels"),
                            _groupnorm_build),
    "Embedding": ModuleKind(nn.Embedding, _attrs("num_embeddings", "embedding_dim"),
                            _embedding_build),
    "PReLU": ModuleKind(nn.PReLU, _attrs("num_parameters"),
                        lambda old, rec: nn.PReLU(rec["num_parameters"])),
    "MultiheadAttention": ModuleKind(nn.MultiheadAttention, _mha_fields, _mha_build),
    "Identity": ModuleKind(nn.Identity, lambda m: {}, None),
}


def _kind_of(module: nn.Module) -> str | None:
    """The allow-list name of ``module``'s exact type (subclasses are not rebuilt)."""
    name = type(module).__name__
    kind = KINDS.get(name)
    return name if kind is not None and type(module) is kind.cls else None


def capture_spec(model: nn.Module) -> dict:
    """Shapes of every known module and every state-dict tensor of ``model``, as JSON data."""
    modules: dict[str, dict] = {}
    for name, m in model.named_modules():
        kind = _kind_of(m)
        if kind is not None and name:
            modules[name] = {"type": kind, **kind_fields(m, kind)}
    tensors = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
               for k, v in model.state_dict().items()}
    return {"version": SPEC_VERSION, "modules": modules, "tensors": tensors}


def kind_fields(module: nn.Module, kind: str) -> dict:
    return KINDS[kind].fields(module)


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
                "PReLU": (), "MultiheadAttention": (1, 1), "Identity": ()}.get(kind, (1,))
        if kind in {c.__name__ for c in _CONVS}:
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
    return spec


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
    # Identity first: a removed block's children are not in the spec.
    order = sorted(modules, key=lambda n: (modules[n]["type"] != "Identity", n.count(".")))
    for name in order:
        rec = modules[name]
        kind = rec["type"]
        current = _find(model, name)
        if kind == "Identity":
            if not isinstance(current, nn.Identity):
                _replace(model, current, nn.Identity())
            continue
        if _kind_of(current) != kind:
            raise NaspruneError(f"the spec says '{name}' is a {kind} but the model has a "
                                f"{type(current).__name__}: the checkpoint is for a "
                                "different model")
        fields = {k: v for k, v in rec.items() if k != "type"}
        if kind_fields(current, kind) == fields:
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
    return model

