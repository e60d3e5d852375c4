"""Transformer units: attention heads and FFN width as prunable groups, hidden width kept.

A Transformer's hidden (residual-stream) width is shared by every layer and fixes each
head's size, so cutting it mixes heads (a 4-head layer narrowed to half its width would
silently become 4 heads of half size, or 2 heads built from dims of all 4). Here the
dependency groups of a model with recognised attention layers are sorted into units:

- ``heads``: the q/k/v output rows + output-projection columns of one attention layer; its
  channels go in whole heads (``divisor`` = head size, so every rounding keeps at least one
  head) and the layer's head-count attributes follow the cut;
- ``ffn``: the intermediate width of a feed-forward block (from the hidden stream back into
  it);
- the hidden width itself (any group feeding an attention layer's q/k/v inputs) and any
  group that would cut part of a head are left out.

Attention families are recognised by a small registry (``FAMILIES``, one entry per layout):
Hugging Face BERT-style (``query``/``key``/``value`` + ``num_attention_heads``,
``attention_head_size``, ``all_head_size``) and q_proj-style (``q_proj``/``k_proj``/``v_proj``
+ ``num_attention_heads``, ``head_dim``: ViT and relatives), and PyTorch's
``nn.MultiheadAttention`` once :mod:`nasprune.pruning.mha` has given it separate q/k/v
projections. Nothing here imports ``transformers``: layers are matched by their attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.mha import NarrowMultiheadAttention

HEADS, FFN, CHANNELS = "heads", "ffn", "channels"


@dataclass(frozen=True)
class AttentionFamily:
    """One attention layout: its projection children and head attributes.

    ``config_head_dim``: the model config can state the head size (``config.head_dim``), so
    a uniform head count can be written into the config and ``from_pretrained`` rebuilds it.
    """

    name: str
    projections: tuple[str, str, str]  # query, key, value children (nn.Linear)
    heads_attr: str
    dim_attr: str
    all_attr: str | None = None  # heads × head size, when the layer stores it
    config_head_dim: bool = False
    # Only layers of this type (a layout matched by attributes alone could belong to a
    # module whose forward derives the head size from another width).
    module_type: type[nn.Module] | None = None

    def matches(self, module: nn.Module, widths: bool = True) -> bool:
        """``module`` has this layout; with ``widths``, q/k/v are all heads × head size wide
        (grouped-query layouts are not handled: their groups stay out of pruning)."""
        if self.module_type is not None and not isinstance(module, self.module_type):
            return False
        heads, dim = getattr(module, self.heads_attr, None), getattr(module, self.dim_attr, None)
        if not (isinstance(heads, int) and isinstance(dim, int) and heads > 0 and dim > 0):
            return False
        projs = [getattr(module, p, None) for p in self.projections]
        return all(isinstance(p, nn.Linear) and (not widths or p.out_features == heads * dim)
                   for p in projs)


FAMILIES: dict[str, AttentionFamily] = {
    "hf-bert": AttentionFamily("hf-bert", ("query", "key", "value"), "num_attention_heads",
                               "attention_head_size", "all_head_size"),
    "hf-qkv-proj": AttentionFamily("hf-qkv-proj", ("q_proj", "k_proj", "v_proj"),
                                   "num_attention_heads", "head_dim", config_head_dim=True),
    # nn.MultiheadAttention, converted for pruning (nasprune.pruning.mha)
    "torch-mha": AttentionFamily("torch-mha", ("q_proj", "k_proj", "v_proj"), "num_heads",
                                 "head_dim", module_type=NarrowMultiheadAttention),
}


@dataclass(frozen=True)
class AttentionLayer:
    """One recognised attention layer of a model (``name`` is its module path)."""

    name: str
    module: nn.Module
    family: AttentionFamily

    @property
    def projections(self) -> list[str]:
        """Full names of its query, key and value layers."""
        return [f"{self.name}.{p}" for p in self.family.projections]

    @property
    def head_dim(self) -> int:
        return int(getattr(self.module, self.family.dim_attr))

    @property
    def heads(self) -> int:
        return int(getattr(self.module, self.family.heads_attr))


def attention_layers(model: nn.Module, widths: bool = True) -> dict[str, AttentionLayer]:
    """Every recognised attention layer of ``model``, by module name (definition order).

    ``widths=False`` matches by attributes only: after a cut, before ``sync_heads``.
    """
    found: dict[str, AttentionLayer] = {}
    for name, module in model.named_modules():
        for family in FAMILIES.values():
            if name and family.matches(module, widths):
                found[name] = AttentionLayer(name, module, family)
                break
    return found


def transformer_layers(model: nn.Module) -> list[str]:
    """Names of the Transformer layers that can be dropped whole: the entries of an
    ``nn.ModuleList`` that each hold exactly one recognised attention layer (BERT/ViT-style,
    GPT-2's fused ``Conv1D`` attention, or grouped-query attention)."""
    from nasprune.pruning.conv1d import fused_heads  # both import this module
    from nasprune.pruning.gqa import gqa_layers

    attn = list(dict.fromkeys([*attention_layers(model), *fused_heads(model),
                               *gqa_layers(model)]))
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            for key in module._modules:
                child = f"{name}.{key}" if name else key
                if sum(a.startswith(child + ".") for a in attn) == 1:
                    found.append(child)
    return found


def classify(model: nn.Module, found: Sequence, fused_qkv: Sequence[str] = ()) -> list:
    """Mark head and FFN groups and drop the hidden width, for ``(ChannelGroup, x)`` pairs.

    ``fused_qkv`` names the fused q/k/v Linears of attention cut outside DepGraph
    (:mod:`nasprune.pruning.fused_qkv`): whatever feeds them is the hidden width too.
    A model without recognised attention comes back unchanged. A head group is renamed
    after its attention layer (``bert.encoder.layer.0.attention.self``) and gets
    ``divisor`` = head size; an FFN group keeps its name (its first layer).
    """
    layers = attention_layers(model)
    if not layers and not fused_qkv:
        return list(found)
    by_qkv = {frozenset(a.projections): a for a in layers.values()}
    qkv = {p for a in layers.values() for p in a.projections} | set(fused_qkv)
    kept, hidden_in, hidden_out = [], set(), set()
    for pair in found:
        info = pair[0]
        layer = by_qkv.get(frozenset(info.out_layers))
        if layer is not None and info.channels == layer.heads * layer.head_dim:
            info.name, info.kind, info.divisor = layer.name, HEADS, layer.head_dim
            kept.append(pair)
        elif qkv & set(info.in_layers + info.other_layers):  # the residual stream
            hidden_in.update(info.in_layers)
            hidden_out.update(info.out_layers)
        elif not qkv & set(info.out_layers):  # a partial cut of q/k/v would split heads
            kept.append(pair)
    for info, *_ in kept:
        if info.kind == CHANNELS and set(info.out_layers) <= hidden_in \
                and set(info.in_layers) <= hidden_out:
            info.kind = FFN
    return kept


def select_heads(scores: torch.Tensor, keep: int, head_dim: int) -> list[int]:
    """The channels of the ``(channels - keep) / head_dim`` lowest-scoring whole heads.

    A head's score is the sum of its channels' scores (for ``l1``: the L1 norm of its
    q/k/v rows and output-projection columns, each layer normalised).
    """
    heads = scores.numel() // head_dim
    drop = heads - keep // head_dim
    if drop <= 0:
        return []
    per_head = scores.view(heads, head_dim).sum(1)
    gone = torch.argsort(per_head, stable=True)[:drop]
    return sorted((gone[:, None] * head_dim + torch.arange(head_dim)).flatten().tolist())


def set_heads(layer: AttentionLayer, heads: int) -> None:
    """Give ``layer`` ``heads`` heads in its attributes (its weights already have them)."""
    fam, mod = layer.family, layer.module
    setattr(mod, fam.heads_attr, heads)
    if fam.all_attr is not None:
        setattr(mod, fam.all_attr, heads * layer.head_dim)


def sync_heads(model: nn.Module) -> dict[str, int]:
    """Set every attention layer's head count from its (pruned) query projection.

    Returns layer name → heads. Called after surgery and after a checkpoint's widths are
    applied, so the attributes never disagree with the weights.
    """
    counts = {}
    for name, layer in attention_layers(model, widths=False).items():
        q = layer.module.get_submodule(layer.family.projections[0])
        heads, rest = divmod(q.out_features, layer.head_dim)
        if rest or heads < 1:
            raise NaspruneError(f"attention layer '{name}' has {q.out_features} query "
                                f"channels, not a whole number of {layer.head_dim}-wide heads")
        set_heads(layer, heads)
        counts[name] = heads
    return counts


# Hugging Face config keys that pruning may change (uniform widths only): a checkpoint
# records them so a loaded model's config says what its layers are.
CONFIG_KEYS = ("num_attention_heads", "head_dim", "intermediate_size", "n_inner",
               "num_key_value_heads")


def sync_config(model: nn.Module, heads: dict[str, int], ffn_layers: Sequence[str]) -> None:
    """Write uniform widths into a Hugging Face config so ``from_pretrained`` rebuilds them.

    The config is shared by every layer, so it can only state uniform widths. Head counts go
    in when every layer has the same count and the family's config can state the head size
    (``config.head_dim``; BERT's cannot: its head size is always hidden / heads, so a
    head-pruned BERT keeps the original count in its config and only nasprune.load rebuilds
    it). ``intermediate_size`` goes in when every layer's FFN (``ffn_layers``, the first
    layer of each FFN group) has one width.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_attention_heads"):
        return
    layers = attention_layers(model, widths=False)
    counts = set(heads.values())
    if len(counts) == 1 and layers and all(a.family.config_head_dim for a in layers.values()):
        (n,) = counts
        if n != config.num_attention_heads:
            config.head_dim = next(iter(layers.values())).head_dim
            config.num_attention_heads = n
    named = dict(model.named_modules())
    widths = {named[n].out_features for n in ffn_layers if isinstance(named.get(n), nn.Linear)}
    every_layer = len(ffn_layers) == getattr(config, "num_hidden_layers", len(ffn_layers))
    if hasattr(config, "intermediate_size") and len(widths) == 1 and every_layer:
        config.intermediate_size = widths.pop()


def config_widths(model: nn.Module) -> dict[str, int]:
    """The ``CONFIG_KEYS`` a model's Hugging Face config holds (for the width spec of a
    model with attention)."""
    config = getattr(model, "config", None)
    if config is None:
        return {}
    return {k: v for k in CONFIG_KEYS
            if isinstance(v := getattr(config, k, None), int) and not isinstance(v, bool)}


def set_config_widths(model: nn.Module, widths: dict[str, int]) -> None:
    """Put recorded ``CONFIG_KEYS`` back into the model's config (``config_widths`` inverse)."""
    config = getattr(model, "config", None)
    if widths and config is None:
        raise NaspruneError("the spec records config widths but the model has no .config: "
                            "the checkpoint is for a different model")
    for key, value in widths.items():
        setattr(config, key, value)


__all__ = ["CHANNELS", "CONFIG_KEYS", "FAMILIES", "FFN", "HEADS", "AttentionFamily",
           "AttentionLayer", "attention_layers", "classify", "config_widths", "select_heads",
           "set_config_widths", "set_heads", "sync_config", "sync_heads",
           "transformer_layers"]
