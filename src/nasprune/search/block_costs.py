"""What dropping whole blocks removes from the analytic cost, exactly.

A dropped block (a Transformer layer, a residual block: :func:`~nasprune.pruning.layers.
residual_blocks`) becomes the identity, so every counted layer, every parameter and every
attention product inside it goes, at whatever widths its groups were given; nothing
outside it changes (its input and output keep the residual stream's width). The costs of
the layers inside each block are folded into 0/1 matrices over the
:class:`~nasprune.search.costmodel.CostModel`'s own tables, so the removed MACs and params
for any kept widths and any set of dropped blocks are a few matrix products.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nasprune.search.costmodel import CostModel


def _owner(name: str, blocks: Sequence[str]) -> int:
    """Index of the block holding module ``name`` (-1: none)."""
    for i, b in enumerate(blocks):
        if name == b or name.startswith(b + "."):
            return i
    return -1


def _matrix(names: Sequence[str], blocks: Sequence[str]) -> np.ndarray:
    """``(len(names), len(blocks))``: 1 where the module lies inside the block."""
    mat = np.zeros((len(names), len(blocks)), dtype=np.int64)
    for i, n in enumerate(names):
        b = _owner(n, blocks)
        if b >= 0:
            mat[i, b] = 1
    return mat


def outermost(blocks: Sequence[str]) -> list[str]:
    """``blocks`` without those inside another one (each module is dropped at most once)."""
    return [b for b in blocks if not any(b.startswith(o + ".") for o in blocks if o != b)]


class BlockCosts:
    """MACs and params inside each block, as functions of the kept channels per group."""

    def __init__(self, cost_model: CostModel, blocks: Sequence[str]) -> None:
        self.cost_model = cost_model
        self.blocks = list(blocks)
        cm, n_b = cost_model, len(self.blocks)
        self._layers = _matrix(cm.layer_names, self.blocks)
        self._layers_f = self._layers.astype(float)
        self._others = _matrix(cm.other_names, self.blocks)
        self._fixed = np.zeros(n_b, dtype=np.int64)
        for name, count in cm.fixed_by_module.items():
            b = _owner(name, self.blocks)
            if b >= 0:
                self._fixed[b] += count
        # Attention products: fixed ones, and those scaling with a head group's kept heads.
        self._free_fixed = np.zeros(n_b, dtype=np.int64)
        self._free_group = np.zeros((len(cm.groups), n_b), dtype=np.int64)
        for product, group in cm.products:
            b = next((_owner(n, self.blocks) for n in reversed(product.stack)
                      if _owner(n, self.blocks) >= 0), -1)
            if b < 0:
                continue
            if group < 0:
                self._free_fixed[b] += product.macs
            else:
                self._free_group[group, b] += product.macs

    def layers_alive(self, dropped: np.ndarray) -> np.ndarray:
        """Per counted layer (the cost model's order): 0 inside a dropped block, else 1."""
        return 1.0 - np.minimum(self._layers_f @ np.asarray(dropped, dtype=float), 1.0)

    def per_block(self, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MACs and params inside each block at ``kept`` channels per group."""
        cm = self.cost_model
        kept = np.asarray(kept, dtype=np.int64)
        layer_macs, layer_params = cm.layer_costs_fast(kept)
        safe = np.maximum(cm.channels, 1)[:, None]
        free = ((self._free_group * kept[:, None]) // safe).sum(0) + self._free_fixed
        macs = layer_macs @ self._layers + free
        params = layer_params @ self._layers + cm.other_params(kept) @ self._others + self._fixed
        return macs, params

    def cost(self, kept: np.ndarray, dropped: np.ndarray) -> tuple[int, int]:
        """(MACs, params) of the network at ``kept`` widths with the ``dropped`` blocks
        (a bool per block) replaced by the identity."""
        cm = self.cost_model
        macs, params = cm.cost(kept)
        dropped = np.asarray(dropped, dtype=bool)
        if not dropped.any():
            return macs, params
        # Only the dropped columns: one matrix-vector product per table.
        layer_macs, layer_params = cm.layer_costs_fast(kept)
        inside = self._layers_f @ dropped
        ints = np.asarray(kept, dtype=np.int64)
        free = self._free_group[:, dropped].sum(1)
        gone_macs = (float(layer_macs @ inside) + int(self._free_fixed[dropped].sum())
                     + int(((free * ints) // np.maximum(cm.channels, 1)).sum()))
        gone_params = (float(layer_params @ inside) + int(self._fixed[dropped].sum())
                       + int(cm.other_params(ints) @ (self._others @ dropped)))
        return macs - int(round(gone_macs)), params - int(round(gone_params))


__all__ = ["BlockCosts", "outermost"]
