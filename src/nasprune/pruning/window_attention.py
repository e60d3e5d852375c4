"""Swin's shifted-window attention with whole heads as the prunable unit.

torchvision's ``ShiftedWindowAttention`` calls ``shifted_window_attention(x, qkv.weight, ...)``,
which derives the head size as ``input width // num_heads`` and merges the heads back to the
input width: no narrower head set fits it. Its per-head ``relative_position_bias_table``
(one column per head) is a parameter Torch-Pruning cannot place; following it through the
attention logits made its index-mapping search run for minutes (the second stage's
residual-stream group of a 2-stage Swin never finished in 100 s, the first took 1 s), while
with the layer traced as one leaf every group resolves in under a second. So:

- ``build_graph`` registers :class:`WindowLeaf` for these layers: Torch-Pruning treats each
  as one node (the residual-stream group only reaches its input and output);
- each layer is one ``heads`` unit cut here (:class:`WindowHeads`): rows of each third of
  ``qkv``, columns of ``proj`` and of the bias table, and the layer becomes a
  :class:`WindowAttention` (the same computation with ``head_dim`` kept apart from the
  input width).

Nothing here imports torchvision: layers are matched by class name and attributes.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from nasprune.pruning.attention import HEADS
from nasprune.pruning.members import Member
from nasprune.pruning.surgery import cut_layer

SOURCE = "ShiftedWindowAttention"  # torchvision's class (v1: no cosine attention)


class WindowAttention(nn.Module):
    """Swin (v1) shifted-window attention whose q/k/v width is ``num_heads × head_dim``,
    independent of the input width: a ``ShiftedWindowAttention`` after heads were removed."""

    def __init__(self, dim: int, window_size: list[int], shift_size: list[int], num_heads: int,
                 head_dim: int, qkv_bias: bool = True, proj_bias: bool = True,
                 attention_dropout: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.window_size, self.shift_size = list(window_size), list(shift_size)
        self.num_heads, self.head_dim = num_heads, head_dim
        self.attention_dropout, self.dropout = attention_dropout, dropout
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(num_heads * head_dim, dim, bias=proj_bias)
        positions = (2 * window_size[0] - 1) * (2 * window_size[1] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(positions, num_heads))
        n = window_size[0] * window_size[1]
        self.register_buffer("relative_position_index", torch.zeros(n * n, dtype=torch.long))

    @classmethod
    def from_swin(cls, old: nn.Module, num_heads: int) -> WindowAttention:
        """An empty layer with ``old``'s settings and ``num_heads`` heads of its head size."""
        with torch.device(old.qkv.weight.device):
            new = cls(old.qkv.in_features, old.window_size, old.shift_size, num_heads,
                      old.qkv.out_features // (3 * old.num_heads), old.qkv.bias is not None,
                      old.proj.bias is not None, old.attention_dropout, old.dropout)
        new.relative_position_index.copy_(old.relative_position_index)
        return new.to(old.qkv.weight.dtype).train(old.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """torchvision's ``shifted_window_attention`` (v1), heads of ``head_dim``."""
        b, height, width, c = x.shape
        ws, shift = self.window_size, list(self.shift_size)
        pad_r, pad_b = (ws[1] - width % ws[1]) % ws[1], (ws[0] - height % ws[0]) % ws[0]
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, ph, pw, _ = x.shape
        shift = [0 if ws[i] >= (ph, pw)[i] else shift[i] for i in range(2)]
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = (ph // ws[0]) * (pw // ws[1])
        x = x.view(b, ph // ws[0], ws[0], pw // ws[1], ws[1], c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b * windows, ws[0] * ws[1], c)
        h, d, n = self.num_heads, self.head_dim, ws[0] * ws[1]
        q, k, v = self.qkv(x).reshape(x.size(0), n, 3, h, d).permute(2, 0, 3, 1, 4)
        attn = (q * d ** -0.5).matmul(k.transpose(-2, -1))
        bias = self.relative_position_bias_table[self.relative_position_index]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if sum(shift) > 0:
            attn = attn.view(b, windows, h, n, n) + _shift_mask(x, ph, pw, ws, shift)
            attn = attn.view(-1, h, n, n)
        attn = F.dropout(attn.softmax(-1), p=self.attention_dropout, training=self.training)
        x = self.proj(attn.matmul(v).transpose(1, 2).reshape(x.size(0), n, h * d))
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = x.view(b, ph // ws[0], pw // ws[1], ws[0], ws[1], c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, ph, pw, c)
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x[:, :height, :width, :].contiguous()


def _shift_mask(x: torch.Tensor, ph: int, pw: int, ws: list[int],
                shift: list[int]) -> torch.Tensor:
    """The shifted windows' attention mask, (1, windows, 1, n, n), as torchvision builds it."""
    mask = x.new_zeros((ph, pw))
    count = 0
    for hs in ((0, -ws[0]), (-ws[0], -shift[0]), (-shift[0], None)):
        for wsl in ((0, -ws[1]), (-ws[1], -shift[1]), (-shift[1], None)):
            mask[hs[0]:hs[1], wsl[0]:wsl[1]] = count
            count += 1
    mask = mask.view(ph // ws[0], ws[0], pw // ws[1], ws[1]).permute(0, 2, 1, 3)
    mask = mask.reshape(-1, ws[0] * ws[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
    return mask.unsqueeze(1).unsqueeze(0)


def is_window_attention(m: nn.Module) -> bool:
    """torchvision's Swin v1 attention, or its head-pruned form."""
    if isinstance(m, WindowAttention):
        return True
    return (type(m).__name__ == SOURCE and isinstance(getattr(m, "qkv", None), nn.Linear)
            and isinstance(getattr(m, "proj", None), nn.Linear)
            and isinstance(getattr(m, "relative_position_bias_table", None), nn.Parameter))


def _head_dim(m: nn.Module) -> int:
    return m.head_dim if isinstance(m, WindowAttention) else m.qkv.out_features // (
        3 * m.num_heads)


class WindowLeaf(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning's view of a window attention: one node, never cut by Torch-Pruning
    (its input and output width is the residual stream, which is not pruned)."""

    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        raise NotImplementedError("window attention is cut by nasprune (WindowHeads)")

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.proj.out_features

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.qkv.in_features


def window_types(model: nn.Module) -> dict[type, WindowLeaf]:
    """Torch-Pruning customized pruners for the window attention types in ``model``."""
    return {type(m): WindowLeaf() for m in model.modules() if is_window_attention(m)}


class WindowHeads:
    """One window attention's heads as a group nasprune cuts itself (group channel ``c`` is
    row ``c`` of each ``qkv`` third and input ``c`` of ``proj``)."""

    def __init__(self, model: nn.Module, name: str) -> None:
        self.model, self.name = model, name
        attn = model.get_submodule(name)
        width = attn.proj.in_features
        chans = torch.arange(width)
        self.nasprune_members = [
            Member(f"{name}.qkv", attn.qkv, "out", torch.arange(3 * width), chans.repeat(3)),
            Member(f"{name}.proj", attn.proj, "in", chans, chans)]

    @torch.no_grad()
    def prune(self, removed: Collection[int]) -> None:
        """Remove whole heads (``removed`` holds every channel of each removed head)."""
        old = self.model.get_submodule(self.name)
        d = _head_dim(old)
        gone = {int(i) // d for i in removed}
        heads = [h for h in range(old.num_heads) if h not in gone]
        keep = torch.tensor([h * d + i for h in heads for i in range(d)], dtype=torch.long)
        width = old.num_heads * d
        new = WindowAttention.from_swin(old, len(heads))
        new.qkv, new.proj = old.qkv, old.proj
        cut_layer(new.qkv, torch.cat([keep + t * width for t in range(3)]), "out")
        cut_layer(new.proj, keep, "in")
        new.relative_position_bias_table = nn.Parameter(
            old.relative_position_bias_table.data[:, heads].clone(),
            requires_grad=old.relative_position_bias_table.requires_grad)
        parent, _, key = self.name.rpartition(".")
        self.model.get_submodule(parent)._modules[key] = new


def window_inputs(model: nn.Module) -> list[str]:
    """Names of every window attention: whatever feeds one is the residual stream."""
    return [n for n, m in model.named_modules() if n and is_window_attention(m)]


def window_units(model: nn.Module, skip: Collection[nn.Module] = ()) -> list[tuple]:
    """``(ChannelGroup, WindowHeads)`` pairs, one per window attention with several heads;
    one touching a module in ``skip`` (ignored or output layers) is left out."""
    from nasprune.pruning.graph import ChannelGroup  # graph imports this module

    skipped = {id(m) for m in skip}
    found = []
    for name in window_inputs(model):
        attn = model.get_submodule(name)
        if attn.num_heads < 2 or any(id(m) in skipped for m in (attn, attn.qkv, attn.proj)):
            continue
        info = ChannelGroup(name=name, channels=attn.proj.in_features, divisor=_head_dim(attn),
                            kind=HEADS, out_layers=[f"{name}.qkv"], in_layers=[f"{name}.proj"])
        found.append((info, WindowHeads(model, name)))
    return found


def window_heads(model: nn.Module) -> dict[str, int]:
    """Attention name → heads of every window attention (for the width spec)."""
    return {n: model.get_submodule(n).num_heads for n in window_inputs(model)}


__all__ = ["WindowAttention", "WindowHeads", "WindowLeaf", "is_window_attention",
           "window_heads", "window_inputs", "window_types", "window_units"]
