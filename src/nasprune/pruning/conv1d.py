"""GPT-2-style layers built from Hugging Face ``Conv1D``: heads and FFN width cut here.

``Conv1D`` (``transformers.pytorch_utils``) is a linear layer with its weight stored
transposed, ``(in, out)``, and GPT-2 fuses q, k and v into one ``c_attn`` whose output is
split in three. Torch-Pruning's DependencyGraph knows neither, so these units are found by
attribute names and cut by nasprune itself:

- ``heads`` (named after the attention module, ``transformer.h.0.attn``): channel ``c`` of
  the group is output ``c`` of each of c_attn's q, k and v thirds and input ``c`` of
  ``c_proj``; whole heads go (``divisor`` = head size), ``num_heads`` and ``split_size``
  follow. The head size and its 1/sqrt scale are unchanged.
- ``ffn``: ``mlp.c_fc`` outputs / ``mlp.c_proj`` inputs.

The hidden width (every Conv1D's other side, the embeddings, the tied ``lm_head``) is never
cut. Nothing here imports ``transformers``: layers are matched by class and attribute names.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from nasprune.pruning.attention import FFN, HEADS
from nasprune.pruning.members import Member
from nasprune.pruning.surgery import OwnGroup, is_conv1d


def _fused_attention(module: nn.Module) -> bool:
    """GPT-2 self-attention: fused ``c_attn`` (q|k|v), ``c_proj``, whole heads of
    ``head_dim``. Cross-attention (``q_attn``) is not handled: it stays unpruned."""
    heads, dim, split = (getattr(module, a, None) for a in ("num_heads", "head_dim", "split_size"))
    c_attn, c_proj = getattr(module, "c_attn", None), getattr(module, "c_proj", None)
    if not (is_conv1d(c_attn) and is_conv1d(c_proj) and not hasattr(module, "q_attn")):
        return False
    if not all(isinstance(v, int) and v > 0 for v in (heads, dim, split)):
        return False
    return split == heads * dim and c_attn.nf == 3 * split and c_proj.nx == split


def _mlp(module: nn.Module) -> bool:
    c_fc, c_proj = getattr(module, "c_fc", None), getattr(module, "c_proj", None)
    return is_conv1d(c_fc) and is_conv1d(c_proj) and c_fc.nf == c_proj.nx


def sync_attention(module: nn.Module) -> int:
    """Set a fused attention's ``num_heads``/``split_size`` from its (cut) ``c_proj``."""
    heads = module.c_proj.nx // module.head_dim
    module.num_heads, module.split_size = heads, heads * module.head_dim
    return heads


def conv1d_units(model: nn.Module, skip: Collection[nn.Module] = ()) -> list[tuple]:
    """``(ChannelGroup, OwnGroup)`` pairs for every GPT-2 head and FFN unit of ``model``.

    A unit touching a module in ``skip`` (ignored or output layers) is left out.
    """
    from nasprune.pruning.graph import ChannelGroup  # graph imports this module

    skipped = {id(m) for m in skip}
    found = []
    for name, module in model.named_modules():
        if _fused_attention(module):
            split, kind, group_name = module.split_size, HEADS, name
            out_name, in_name = f"{name}.c_attn", f"{name}.c_proj"
            out_idx = torch.arange(3 * split)
            out_root = torch.arange(split).repeat(3)
            attention, divisor = module, module.head_dim
        elif _mlp(module):
            split, kind, group_name = module.c_fc.nf, FFN, f"{name}.c_fc"
            out_name, in_name = group_name, f"{name}.c_proj"
            out_idx = out_root = torch.arange(split)
            attention, divisor = None, 1
        else:
            continue
        out_l, in_l = model.get_submodule(out_name), model.get_submodule(in_name)
        if id(out_l) in skipped or id(in_l) in skipped or id(module) in skipped:
            continue
        chans = torch.arange(split)
        group_members = [Member(out_name, out_l, "out", out_idx, out_root),
                         Member(in_name, in_l, "in", chans, chans)]
        info = ChannelGroup(name=group_name, channels=split, out_layers=[out_name],
                            in_layers=[in_name], divisor=divisor, kind=kind)
        after = (lambda m=attention: sync_attention(m)) if attention is not None else None
        found.append((info, OwnGroup(group_members, after)))
    return found


def sync_conv1d(model: nn.Module) -> dict[str, int]:
    """Make every Conv1D's ``nf``/``nx`` and every fused attention's head attributes agree
    with the weights (after a cut, or after a checkpoint's shapes were applied).

    Returns attention name → heads.
    """
    for module in model.modules():
        if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
            module.nx, module.nf = module.weight.shape
    heads = {}
    for name, module in model.named_modules():
        if all(hasattr(module, a) for a in ("c_attn", "c_proj", "num_heads", "head_dim",
                                             "split_size")) and not hasattr(module, "q_attn"):
            heads[name] = sync_attention(module)
    return heads


def fused_heads(model: nn.Module) -> dict[str, int]:
    """Attention name → heads of every GPT-2 fused attention (for the width spec)."""
    return {n: m.num_heads for n, m in model.named_modules() if _fused_attention(m)}


def sync_conv1d_config(model: nn.Module) -> None:
    """Write a uniform FFN width into a GPT-2 config (``n_inner``) so ``from_pretrained``
    rebuilds it. Head counts stay: the config derives the head size as hidden / heads."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "n_inner"):
        return
    widths = [m.c_fc.nf for m in model.modules() if _mlp(m)]
    every_layer = len(widths) == getattr(config, "n_layer", -1)
    if every_layer and len(set(widths)) == 1 and widths[0] != (config.n_inner
                                                               or 4 * config.n_embd):
        config.n_inner = widths[0]


__all__ = ["conv1d_units", "fused_heads", "sync_attention", "sync_conv1d",
           "sync_conv1d_config"]
