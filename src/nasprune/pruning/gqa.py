"""Llama/Qwen/Mistral-style attention: rotary, grouped-query heads, cut by nasprune itself.

Torch-Pruning's DependencyGraph follows rotary embeddings (``rotate_half`` slices and
concatenates q and k) and the repeated key/value heads into index mappings that change on
every pass round the attention's loops: the group search ran for more than 12 minutes on
a one-layer model. Its projections are therefore kept out of the graph (which then only
sees the MLP: ``gate_proj``/``up_proj`` outputs with ``down_proj`` inputs) and the heads
are one unit per attention layer here, named after it (``model.layers.0.self_attn``):

- group channel ``c`` is channel ``c`` of ``k_proj`` and ``v_proj``; key/value head
  ``h = c // head_dim`` serves query heads ``h·G … h·G + G − 1`` (``G`` =
  ``num_key_value_groups``, as ``repeat_kv`` expands them), so ``c`` is also offset
  ``c % head_dim`` of those query heads in ``q_proj``'s rows and ``o_proj``'s columns;
- whole key/value heads go (``divisor`` = head size) with their query groups, so every kept
  query head still reads the key/value head it read before and ``G`` is unchanged.

The hidden width (every projection's input, the residual stream) is never cut.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from nasprune.pruning.attention import FFN, HEADS
from nasprune.pruning.members import Member
from nasprune.pruning.surgery import OwnGroup

_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")


def _gqa(module: nn.Module) -> bool:
    """Attention with q/k/v/o_proj Linears, ``head_dim`` and ``num_key_value_groups``."""
    q, k, v, o = (getattr(module, p, None) for p in _PROJ)
    d, g = getattr(module, "head_dim", None), getattr(module, "num_key_value_groups", None)
    if not all(isinstance(p, nn.Linear) for p in (q, k, v, o)):
        return False
    if not (isinstance(d, int) and isinstance(g, int) and d > 0 and g > 0):
        return False
    return (k.out_features == v.out_features and k.out_features % d == 0
            and q.out_features == g * k.out_features == o.in_features)


def gqa_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every grouped-query attention layer of ``model``, by module name."""
    return {n: m for n, m in model.named_modules() if n and _gqa(m)}


def gqa_projections(model: nn.Module) -> list[nn.Module]:
    """The projections of every grouped-query attention: kept out of DepGraph's groups."""
    return [getattr(m, p) for m in gqa_layers(model).values() for p in _PROJ]


def _query_map(kv_width: int, head_dim: int, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q_proj channel → key/value channel: query head j reads key/value head j // G."""
    q = torch.arange(kv_width * groups)
    head, offset = q // head_dim, q % head_dim
    return q, (head // groups) * head_dim + offset


def gqa_units(model: nn.Module, skip: Collection[nn.Module] = ()) -> list[tuple]:
    """``(ChannelGroup, OwnGroup)`` pairs, one per grouped-query attention layer with more
    than one key/value head; one touching a module in ``skip`` is left out."""
    from nasprune.pruning.graph import ChannelGroup  # graph imports this module

    skipped = {id(m) for m in skip}
    found = []
    for name, attn in gqa_layers(model).items():
        projs = {p: getattr(attn, p) for p in _PROJ}
        if any(id(m) in skipped for m in (attn, *projs.values())):
            continue
        width, d = projs["k_proj"].out_features, attn.head_dim
        if width // d < 2:
            continue  # one key/value head: nothing to choose from
        kv = torch.arange(width)
        q_idx, q_root = _query_map(width, d, attn.num_key_value_groups)
        full = {p: f"{name}.{p}" for p in _PROJ}
        group_members = [Member(full["q_proj"], projs["q_proj"], "out", q_idx, q_root),
                         Member(full["k_proj"], projs["k_proj"], "out", kv, kv),
                         Member(full["v_proj"], projs["v_proj"], "out", kv, kv),
                         Member(full["o_proj"], projs["o_proj"], "in", q_idx, q_root)]
        info = ChannelGroup(name=name, channels=width, divisor=d, kind=HEADS,
                            out_layers=[full["q_proj"], full["k_proj"], full["v_proj"]],
                            in_layers=[full["o_proj"]])
        found.append((info, OwnGroup(group_members)))
    return found


def mark_ffn(model: nn.Module, found: list) -> None:
    """Mark the gated MLP groups (``gate_proj``/``up_proj`` → ``down_proj``) of a model with
    grouped-query attention as FFN widths (``(ChannelGroup, group)`` pairs, in place)."""
    if not gqa_layers(model):
        return
    for info, *_ in found:
        outs = {n.rpartition(".")[2] for n in info.out_layers}
        ins = {n.rpartition(".")[2] for n in info.in_layers}
        if outs == {"gate_proj", "up_proj"} and ins == {"down_proj"}:
            info.kind = FFN


def gqa_heads(model: nn.Module) -> dict[str, int]:
    """Attention name → query heads of every grouped-query attention (for the width spec)."""
    return {n: m.q_proj.out_features // m.head_dim for n, m in gqa_layers(model).items()}


def sync_gqa_config(model: nn.Module) -> None:
    """Write uniform head counts (``num_attention_heads``, ``num_key_value_heads``, with
    ``head_dim``) and FFN width (``intermediate_size``) into a Hugging Face config, so
    ``from_pretrained`` rebuilds the pruned model."""
    config, layers = getattr(model, "config", None), list(gqa_layers(model).values())
    if config is None or not layers or len(layers) != getattr(config, "num_hidden_layers", -1):
        return
    kv = {m.k_proj.out_features // m.head_dim for m in layers}
    if len(kv) == 1 and hasattr(config, "num_key_value_heads"):
        config.head_dim = layers[0].head_dim
        config.num_key_value_heads = kv.pop()
        config.num_attention_heads = config.num_key_value_heads * layers[0].num_key_value_groups
    widths = {m.up_proj.out_features for m in model.modules()
              if all(isinstance(getattr(m, p, None), nn.Linear)
                     for p in ("gate_proj", "up_proj", "down_proj"))}
    if len(widths) == 1 and hasattr(config, "intermediate_size"):
        config.intermediate_size = widths.pop()


__all__ = ["gqa_heads", "gqa_layers", "gqa_projections", "gqa_units", "mark_ffn",
           "sync_gqa_config"]
