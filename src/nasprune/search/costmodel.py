"""Analytic MACs / params of a pruned network from its group widths alone.

One forward pass with hooks records every counted layer's geometry (the same layers and
formulas as :mod:`nasprune.metrics.cost`: conv, transposed conv, linear, multi-head
attention, batch size 1). The dependency groups then say which group controls each layer's
output channels and which groups feed its input channels; parameter-holding layers that are
not counted for MACs (BatchNorm, LayerNorm, ...) follow the groups they belong to. All of it
is folded into a few integer arrays so that :meth:`CostModel.cost` is a handful of numpy
operations — tens of microseconds for ResNet-56 — and agrees with counting the really pruned
model, because widths come from the same ``kept_channels`` rule the surgery uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nasprune.metrics.cost import first_sample
from nasprune.pruning.graph import ChannelGroup

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_LINEAR = (nn.Linear,)
_MHA = (nn.MultiheadAttention,)


@dataclass
class LayerGeometry:
    """What the cost formulas need about one counted layer (summed over its calls)."""

    name: str
    kind: str  # "conv", "convT", "linear", "mha"
    in_dim: int  # in_channels / in_features / embed_dim
    out_dim: int
    groups: int
    kernel: int  # prod(kernel_size); 1 for linear
    stride: int
    positions: int  # output positions (conv, linear) or input positions (convT), batch 1
    bias: bool
    # Multi-head attention only: nq, nk, nv (query/key/value rows), kdim, vdim, attention
    # size (batch·lq·lk), in-projection bias, out-projection bias, number of bias_k/bias_v.
    mha: tuple[int, ...] | None = None
    in_shape: tuple[int, ...] = ()  # one sample's input shape (first call), for latency

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_dim == self.out_dim


def _run(model: nn.Module, example_inputs: Any) -> None:
    x = first_sample(example_inputs)
    if isinstance(x, dict):
        model(**x)
    elif isinstance(x, (list, tuple)):
        model(*x)
    else:
        model(x)


def record_layers(model: nn.Module, example_inputs: Any) -> dict[str, LayerGeometry]:
    """Geometry of every counted layer, from one batch-1 forward pass in eval mode."""
    found: dict[str, LayerGeometry] = {}
    inside_mha: set[int] = set()
    for mha in model.modules():
        if isinstance(mha, _MHA):
            inside_mha.update(id(s) for s in mha.modules() if s is not mha)

    def add(geo: LayerGeometry) -> None:
        if geo.name in found:  # a module called twice costs twice
            prev = found[geo.name]
            prev.positions += geo.positions
            if prev.mha and geo.mha:
                # Rows and attention sizes add up; dims and bias flags are the module's own.
                prev.mha = tuple(
                    a + b if i in (0, 1, 2, 5) else a
                    for i, (a, b) in enumerate(zip(prev.mha, geo.mha, strict=True)))
        else:
            found[geo.name] = geo

    def conv_hook(name: str):
        def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            transposed = isinstance(m, _CONV_T)
            # Batch 1: positions = elements per channel of the output (input for convT).
            ref, width = (inp[0], m.in_channels) if transposed else (out, m.out_channels)
            spatial = ref.numel() // width
            add(LayerGeometry(
                name, "convT" if transposed else "conv", m.in_channels, m.out_channels,
                m.groups, math.prod(m.kernel_size), int(np.prod(m.stride)), int(spatial),
                m.bias is not None, in_shape=tuple(inp[0].shape[1:])))
        return hook

    def linear_hook(name: str):
        def hook(m: nn.Linear, inp: tuple, out: torch.Tensor) -> None:
            positions = out.numel() // m.out_features if m.out_features else 0
            add(LayerGeometry(name, "linear", m.in_features, m.out_features, 1, 1, 1,
                              int(positions), m.bias is not None,
                              in_shape=tuple(inp[0].shape[1:])))
        return hook

    def mha_hook(name: str):
        def hook(m: nn.MultiheadAttention, args: tuple, kwargs: dict, out: Any) -> None:
            def arg(i: int, key: str) -> torch.Tensor:
                return args[i] if len(args) > i else kwargs[key]

            q, k, v = arg(0, "query"), arg(1, "key"), arg(2, "value")

            def rows(t: torch.Tensor) -> int:
                return t.numel() // t.shape[-1]

            nq, nk, nv = rows(q), rows(k), rows(v)
            batch = 1 if q.dim() == 2 else q.shape[0 if m.batch_first else 1]
            attn = batch * (nq // batch) * (nk // batch)
            extras = (int(m.in_proj_bias is not None), int(m.out_proj.bias is not None),
                      int(m.bias_k is not None) + int(m.bias_v is not None))
            add(LayerGeometry(name, "mha", m.embed_dim, m.embed_dim, 1, 1, 1, 1, False,
                              (nq, nk, nv, m.kdim, m.vdim, attn, *extras)))
        return hook

    handles = []
    for name, m in model.named_modules():
        if id(m) in inside_mha:
            continue
        if isinstance(m, _CONV + _CONV_T):
            handles.append(m.register_forward_hook(conv_hook(name)))
        elif isinstance(m, _LINEAR):
            handles.append(m.register_forward_hook(linear_hook(name)))
        elif isinstance(m, _MHA):
            handles.append(m.register_forward_hook(mha_hook(name), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        # Autograd on, as metrics.cost does: the fused transformer fast path skips hooks.
        with torch.enable_grad():
            _run(model, example_inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return found


class CostModel:
    """MACs and params as integer-array functions of the kept channels per group."""

    def __init__(self, model: nn.Module, example_inputs: Any, groups: list[ChannelGroup]) -> None:
        self.layers = record_layers(model, example_inputs)
        self.groups = groups
        g_index = {g.name: i for i, g in enumerate(groups)}
        ch = np.array([g.channels for g in groups], dtype=np.int64)
        n_g = len(groups)

        out_of: dict[str, int] = {}
        in_of: dict[str, list[int]] = {}
        other_of: dict[str, list[int]] = {}
        for gi, g in enumerate(groups):
            for n in g.out_layers:
                out_of.setdefault(n, gi)
            for n in g.in_layers:
                in_of.setdefault(n, []).append(gi)
            for n in g.other_layers:
                other_of.setdefault(n, []).append(gi)
        self.group_index = g_index

        # --- counted layers: out = kept[og] or fixed; in = fixed + M @ kept.
        names = list(self.layers)
        n_l = len(names)
        self.layer_names = names
        out_g = np.full(n_l, -1, dtype=np.int64)
        out_fixed = np.zeros(n_l, dtype=np.int64)
        in_fixed = np.zeros(n_l, dtype=np.int64)
        in_mat = np.zeros((n_l, n_g), dtype=np.int64)
        groups_fixed = np.ones(n_l, dtype=np.int64)
        dw = np.zeros(n_l, dtype=bool)
        kernel = np.ones(n_l, dtype=np.int64)
        positions = np.zeros(n_l, dtype=np.int64)
        bias = np.zeros(n_l, dtype=np.int64)
        kinds = np.zeros(n_l, dtype=np.int64)  # 0 conv/linear, 1 convT, 2 mha
        for li, n in enumerate(names):
            geo = self.layers[n]
            kernel[li], positions[li], bias[li] = geo.kernel, geo.positions, int(geo.bias)
            groups_fixed[li] = geo.groups
            kinds[li] = {"conv": 0, "linear": 0, "convT": 1, "mha": 2}[geo.kind]
            if geo.kind == "mha":
                # The embedding width of attention follows the group it sits in, if any.
                gs = other_of.get(n, []) + ([out_of[n]] if n in out_of else [])
                if gs:
                    out_g[li] = gs[0]
                else:
                    out_fixed[li] = geo.out_dim
                in_fixed[li] = geo.in_dim
                continue
            if n in out_of:
                out_g[li] = out_of[n]
            else:
                out_fixed[li] = geo.out_dim
            if geo.depthwise and n in out_of:
                dw[li] = True  # in-channels and groups follow the same group as the outputs
                continue
            feeders = in_of.get(n, [])
            total = int(sum(ch[g] for g in feeders))
            if not feeders:
                in_fixed[li] = geo.in_dim
            elif geo.in_dim == total:
                for g in feeders:
                    in_mat[li, g] += 1
            elif total and geo.in_dim % total == 0:
                # Flattened feature maps: each channel carries in_dim / channels features.
                for g in feeders:
                    in_mat[li, g] += geo.in_dim // total
            else:
                # Concatenation with a part no group controls (e.g. the network input).
                in_fixed[li] = geo.in_dim - total
                for g in feeders:
                    in_mat[li, g] += 1
        self._out_g, self._out_fixed = out_g, out_fixed
        self._out_idx = np.where(out_g >= 0, out_g, 0)
        self._in_fixed, self._in_mat = in_fixed, in_mat
        self._groups_fixed, self._dw = groups_fixed, dw
        self._kernel, self._positions, self._bias, self._kinds = kernel, positions, bias, kinds
        mha = [self.layers[n].mha if kinds[i] == 2 else (0,) * 9 for i, n in enumerate(names)]
        self._mha = np.array(mha, dtype=np.int64).reshape(n_l, 9)
        self._has_mha = bool((kinds == 2).any())

        # --- other parameters: per-channel params times a width that groups may control.
        counted = {id(m) for n, m in model.named_modules() if n in self.layers}
        mha_children = set()
        for m in model.modules():
            if isinstance(m, _MHA):
                mha_children.update(id(p) for p in m.parameters())
        seen: set[int] = set()
        per_ch, o_fixed, o_rows = [], [], []
        fixed_params = 0
        for n, m in model.named_modules():
            for p in m.parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                if id(m) in counted or id(p) in mha_children:
                    continue  # counted by the layer formulas
                gs = other_of.get(n, []) + ([out_of[n]] if n in out_of else [])
                dim0 = p.shape[0] if p.dim() else 1
                total = int(sum(ch[g] for g in gs))
                if gs and dim0 >= total and total:
                    row = np.zeros(n_g, dtype=np.int64)
                    for g in gs:
                        row[g] += 1
                    per_ch.append(p.numel() // dim0)
                    o_fixed.append(dim0 - total)
                    o_rows.append(row)
                else:
                    fixed_params += p.numel()
        # Parameters of counted modules that never ran (unused layers) stay as they are.
        ran = {id(m) for n, m in model.named_modules() if n in self.layers}
        for m in model.modules():
            if isinstance(m, _CONV + _CONV_T + _LINEAR + _MHA) and id(m) not in ran:
                for p in m.parameters(recurse=False):
                    if id(p) not in seen:
                        seen.add(id(p))
                        fixed_params += p.numel()
        self._o_per = np.array(per_ch, dtype=np.int64)
        self._o_fixed = np.array(o_fixed, dtype=np.int64)
        self._o_mat = (np.array(o_rows, dtype=np.int64).reshape(len(o_rows), n_g))
        self._fixed_params = int(fixed_params)
        self.channels = ch
        self._prepare_fast()

    def _prepare_fast(self) -> None:
        """Float copies for :meth:`cost` (exact: every value is an integer below 2**53)."""
        self._fast = not self._has_mha and not (self._kinds == 1).any()
        self._f_has_out = (self._out_g >= 0).astype(float)
        self._f_out_fixed = self._out_fixed.astype(float)
        self._f_in_fixed = self._in_fixed.astype(float)
        self._f_in_mat = self._in_mat.astype(float)
        self._f_groups = self._groups_fixed.astype(float)
        self._any_dw = bool(self._dw.any())
        self._grouped = bool((self._groups_fixed > 1).any())
        self._f_k = self._kernel.astype(float)
        self._f_kpos = (self._kernel * self._positions).astype(float)
        self._f_bias = self._bias.astype(float)
        if len(self._o_per):
            self._o_vec = (self._o_per @ self._o_mat).astype(float)
            self._o_const = int(self._o_per @ self._o_fixed)
        else:
            self._o_vec = np.zeros(len(self.groups))
            self._o_const = 0

    # ------------------------------------------------------------------------------------
    def widths(self, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Output and input widths of every counted layer for ``kept`` channels per group."""
        out = np.where(self._out_g >= 0, kept[self._out_idx], self._out_fixed)
        inn = self._in_fixed + self._in_mat @ kept
        inn = np.where(self._dw, out, inn)
        return out, inn

    def layer_costs(self, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per counted layer MACs and params (MHA: with its out-projection)."""
        kept = np.asarray(kept, dtype=np.int64)
        out, inn = self.widths(kept)
        groups = np.where(self._dw, out, self._groups_fixed)
        k, pos = self._kernel, self._positions
        # conv / linear: out · (in / groups) · k · positions; weights out · in/groups · k.
        w = out * (inn // groups) * k
        macs = w * pos
        params = w + self._bias * out
        if (self._kinds == 1).any():
            t = self._kinds == 1
            # Transposed conv: weight (in, out/groups, k); every input element scatters
            # through out/groups · k weights.
            wt = inn * (out // groups) * k
            macs = np.where(t, wt * pos, macs)
            params = np.where(t, wt + self._bias * out, params)
        if self._has_mha:
            m = self._kinds == 2
            e = out
            nq, nk, nv, kd, vd, attn, b_in, b_out, b_kv = (self._mha[:, i] for i in range(9))
            kd = np.where(kd == self._in_fixed, e, kd)  # kdim == embed_dim follows it
            vd = np.where(vd == self._in_fixed, e, vd)
            mha_macs = nq * e * e + nk * kd * e + nv * vd * e + nq * e * e + 2 * attn * e
            mha_params = (e * e + kd * e + vd * e + b_in * 3 * e + e * e + b_out * e
                          + b_kv * e)
            macs = np.where(m, mha_macs, macs)
            params = np.where(m, mha_params, params)
        return macs, params

    def cost(self, kept: np.ndarray) -> tuple[int, int]:
        """(MACs, params) of the network with ``kept`` channels in each group."""
        if self._fast:
            kf = np.asarray(kept, dtype=float)
            out = self._f_out_fixed + kf[self._out_idx] * self._f_has_out
            inn = self._f_in_fixed + self._f_in_mat @ kf
            if self._any_dw:
                ipg = np.where(self._dw, 1.0, np.floor(inn / self._f_groups))
            elif self._grouped:
                ipg = np.floor(inn / self._f_groups)
            else:
                ipg = inn
            w = out * ipg
            macs = float(w @ self._f_kpos)
            params = float(w @ self._f_k + self._f_bias @ out + self._o_vec @ kf)
            return int(round(macs)), int(round(params)) + self._o_const + self._fixed_params
        return self.cost_exact(kept)

    def cost_exact(self, kept: np.ndarray) -> tuple[int, int]:
        """The same in integer arithmetic, layer by layer (general: convT, attention)."""
        kept = np.asarray(kept, dtype=np.int64)
        macs, params = self.layer_costs(kept)
        other = int(self._o_per @ (self._o_fixed + self._o_mat @ kept)) if len(self._o_per) else 0
        return int(macs.sum()), int(params.sum()) + other + self._fixed_params
