"""The geometry of every counted layer of a model, from one batch-1 forward pass.

Hooks on the modules :mod:`nasprune.metrics.counted` names (conv, transposed conv, linear,
multi-head attention) record what the cost formulas of
:class:`~nasprune.search.costmodel.CostModel` and the latency model need: widths, groups,
kernel, stride, output positions and bias (attention: rows, key/value dims, attention size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nasprune.metrics.counted import (
    CONV_T,
    LINEAR,
    MHA,
    counted_modules,
    forward,
    is_conv1d,
    linear_dims,
    mha_rows,
)
from nasprune.metrics.products import Product, recording_products


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


def _merge(found: dict[str, LayerGeometry], geo: LayerGeometry) -> None:
    """Add ``geo`` to ``found``: a module called twice costs twice."""
    prev = found.get(geo.name)
    if prev is None:
        found[geo.name] = geo
        return
    prev.positions += geo.positions
    if prev.mha and geo.mha:
        # Rows and attention sizes add up; dims and bias flags are the module's own.
        prev.mha = tuple(a + b if i in (0, 1, 2, 5) else a
                         for i, (a, b) in enumerate(zip(prev.mha, geo.mha, strict=True)))


def _conv_geometry(name: str, m: nn.Module, inp: tuple, out: torch.Tensor) -> LayerGeometry:
    transposed = isinstance(m, CONV_T)
    # Batch 1: positions = elements per channel of the output (input for convT).
    ref, width = (inp[0], m.in_channels) if transposed else (out, m.out_channels)
    return LayerGeometry(
        name, "convT" if transposed else "conv", m.in_channels, m.out_channels, m.groups,
        math.prod(m.kernel_size), int(np.prod(m.stride)), int(ref.numel() // width),
        m.bias is not None, in_shape=tuple(inp[0].shape[1:]))


def _linear_geometry(name: str, m: nn.Module, inp: tuple, out: torch.Tensor) -> LayerGeometry:
    """``nn.Linear`` or Hugging Face ``Conv1D`` (the same layer, weight stored transposed)."""
    n_in, n_out = linear_dims(m)
    positions = out.numel() // n_out if n_out else 0
    return LayerGeometry(name, "linear", n_in, n_out, 1, 1, 1, int(positions),
                         m.bias is not None, in_shape=tuple(inp[0].shape[1:]))


def _mha_geometry(name: str, m: nn.MultiheadAttention, args: tuple,
                  kwargs: dict) -> LayerGeometry:
    nq, nk, nv, batch = mha_rows(m, args, kwargs)
    attn = batch * (nq // batch) * (nk // batch)
    extras = (int(m.in_proj_bias is not None), int(m.out_proj.bias is not None),
              int(m.bias_k is not None) + int(m.bias_v is not None))
    return LayerGeometry(name, "mha", m.embed_dim, m.embed_dim, 1, 1, 1, 1, False,
                         (nq, nk, nv, m.kdim, m.vdim, attn, *extras))


def _hook(found: dict[str, LayerGeometry], name: str, m: nn.Module) -> Any:
    """Register the forward hook that records ``m``'s geometry into ``found``."""
    if isinstance(m, MHA):
        return m.register_forward_hook(
            lambda mod, args, kwargs, out: _merge(found, _mha_geometry(name, mod, args, kwargs)),
            with_kwargs=True)
    linear = isinstance(m, LINEAR) or is_conv1d(m)
    geometry = _linear_geometry if linear else _conv_geometry
    return m.register_forward_hook(
        lambda mod, inp, out: _merge(found, geometry(name, mod, inp, out)))


def record(model: nn.Module, example_inputs: Any
           ) -> tuple[dict[str, LayerGeometry], list[Product]]:
    """Geometry of every counted layer and the attention products outside them
    (:mod:`nasprune.metrics.products`), from one batch-1 forward pass in eval mode."""
    found: dict[str, LayerGeometry] = {}
    counted = dict(counted_modules(model))
    handles = [_hook(found, name, m) for name, m in counted.items()]
    was_training = model.training
    model.eval()
    try:
        # Autograd on, as metrics.cost does: the fused transformer fast path skips hooks.
        with torch.enable_grad(), \
                recording_products(model, {id(m) for m in counted.values()}) as products:
            forward(model, example_inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return found, products


def record_layers(model: nn.Module, example_inputs: Any) -> dict[str, LayerGeometry]:
    """Geometry of every counted layer (:func:`record` without the products)."""
    return record(model, example_inputs)[0]


__all__ = ["LayerGeometry", "record", "record_layers"]
