"""Channel surgery nasprune does itself, for units Torch-Pruning's DependencyGraph cannot
trace or cut: GPT-2's Hugging Face ``Conv1D`` layers (:mod:`nasprune.pruning.conv1d`) and
rotary, grouped-query attention (:mod:`nasprune.pruning.gqa`).

An :class:`OwnGroup` plays the part of a Torch-Pruning group for
:mod:`nasprune.pruning.structured`: ``nasprune_members`` (which channels of which layer go
with each group channel) for the criteria and ``prune(removed)`` for the cut.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
from torch import nn

from nasprune.pruning.members import Member


def is_conv1d(module: object) -> bool:
    """A Hugging Face ``Conv1D``: ``nf`` outputs, ``nx`` inputs, weight ``(nx, nf)``."""
    w = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(w, torch.Tensor) and w.dim() == 2
            and isinstance(getattr(module, "nf", None), int)
            and isinstance(getattr(module, "nx", None), int))


def _dim(layer: nn.Module, role: str) -> int:
    """The weight dimension holding ``role`` ("out"/"in") channels: nn.Linear stores
    ``(out, in)``, Conv1D ``(in, out)``."""
    out_dim = 0 if isinstance(layer, nn.Linear) else 1
    return out_dim if role == "out" else 1 - out_dim


def cut_layer(layer: nn.Module, keep: torch.Tensor, role: str) -> None:
    """Keep only the outputs (``role`` "out") or inputs ``keep`` of a Linear or Conv1D."""
    w = layer.weight
    layer.weight = nn.Parameter(w.data.index_select(_dim(layer, role), keep).clone(),
                                requires_grad=w.requires_grad)
    if role == "out" and layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.data[keep].clone(),
                                  requires_grad=layer.bias.requires_grad)
    if isinstance(layer, nn.Linear):
        layer.out_features, layer.in_features = layer.weight.shape
    else:
        layer.nx, layer.nf = layer.weight.shape


@dataclass
class OwnGroup:
    """One unit (heads of an attention layer, an FFN width) that nasprune cuts itself.

    ``after`` runs once the weights are cut: the owning module's attributes follow them.
    """

    nasprune_members: list[Member]
    after: Callable[[], object] | None = None

    @torch.no_grad()
    def prune(self, removed: Collection[int]) -> None:
        """Remove group channels ``removed`` from every member (in place)."""
        gone = {int(i) for i in removed}
        for m in self.nasprune_members:
            drop = {int(i) for i, r in zip(m.idx.tolist(), m.root.tolist(), strict=True)
                    if r in gone}
            width = m.module.weight.shape[_dim(m.module, m.role)]
            keep = torch.tensor([i for i in range(width) if i not in drop], dtype=torch.long)
            cut_layer(m.module, keep.to(m.module.weight.device), m.role)
        if self.after is not None:
            self.after()


__all__ = ["OwnGroup", "cut_layer", "is_conv1d"]
