"""timm-style attention with one fused ``qkv`` Linear: heads cut by nasprune itself.

timm's ``Attention`` (ViT, DeiT and relatives) projects q, k and v with one Linear of
``3 × num_heads × head_dim`` rows, reshapes it to ``(3, num_heads, head_dim)`` and merges
the heads back to ``attn_dim`` before ``proj``. Torch-Pruning's DependencyGraph follows that
reshape into index mappings that mix the three thirds, so the two Linears are kept out of
its groups and the heads are one unit per layer here, named after it (``blocks.0.attn``):
group channel ``c`` is row ``c`` of each third of ``qkv`` and input ``c`` of ``proj``;
whole heads go (``divisor`` = head size), ``num_heads`` and ``attn_dim`` follow, the head
size and its scale stay.

Only layers whose forward merges heads to ``attn_dim`` (not to their input width) qualify.
Attention layouts nasprune does not handle (torchvision's Swin v2 and MaxViT attention, whose
Torch-Pruning trace took over two minutes) are refused at once by
:func:`refuse_unsupported`, naming the layer; Swin v1 is handled in
:mod:`nasprune.pruning.window_attention`.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.attention import FFN, HEADS
from nasprune.pruning.members import Member
from nasprune.pruning.surgery import OwnGroup


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _fused(module: nn.Module) -> bool:
    """``qkv``/``proj`` Linears, ``num_heads``, ``head_dim`` and ``attn_dim`` that agree, and
    nothing else sized by the heads (no scale norm over ``attn_dim``, no gate)."""
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    heads, dim, width = (getattr(module, a, None) for a in ("num_heads", "head_dim", "attn_dim"))
    if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)
            and all(_count(v) for v in (heads, dim, width))):
        return False
    if getattr(module, "gate", None) is not None or not isinstance(
            getattr(module, "norm", nn.Identity()), nn.Identity):
        return False
    return width == heads * dim and qkv.out_features == 3 * width and proj.in_features == width


def fused_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every fused-qkv attention layer of ``model``, by module name."""
    return {n: m for n, m in model.named_modules() if n and _fused(m)}


def fused_projections(model: nn.Module) -> list[nn.Module]:
    """The ``qkv`` and ``proj`` of every fused-qkv attention: kept out of DepGraph's groups."""
    return [getattr(m, p) for m in fused_layers(model).values() for p in ("qkv", "proj")]


def fused_inputs(model: nn.Module) -> list[str]:
    """Names of the ``qkv`` layers: whatever feeds them is the residual stream."""
    return [f"{n}.qkv" for n in fused_layers(model)]


def sync_fused(model: nn.Module) -> dict[str, int]:
    """Set every fused-qkv attention's ``num_heads``/``attn_dim`` from its (cut) ``proj``.

    Returns layer name → heads.
    """
    counts = {}
    for name, m in model.named_modules():
        if not (name and isinstance(getattr(m, "qkv", None), nn.Linear)
                and isinstance(getattr(m, "proj", None), nn.Linear)
                and all(_count(getattr(m, a, None)) for a in ("num_heads", "head_dim",
                                                              "attn_dim"))):
            continue
        heads, rest = divmod(m.proj.in_features, m.head_dim)
        if rest or heads < 1 or m.qkv.out_features != 3 * m.proj.in_features:
            raise NaspruneError(f"attention layer '{name}' has {m.proj.in_features} head "
                                f"channels, not a whole number of {m.head_dim}-wide heads")
        m.num_heads, m.attn_dim = heads, heads * m.head_dim
        counts[name] = heads
    return counts


def mark_fused_ffn(model: nn.Module, found: list) -> None:
    """Mark timm's MLP groups (``fc1`` outputs → ``fc2`` inputs of one module) of a model
    with fused-qkv attention as FFN widths (``(ChannelGroup, group)`` pairs, in place).

    Found by layout, as for grouped-query models: DepGraph's hidden-width group, which
    tells an FFN apart elsewhere, touches the classifier here and is never listed.
    """
    if not fused_layers(model):
        return
    for info, *_ in found:
        outs, ins = info.out_layers, info.in_layers
        if (len(outs) == len(ins) == 1 and outs[0].endswith(".fc1")
                and ins[0] == outs[0].removesuffix(".fc1") + ".fc2"):
            info.kind = FFN


def fused_units(model: nn.Module, skip: Collection[nn.Module] = ()) -> list[tuple]:
    """``(ChannelGroup, OwnGroup)`` pairs, one per fused-qkv attention with several heads;
    one touching a module in ``skip`` (ignored or output layers) is left out."""
    from nasprune.pruning.graph import ChannelGroup  # graph imports this module

    skipped = {id(m) for m in skip}
    found = []
    for name, attn in fused_layers(model).items():
        if any(id(m) in skipped for m in (attn, attn.qkv, attn.proj)) or attn.num_heads < 2:
            continue
        width = attn.attn_dim
        chans = torch.arange(width)
        group_members = [
            Member(f"{name}.qkv", attn.qkv, "out", torch.arange(3 * width), chans.repeat(3)),
            Member(f"{name}.proj", attn.proj, "in", chans, chans)]
        info = ChannelGroup(name=name, channels=width, divisor=attn.head_dim, kind=HEADS,
                            out_layers=[f"{name}.qkv"], in_layers=[f"{name}.proj"])
        found.append((info, OwnGroup(group_members, lambda: sync_fused(model))))
    return found


# Attention modules whose head size comes from their input width: (class name, what).
_UNSUPPORTED = {
    "ShiftedWindowAttentionV2": "torchvision's Swin v2 cosine attention is not handled; v1 "
                                "is (nasprune.pruning.window_attention)",
    "RelativePositionalMultiHeadAttention": "torchvision's MaxViT attention ties its heads "
                                            "to its input width",
}


def refuse_unsupported(model: nn.Module) -> None:
    """Raise one NaspruneError naming the first attention layer whose heads cannot be cut
    (before Torch-Pruning spends minutes tracing it)."""
    for name, m in model.named_modules():
        why = _UNSUPPORTED.get(type(m).__name__)
        if why is not None:
            raise NaspruneError(
                f"cannot prune {type(model).__name__}: attention layer '{name}' "
                f"({type(m).__name__}) is not supported ({why}, so neither its heads nor the "
                "width around it can be removed)")


__all__ = ["fused_inputs", "fused_layers", "fused_projections", "fused_units", "mark_fused_ffn",
           "refuse_unsupported", "sync_fused"]
