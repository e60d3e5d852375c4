"""Compute cost of a model: MACs, FLOPs and parameter count.

The convention (the search's analytic cost model matches it exactly):

* MACs are multiply-accumulates of ``Conv1d/2d/3d`` (grouped and depthwise included:
  ``out_channels · (in_channels / groups) · prod(kernel) · prod(output spatial)``),
  ``ConvTranspose1d/2d/3d`` (``input elements · (out_channels / groups) · prod(kernel)``),
  ``Linear`` and Hugging Face ``Conv1D`` (``in_features · out_features`` per output
  position, so leading dims such as a sequence length multiply it) and
  ``nn.MultiheadAttention`` (the q/k/v in-projections, the ``Q·Kᵀ`` and ``attention·V``
  matmuls and the out-projection).
* Attention written with ``F.scaled_dot_product_attention`` or eager ``torch.matmul``
  (Hugging Face BERT/GPT-2/Llama, timm): ``Q·Kᵀ`` and ``attention·V`` for the example's
  sequence length, per query head (grouped-query attention included), as a ``LayerCost``
  of kind ``"attention"`` named after the module they ran in
  (:mod:`nasprune.metrics.products`: products of two activations, never a layer's own).
* Biases, BatchNorm, activations, pooling, softmax and residual adds are NOT counted: they
  are a small share of the work, and leaving them out keeps our numbers equal to the MACs
  the papers report (ResNet-20 ≈ 41 M).
* Counted at batch size 1: dim 0 of every example input tensor is taken as the batch and
  only its first entry is run (as Torch-Pruning and ptflops also take dim 0 as the batch).
  For inputs whose first dim is not the batch (sequence-first transformers), pass a batch-1
  input and ``slice_batch=False``.
* FLOPs = 2 × MACs (one multiply plus one add per MAC).
* Params = the number of elements of all parameters (shared ones counted once).

Counting runs one forward pass with hooks on the counted modules, in eval mode; the model's
train/eval flags are restored afterwards and nothing else about the model is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasprune.metrics.counted import (
    CONV_T,
    MHA,
    counted_modules,
    first_sample,
    forward,
    is_conv1d,
    linear_dims,
    mha_rows,
)
from nasprune.metrics.mode import eval_mode
from nasprune.metrics.products import recording_products


@dataclass
class LayerCost:
    """MACs of one call of one module.

    ``weight_macs`` pairs each weight tensor with the MACs it multiplies into (what shrinks
    when that weight is sparse); ``free_macs`` are MACs between activations only (the two
    attention matmuls), which weight sparsity does not remove.
    """

    name: str
    kind: str
    weight_macs: list[tuple[torch.Tensor, int]]
    free_macs: int = 0

    @property
    def macs(self) -> int:
        return sum(m for _, m in self.weight_macs) + self.free_macs

    def sparse_macs(self) -> float:
        """MACs with each weight's share scaled by its fraction of non-zero entries."""
        total = float(self.free_macs)
        for w, m in self.weight_macs:
            total += m * _density(w)
        return total


def _density(w: torch.Tensor) -> float:
    n = w.numel()
    return float(torch.count_nonzero(w.detach()).item()) / n if n else 0.0


def _conv_cost(name: str, m: nn.Module, inputs: tuple, output: torch.Tensor) -> LayerCost:
    k = math.prod(m.kernel_size)
    if isinstance(m, CONV_T):
        # Every input element is scattered through (out / groups) · k weights.
        macs = inputs[0].numel() * (m.out_channels // m.groups) * k
    else:
        macs = output.numel() * (m.in_channels // m.groups) * k
    return LayerCost(name, type(m).__name__, [(m.weight, int(macs))])


def _linear_cost(name: str, m: nn.Module, output: torch.Tensor) -> LayerCost:
    """``nn.Linear`` or ``Conv1D``: in · out per output position."""
    n_in, n_out = linear_dims(m)
    positions = output.numel() // n_out if n_out else 0
    return LayerCost(name, type(m).__name__, [(m.weight, positions * n_in * n_out)])


def _mha_cost(
    name: str, m: nn.MultiheadAttention, args: tuple, kwargs: dict
) -> LayerCost:
    """Projections + ``Q·Kᵀ`` + ``attention·V``; batch and lengths read from the inputs."""
    e = m.embed_dim
    nq, nk, nv, batch = mha_rows(m, args, kwargs)
    lq, lk = nq // batch, nk // batch
    if m._qkv_same_embed_dim:
        w = m.in_proj_weight
        wq, wk, wv = w[:e], w[e : 2 * e], w[2 * e :]
    else:
        wq, wk, wv = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
    weight_macs = [
        (wq, nq * m.embed_dim * e),
        (wk, nk * m.kdim * e),
        (wv, nv * m.vdim * e),
        (m.out_proj.weight, nq * e * e),
    ]
    # Each head multiplies (lq × d)(d × lk) and (lq × lk)(lk × d), d = e / heads.
    attention = 2 * batch * lq * lk * e
    return LayerCost(name, "MultiheadAttention", weight_macs, attention)


def layer_costs(
    model: nn.Module, example_inputs: Any, slice_batch: bool = True
) -> list[LayerCost]:
    """One :class:`LayerCost` per call of a counted module, in call order (batch size 1),
    then one per attention product (kind ``"attention"``).

    The forward pass runs with autograd enabled on purpose: in eval mode without grad,
    PyTorch's fused ``TransformerEncoderLayer`` fast path skips the submodule calls the
    hooks need to see.
    """
    costs: list[LayerCost] = []
    handles = []
    counted = dict(counted_modules(model))
    for name, m in counted.items():
        if isinstance(m, MHA):
            handles.append(m.register_forward_hook(
                lambda mod, args, kwargs, out, n=name: costs.append(
                    _mha_cost(n, mod, args, kwargs)),
                with_kwargs=True))
        elif isinstance(m, nn.Linear) or is_conv1d(m):
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, n=name: costs.append(_linear_cost(n, mod, out))))
        else:
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, n=name: costs.append(_conv_cost(n, mod, inp, out))))
    try:
        with eval_mode(model), torch.enable_grad(), \
                recording_products(model, {id(m) for m in counted.values()}) as products:
            forward(model, example_inputs, slice_batch)
    finally:
        for h in handles:
            h.remove()
    costs += [LayerCost(p.owner, "attention", [], p.macs) for p in products]
    return costs


def layer_macs(model: nn.Module, example_inputs: Any, slice_batch: bool = True) -> dict[str, int]:
    """MACs per counted module name (summed over calls if a module runs more than once)."""
    out: dict[str, int] = {}
    for c in layer_costs(model, example_inputs, slice_batch):
        out[c.name] = out.get(c.name, 0) + c.macs
    return out


def count_macs(model: nn.Module, example_inputs: Any, slice_batch: bool = True) -> int:
    """Multiply-accumulates of one forward pass at batch size 1 (see the module docstring)."""
    return sum(c.macs for c in layer_costs(model, example_inputs, slice_batch))


def count_flops(model: nn.Module, example_inputs: Any, slice_batch: bool = True) -> int:
    """FLOPs = 2 × MACs: each multiply-accumulate is one multiply and one add."""
    return 2 * count_macs(model, example_inputs, slice_batch)


def sparse_macs(model: nn.Module, example_inputs: Any, slice_batch: bool = True) -> int:
    """MACs left when zero weights are skipped.

    Each layer's MACs are multiplied by the fraction of non-zero entries of its weight (for
    attention, per projection weight; the two activation-by-activation matmuls stay dense).
    This is what an ideal sparse kernel would execute after unstructured pruning; on a dense
    model it equals :func:`count_macs`.
    """
    costs = layer_costs(model, example_inputs, slice_batch)
    return int(round(sum(c.sparse_macs() for c in costs)))


def count_params(model: nn.Module) -> int:
    """Number of elements of all parameters (a shared parameter counts once)."""
    return sum(p.numel() for p in model.parameters())


# first_sample: re-exported, it was defined here before metrics/counted.py.
__all__ = ["LayerCost", "count_flops", "count_macs", "count_params", "first_sample",
           "layer_costs", "layer_macs", "sparse_macs"]
