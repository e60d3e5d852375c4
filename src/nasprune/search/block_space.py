"""A search space with depth: per-group keep ratios plus a keep/drop gene per block.

Transformer layers and residual blocks (:func:`~nasprune.pruning.layers.residual_blocks`)
can be dropped whole, which removes depth that channel pruning cannot. :class:`BlockSpace`
appends one coordinate per block to the per-group keep vector: in ``[0, 1]``, the block is
kept while it is at least ``0.5``. Its prune ratios carry a dropped block as ratio 1.0
under the block's name, which :func:`nasprune.prune` (and ``nasprune prune --ratios``)
reads as "drop it", so a search result rebuilds the same network.

Costs are exact: :class:`~nasprune.search.block_costs.BlockCosts` subtracts everything
inside the dropped blocks from the analytic cost of the widths. The projection keeps the
block genes as sampled and scales the widths onto the budget; when even the narrowest
widths with those blocks do not fit, it drops more blocks, deepest kept one first.
Latency and speed-up budgets are predicted with the dropped blocks' layers left out
(:meth:`~nasprune.search.latency.LatencyModel.predict`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.layers import residual_blocks
from nasprune.search.block_costs import BlockCosts, outermost
from nasprune.search.budget import LoadFn, bisect_scale, fill, refine
from nasprune.search.space import SearchSpace

KEEP_AT = 0.5  # a block gene at or above this keeps the block


class BlockSpace(SearchSpace):
    """:class:`SearchSpace` plus one keep/drop coordinate per block (after the groups).

    ``blocks`` (names) overrides the blocks found by ``residual_blocks``; a model without
    any is an error (use the per-group space).
    """

    kind = "blocks"

    def __init__(self, model: nn.Module, example_inputs: Any,
                 ignored: Iterable[str | nn.Module] | None = None, *,
                 blocks: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(model, example_inputs, ignored=ignored, **kwargs)
        found = residual_blocks(model, example_inputs)
        if blocks is not None:
            unknown = [b for b in blocks if b not in found]
            if unknown:
                raise NaspruneError(f"'{unknown[0]}' is not a block that can be dropped; "
                                    f"blocks: {found}")
            found = list(blocks)
        self.blocks = outermost(found)
        if not self.blocks:
            raise NaspruneError("the model has no blocks that can be dropped (residual blocks "
                                "or Transformer layers): use the per-group space")
        self.n_groups = len(self.groups)
        self.group_lower, self.group_upper = self.lower, self.upper
        self.dim = self.n_groups + len(self.blocks)
        self.lower = np.concatenate([self.group_lower, np.zeros(len(self.blocks))])
        self.upper = np.concatenate([self.group_upper, np.ones(len(self.blocks))])
        self.block_costs = BlockCosts(self.cost_model, self.blocks)

    # --- the two halves of a point ------------------------------------------------------
    def split(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(per-group keep ratios, dropped flag per block)`` of a point."""
        keep = np.asarray(keep, dtype=float)
        if keep.shape != (self.dim,):
            raise NaspruneError(f"a keep vector needs {self.dim} values, got {keep.shape}")
        return keep[: self.n_groups], keep[self.n_groups:] < KEEP_AT

    def dropped(self, keep: np.ndarray) -> list[str]:
        """Names of the blocks ``keep`` drops."""
        return [b for b, d in zip(self.blocks, self.split(keep)[1], strict=True) if d]

    def param_name(self, i: int) -> str:
        if i < self.n_groups:
            return super().param_name(i)
        return f"block{i - self.n_groups:02d}_{self.blocks[i - self.n_groups]}"

    def group_keep(self, keep: np.ndarray) -> np.ndarray:
        return self.split(keep)[0].copy()

    def nearest_keep(self, group_keep: np.ndarray) -> np.ndarray:
        """Per-group keep ratios with every block kept."""
        widths = np.clip(np.asarray(group_keep, dtype=float), self.group_lower, self.group_upper)
        return np.concatenate([widths, np.ones(len(self.blocks))])

    def keep_from_ratios(self, ratios: dict[str, float]) -> np.ndarray:
        """Per-group ratios, and a block named with ratio 1.0 dropped."""
        genes = [0.0 if float(ratios.get(b, 0.0)) == 1.0 else 1.0 for b in self.blocks]
        return np.concatenate([super().keep_from_ratios(ratios), genes])

    def prune_ratios(self, keep: np.ndarray) -> dict[str, float]:
        """Per-group prune ratios plus ``{block: 1.0}`` for each dropped block."""
        widths, _ = self.split(keep)
        return {**super().prune_ratios(widths), **dict.fromkeys(self.dropped(keep), 1.0)}

    def kept(self, keep: np.ndarray) -> np.ndarray:
        """Channels per group, then 1/0 per block (kept/dropped): the network's shape."""
        widths, dropped = self.split(keep)
        return np.concatenate([super().kept(widths), (~dropped).astype(float)])

    def kept_exact(self, keep: np.ndarray) -> np.ndarray:
        widths, dropped = self.split(keep)
        return np.concatenate([super().kept_exact(widths), (~dropped).astype(float)])

    # --- costs --------------------------------------------------------------------------
    def cost_of_kept(self, kept: np.ndarray) -> tuple[int, int]:
        """Analytic (MACs, params) of the network of shape ``kept``, blocks dropped."""
        return self.block_costs.cost(kept[: self.n_groups], kept[self.n_groups:] < KEEP_AT)

    def features(self) -> np.ndarray:
        """Group rows as :meth:`SearchSpace.features`, then one row per block (its index,
        no width features, and its shares of the network's MACs and params)."""
        groups = super().features()
        macs, params = self.block_costs.per_block(self.channels)
        rows = np.zeros((len(self.blocks), groups.shape[1]))
        rows[:, 0] = np.arange(len(self.blocks)) / max(1, len(self.blocks) - 1)
        rows[:, 5] = macs / max(1, self.base_macs)
        rows[:, 6] = params / max(1, self.base_params)
        return np.clip(np.concatenate([groups, rows]), 0.0, 1.0)

    # --- projection ---------------------------------------------------------------------
    def _fit_blocks(self, keep: np.ndarray, load: LoadFn) -> np.ndarray:
        """Drop kept blocks, deepest first, until the narrowest widths fit the budget."""
        genes = keep[self.n_groups:].copy()
        for i in reversed(range(len(genes))):
            if load(np.concatenate([self.group_lower, genes])) <= 1.0:
                break
            genes[i] = min(genes[i], 0.0)
        return genes

    def _onto_budget(self, keep: np.ndarray, load: LoadFn, exact: bool) -> np.ndarray:
        """Blocks as sampled (more dropped only if nothing fits), widths onto the budget."""
        genes = self._fit_blocks(keep, load)

        def wload(w: np.ndarray) -> float:
            return load(np.concatenate([w, genes]))

        def wkept(w: np.ndarray) -> np.ndarray:
            return SearchSpace.kept(self, w)

        lo, hi, w = self.group_lower, self.group_upper, keep[: self.n_groups]
        x, _, s_over = bisect_scale(w, lo, hi, wload)
        if math.isfinite(s_over):
            target = np.clip(s_over * np.maximum(w, 1e-9), lo, hi)
            x = fill(x, target, hi, self.channels, wkept, self._step, wload)
            if exact:
                x = refine(x, target, lo, hi, self.channels, wkept, self._step, wload,
                           self.tolerance)
        return np.concatenate([x, genes])


__all__ = ["KEEP_AT", "BlockSpace"]
