"""What a pruning criterion sees, and the helpers every criterion shares.

A criterion is a function ``score(members, channels, ctx) -> Tensor[channels]``: the
importance of each channel of one group (higher = keep). ``members`` are the group's layers
with their channel maps (:class:`~nasprune.pruning.graph.Member`). Scores are computed per
layer, normalised per layer (divided by their mean) and averaged over the layers, so a
residual group shared by ten convs is not dominated by its largest layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from nasprune.pruning.graph import CONV_TYPES, Member
from nasprune.pruning.surgery import is_conv1d
from nasprune.registry import Registry

Score = Callable[[list[Member], int, "ScoreContext"], torch.Tensor]
CRITERIA: Registry[Score] = Registry("pruning criterion")
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def register_criterion(name: str) -> Callable[[Score], Score]:
    """Register ``score(members, channels, ctx)`` under ``name``."""
    return CRITERIA.register(name)


@dataclass
class ScoreContext:
    """Everything beyond the weights a criterion may need: the model, data, a seed.

    ``cache`` lets a criterion compute something once per model (Taylor's gradients).
    """

    model: nn.Module
    example_inputs: object = None
    data: object = None
    seed: int = 0
    batches: int = 4
    cache: dict = field(default_factory=dict)


def weight_rows(m: Member, tensor_of: Callable[[nn.Parameter], torch.Tensor] = lambda p: p
                ) -> torch.Tensor | None:
    """The weights tied to each of ``m.idx``, one flattened row per index.

    ``tensor_of`` maps a parameter to a tensor of the same shape (the weight itself, or
    weight × gradient for Taylor). None for layers without prunable weights.
    """
    mod, idx = m.module, m.idx
    if isinstance(mod, CONV_TYPES):
        w = tensor_of(mod.weight)
        if mod.transposed:  # weight is (in, out/groups, ...)
            w = w.transpose(0, 1) if m.role == "out" else w
            return w[idx].flatten(1) if mod.groups == 1 or m.role == "in" else None
        if m.role == "out" or mod.groups == mod.in_channels == mod.out_channels:
            return w[idx].flatten(1)
        if mod.groups == 1:
            return w[:, idx].transpose(0, 1).flatten(1)
        # Grouped conv input channel c lives in conv group c // per, column c % per.
        per, g = mod.in_channels // mod.groups, mod.groups
        w5 = w.reshape(g, mod.out_channels // g, per, -1)
        return w5[idx // per, :, idx % per].flatten(1)
    if isinstance(mod, nn.Linear):
        w = tensor_of(mod.weight)
        return w[idx] if m.role == "out" else w[:, idx].transpose(0, 1)
    if is_conv1d(mod):  # Hugging Face Conv1D: a linear layer with its weight (in, out)
        w = tensor_of(mod.weight)
        return w[:, idx].transpose(0, 1) if m.role == "out" else w[idx]
    if isinstance(mod, nn.MultiheadAttention) and mod.in_proj_weight is not None:
        e = mod.embed_dim
        qkv = tensor_of(mod.in_proj_weight)
        rows = [qkv[idx], qkv[idx + e], qkv[idx + 2 * e], tensor_of(mod.out_proj.weight)[idx]]
        return torch.cat(rows, 1)
    return None


def norm_rows(m: Member, tensor_of: Callable[[nn.Parameter], torch.Tensor] = lambda p: p
              ) -> torch.Tensor | None:
    """The affine (γ, β) of a norm layer for each of ``m.idx``; None for other layers."""
    mod = m.module
    if not isinstance(mod, NORM_TYPES) or getattr(mod, "weight", None) is None:
        return None
    if isinstance(mod, nn.LayerNorm) and mod.weight.dim() != 1:
        return None
    cols = [tensor_of(mod.weight)[m.idx]]
    if mod.bias is not None:
        cols.append(tensor_of(mod.bias)[m.idx])
    return torch.stack(cols, 1)


def to_group(m: Member, per_index: torch.Tensor, channels: int) -> torch.Tensor:
    """Sum per-index scores into the group's channels (a flatten maps many to one)."""
    out = torch.zeros(channels, dtype=torch.float64)
    return out.scatter_add_(0, m.root, per_index.detach().double().cpu())


def combine(per_layer: list[torch.Tensor], channels: int) -> torch.Tensor:
    """Average the layers' scores after dividing each by its mean (per-layer normalisation)."""
    if not per_layer:
        return torch.zeros(channels, dtype=torch.float64)
    normed = [s / s.mean() if s.mean() > 0 else s for s in per_layer]
    return torch.stack(normed).mean(0)


def magnitude(members: list[Member], channels: int, p: int) -> torch.Tensor:
    """Per-layer Lp norm of the weights tied to each channel, normalised and averaged."""
    per_layer = []
    for m in members:
        rows = weight_rows(m)
        if rows is None:
            continue
        s = to_group(m, rows.detach().abs().pow(p).sum(1), channels)
        per_layer.append(s.pow(1.0 / p))
    return combine(per_layer, channels)
