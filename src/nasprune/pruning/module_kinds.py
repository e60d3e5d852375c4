"""The allow-list of module types a width spec can describe and rebuild.

Each entry of ``KINDS`` (keyed by the type's short name, "Conv2d") says which constructor
arguments pruning can change (``fields``) and how to build a resized copy of an old module
(``build``). :mod:`nasprune.pruning.spec` never builds anything that is not in this table.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.mha import NarrowMultiheadAttention
from nasprune.pruning.window_attention import WindowAttention


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


def _narrow_fields(m: NarrowMultiheadAttention) -> dict:
    return {"embed_dim": m.embed_dim, "num_heads": m.num_heads, "head_dim": m.head_dim,
            "kdim": m.kdim, "vdim": m.vdim}


def _narrow_build(old: nn.Module, rec: dict) -> nn.Module:
    """A head-pruned attention layer, rebuilt from the base model's ``nn.MultiheadAttention``
    (or an earlier ``NarrowMultiheadAttention``): its dropout, bias and batch_first."""
    bias = old.out_proj.bias is not None
    return NarrowMultiheadAttention(rec["embed_dim"], rec["num_heads"], rec["head_dim"],
                                    old.dropout, bias, rec["kdim"], rec["vdim"],
                                    old.batch_first)


def _window_build(old: nn.Module, rec: dict) -> nn.Module:
    """A head-pruned Swin attention, rebuilt from the base model's ``ShiftedWindowAttention``
    (window, shift, biases and dropout are its own; the head size must be too)."""
    new = WindowAttention.from_swin(old, rec["num_heads"])
    if new.head_dim != rec["head_dim"]:
        raise NaspruneError(f"the spec's head size {rec['head_dim']} is not the model's "
                            f"{new.head_dim}")
    return new


class Skip(nn.Identity):
    """A removed block or Transformer layer: returns its first input and ignores the rest.

    ``nn.Identity`` takes one input; a Hugging Face layer is also called with masks and
    caches. A subclass, so code that asks "was this block removed?" sees an Identity.
    """

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: A002
        return input


@dataclass(frozen=True)
class ModuleKind:
    """How one allowed module type is described (``fields``) and rebuilt (``build``)."""

    cls: type[nn.Module]
    fields: Callable[[Any], dict]
    build: Callable[[Any, dict], nn.Module] | None  # None: no shape to change (Identity)
    # Other allow-listed types ``build`` may replace: the unpruned form of this layer.
    replaces: tuple[str, ...] = ()


def _attrs(*names: str) -> Callable[[nn.Module], dict]:
    def get(m: nn.Module) -> dict:
        return {n: list(getattr(m, n)) if isinstance(getattr(m, n), tuple) else getattr(m, n)
                for n in names}

    return get


CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
          nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)

# The allow-list: the only module types a spec can name or build.
KINDS: dict[str, ModuleKind] = {
    **{c.__name__: ModuleKind(c, _conv_fields, _conv_build) for c in CONVS},
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
    "NarrowMultiheadAttention": ModuleKind(NarrowMultiheadAttention, _narrow_fields,
                                           _narrow_build, replaces=("MultiheadAttention",)),
    "WindowAttention": ModuleKind(WindowAttention, _attrs("num_heads", "head_dim"),
                                  _window_build, replaces=("ShiftedWindowAttention",)),
    "Identity": ModuleKind(nn.Identity, lambda m: {}, None),
    "Skip": ModuleKind(Skip, lambda m: {}, None),
}


def kind_of(module: nn.Module) -> str | None:
    """The allow-list name of ``module``'s exact type (subclasses are not rebuilt)."""
    name = type(module).__name__
    kind = KINDS.get(name)
    return name if kind is not None and type(module) is kind.cls else None


def kind_fields(module: nn.Module, kind: str) -> dict:
    """The changeable constructor arguments of ``module`` (an allow-listed ``kind``)."""
    return KINDS[kind].fields(module)


__all__ = ["CONVS", "KINDS", "ModuleKind", "Skip", "kind_fields", "kind_of"]
