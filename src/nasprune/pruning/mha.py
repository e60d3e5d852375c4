"""``nn.MultiheadAttention`` with whole heads as the prunable unit.

PyTorch's ``nn.MultiheadAttention`` has one width for everything: ``embed_dim`` is the
width of the query input, of the q/k/v projections (heads × head size) and of the output.
Removing heads must narrow the q/k/v projections and the out-projection's inputs while the
residual stream keeps its width, and ``kdim``/``vdim`` only free the key/value *inputs*: no
``nn.MultiheadAttention`` can hold fewer heads than ``embed_dim / head_dim``. (Torch-
Pruning instead narrows every head, which also cuts the hidden width of the whole network.)

So a layer that loses heads becomes a :class:`NarrowMultiheadAttention`: the same call
signature and results (``(output, weights)``, ``batch_first``, masks, dropout), separate
``q_proj``/``k_proj``/``v_proj`` Linears of ``heads × head_dim`` rows and an ``out_proj``
back to ``embed_dim``; head size and softmax scale unchanged. Pruning converts every
eligible layer of its working copy (:func:`split_attention`), the attention registry
(:mod:`nasprune.pruning.attention`) then sees an ordinary q/k/v/out layout with
``num_heads``/``head_dim``, and layers that kept all their heads are packed back into the
original ``nn.MultiheadAttention`` (:func:`pack_attention`), so they keep PyTorch's fused
fast path. Layers with ``add_bias_kv``/``add_zero_attn`` or a single head are not
converted: Torch-Pruning narrows them as before.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class NarrowMultiheadAttention(nn.Module):
    """Multi-head attention whose q/k/v width (``num_heads × head_dim``) may be below
    ``embed_dim``: an ``nn.MultiheadAttention`` after whole heads were removed.

    Attributes that PyTorch's Transformer layers read before choosing their fused fast path
    (``in_proj_weight``, ``in_proj_bias``, ``_qkv_same_embed_dim``) say "not fusable", so
    they call this module's ``forward``.
    """

    def __init__(self, embed_dim: int, num_heads: int = 1, head_dim: int | None = None,
                 dropout: float = 0.0, bias: bool = True, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False) -> None:
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = head_dim or embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout, self.batch_first = dropout, batch_first
        inner = self.num_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.k_proj = nn.Linear(self.kdim, inner, bias=bias)
        self.v_proj = nn.Linear(self.vdim, inner, bias=bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)
        self._qkv_same_embed_dim = False
        self.in_proj_weight = self.in_proj_bias = None
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> NarrowMultiheadAttention:
        """The same layer, weights copied (on its device, in its dtype and mode)."""
        ref = mha.out_proj.weight
        bias = mha.in_proj_bias is not None
        with torch.device(ref.device):
            new = cls(mha.embed_dim, mha.num_heads, mha.head_dim, mha.dropout, bias,
                      mha.kdim, mha.vdim, mha.batch_first).to(ref.dtype)
        e = mha.embed_dim
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.chunk(3)
        else:
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        with torch.no_grad():
            for i, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
                proj.weight.copy_(weights[i])
                if bias:
                    proj.bias.copy_(mha.in_proj_bias[i * e:(i + 1) * e])
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new.train(mha.training)

    def to_mha(self) -> nn.MultiheadAttention:
        """Back to an ``nn.MultiheadAttention`` (only when every head is still there)."""
        if self.num_heads * self.head_dim != self.embed_dim:
            raise ValueError("a head-pruned attention layer has no nn.MultiheadAttention form")
        ref = self.out_proj.weight
        bias = self.out_proj.bias is not None
        with torch.device(ref.device):
            mha = nn.MultiheadAttention(self.embed_dim, self.num_heads, self.dropout, bias,
                                        kdim=self.kdim, vdim=self.vdim,
                                        batch_first=self.batch_first).to(ref.dtype)
        projs = (self.q_proj, self.k_proj, self.v_proj)
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                mha.in_proj_weight.copy_(torch.cat([p.weight for p in projs]))
            else:
                for p, w in zip(projs, (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight),
                                strict=True):
                    w.copy_(p.weight)
            if bias:
                mha.in_proj_bias.copy_(torch.cat([p.bias for p in projs]))
                mha.out_proj.bias.copy_(self.out_proj.bias)
            mha.out_proj.weight.copy_(self.out_proj.weight)
        return mha.train(self.training)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``nn.MultiheadAttention.forward``: same arguments, same results."""
        if is_causal and attn_mask is None:  # as nn.MultiheadAttention: the mask is required
            raise RuntimeError("Need attn_mask if specifying the is_causal hint")
        batched = query.dim() == 3
        if not batched:  # (L, E): one sequence
            query, key, value = query[None], key[None], value[None]
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask[None]
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, lq, s = query.shape[0], query.shape[1], key.shape[1]
        q, k, v = (self._heads(p(t)) for p, t in ((self.q_proj, query), (self.k_proj, key),
                                                 (self.v_proj, value)))
        mask = self._mask(attn_mask, key_padding_mask, b, lq, s, q.dtype)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            logits = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
            weights = torch.softmax(logits if mask is None else logits + mask, dim=-1)
            weights = F.dropout(weights, p) if p > 0 else weights
            out = weights @ v
            weights = weights.mean(1) if average_attn_weights else weights
            weights = weights if batched else weights[0]
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, self.num_heads * self.head_dim))
        if not batched:
            out = out[0]
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, L, heads·d) → (B, heads, L, d)."""
        return t.view(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _mask(self, attn_mask: torch.Tensor | None, padding: torch.Tensor | None, b: int,
              lq: int, s: int, dtype: torch.dtype) -> torch.Tensor | None:
        """Both masks as one additive float mask broadcastable to (B, heads, Lq, S)."""

        def additive(m: torch.Tensor) -> torch.Tensor:
            if m.dtype == torch.bool:
                return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(
                    m, float("-inf"))
            return m.to(dtype)

        mask = None
        if attn_mask is not None:
            mask = additive(attn_mask)
            if mask.dim() == 3:  # per head: (B·heads, Lq, S) — only this layer's own heads
                if mask.shape[0] != b * self.num_heads:
                    raise RuntimeError(
                        f"a 3-D attn_mask needs batch × heads = {b * self.num_heads} "
                        f"entries on this attention layer (it has {self.num_heads} heads "
                        f"left after pruning), got {mask.shape[0]}")
                mask = mask.view(b, self.num_heads, lq, s)
        if padding is not None:
            pad = additive(padding).view(b, 1, 1, s)
            mask = pad if mask is None else mask + pad
        return mask

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"head_dim={self.head_dim}, batch_first={self.batch_first}")


def _splittable(m: nn.Module) -> bool:
    """An ``nn.MultiheadAttention`` this module can convert (several heads, no extra
    key/value biases or zero attention, whose per-head layout would need cutting too)."""
    return (isinstance(m, nn.MultiheadAttention) and m.num_heads > 1 and m.bias_k is None
            and m.bias_v is None and not m.add_zero_attn)


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in model.modules():
        for key, child in parent._modules.items():
            if child is old:
                parent._modules[key] = new


def has_splittable(model: nn.Module) -> bool:
    """Whether ``model`` has an ``nn.MultiheadAttention`` that :func:`split_attention`
    converts."""
    return any(_splittable(m) for m in model.modules())


def split_attention(model: nn.Module) -> nn.Module:
    """Convert every eligible ``nn.MultiheadAttention`` of ``model`` (in place) into an
    equal :class:`NarrowMultiheadAttention`, whose heads are prunable; returns ``model``."""
    for m in [m for m in model.modules() if _splittable(m)]:
        _replace(model, m, NarrowMultiheadAttention.from_mha(m))
    return model


def split_copy(model: nn.Module) -> nn.Module:
    """``model`` itself when nothing needs converting, else a converted deep copy (to list
    groups or model costs of the layout pruning works on, without touching ``model``)."""
    return split_attention(copy.deepcopy(model)) if has_splittable(model) else model


def pack_attention(model: nn.Module) -> None:
    """Turn every :class:`NarrowMultiheadAttention` that kept all its heads back into an
    ``nn.MultiheadAttention`` (in place)."""
    for m in list(model.modules()):
        if isinstance(m, NarrowMultiheadAttention) and m.num_heads * m.head_dim == m.embed_dim:
            _replace(model, m, m.to_mha())


__all__ = ["NarrowMultiheadAttention", "has_splittable", "pack_attention", "split_attention",
           "split_copy"]
