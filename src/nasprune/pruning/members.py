"""A layer's share of a dependency group, and when a group can be pruned exactly.

:func:`members` turns a Torch-Pruning group into :class:`Member` records (which channels
of which layer go with which channel of the group); :func:`constraints` says how the
group's channels must be removed (in blocks of a divisor, aligned across conv groups) or
that it cannot be pruned exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class Member:
    """One layer's share of a group: which of its channels belong to which group channel.

    ``role`` is "out" when the layer's output channels are removed (conv/linear rows,
    BatchNorm/LayerNorm features, attention embedding dims, depthwise convs) and "in" when
    its input channels are (the next conv/linear). ``idx[k]`` is a channel of the layer and
    ``root[k]`` the group channel it belongs to (several for a flatten, offsets for a concat).
    """

    name: str
    module: nn.Module
    role: str
    idx: torch.Tensor
    root: torch.Tensor


def members(model: nn.Module, graph: tp.DependencyGraph, tp_group) -> list[Member]:
    """The layers of a Torch-Pruning group with their channel → group-channel maps.

    A group nasprune cuts itself (:class:`~nasprune.pruning.surgery.OwnGroup`) carries them.
    """
    own = getattr(tp_group, "nasprune_members", None)
    if own is not None:
        return list(own)
    names = {m: n for n, m in model.named_modules()}
    found: list[Member] = []
    for item in tp_group.items:
        mod = item.dep.target.module
        root = item.root_idxs
        if not isinstance(mod, nn.Module) or mod not in names or root is None:
            continue
        if any(r is None for r in root):
            continue
        role = "out" if graph.is_out_channel_pruning_fn(item.dep.handler) else "in"
        found.append(Member(names[mod], mod, role, torch.as_tensor(list(item.idxs)),
                            torch.as_tensor(list(root))))
    return found


def _grouped(conv: nn.Module) -> bool:
    """A conv with groups > 1 that Torch-Pruning does not treat as depthwise."""
    return isinstance(conv, CONV_TYPES) and conv.groups > 1 and not (
        conv.groups == conv.out_channels and conv.in_channels == conv.out_channels
    )


def _width(mod: nn.Module, role: str) -> int | None:
    """How many channels of ``role`` ("out"/"in") ``mod`` has, where its type says."""
    if isinstance(mod, CONV_TYPES):
        return mod.out_channels if role == "out" or _depthwise(mod) else mod.in_channels
    if isinstance(mod, nn.Linear):
        return mod.out_features if role == "out" else mod.in_features
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        return mod.num_features
    if isinstance(mod, nn.LayerNorm) and len(mod.normalized_shape) == 1:
        return mod.normalized_shape[0]
    return None


def _depthwise(conv: nn.Module) -> bool:
    return conv.groups > 1 and conv.groups == conv.out_channels == conv.in_channels


def constraints(group_members: list[Member], channels: int) -> tuple[int, bool] | None:
    """``(divisor, aligned)`` for a group, or None when it cannot be pruned exactly.

    Grouped convs keep their conv groups equally wide (divisor = groups); when the group
    feeds a grouped conv's *input*, the same offsets must go from every conv group (Torch-
    Pruning slices its weight that way: ``aligned``). Attention keeps heads equally wide.
    Both need the layer's channels to be the group's channels one to one. A channel map
    that points past a layer's width (Torch-Pruning lost track of a chunk, as in EdgeNeXt's
    split blocks) makes the group unprunable, never an IndexError.
    """
    divisor, aligned = 1, False
    for m in group_members:
        mod, split = m.module, 1
        width = _width(mod, m.role)
        if width is not None and m.idx.numel() and int(m.idx.max()) >= width:
            return None  # the tracer lost a split/chunk: its channel map is not this layer's
        if isinstance(mod, CONV_TYPES) and mod.groups > 1:
            if not _grouped(mod):
                continue  # depthwise: in and out channels go together, no constraint
            if mod.groups == mod.out_channels or getattr(mod, "transposed", False):
                return None  # channel multipliers / grouped transposed convs: unsupported
            split, aligned = mod.groups, aligned or m.role == "in"
        elif isinstance(mod, nn.MultiheadAttention):
            if not mod._qkv_same_embed_dim or mod.in_proj_weight is None:
                return None
            split = mod.num_heads
        elif isinstance(mod, nn.GroupNorm):
            split = mod.num_groups
        if split > 1:
            if not torch.equal(m.idx, m.root):
                return None  # a concat/flatten between would scramble the blocks
            divisor = math.lcm(divisor, split)
    if divisor >= channels or channels % divisor:
        return None
    return divisor, aligned


__all__ = ["CONV_TYPES", "Member", "constraints", "members"]
