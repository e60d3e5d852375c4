"""Unstructured (magnitude threshold) pruning: zero the smallest weights, keep them zero.

:func:`mask_smallest` is the primitive: like ``torch.nn.utils.prune`` it modifies the model
in place, and each pruned layer gets a ``nasprune_mask`` buffer (:mod:`nasprune.pruning.masks`),
so the zeros survive fine-tuning (``fit`` re-applies the masks after every optimizer step)
and ``save``/``load`` keep them. Shapes do not change. The public ``threshold``, which adds
sizes and MACs to a :class:`~nasprune.methods.magnitude.ThresholdReport`, measures with
:mod:`nasprune.metrics` and so lives in :mod:`nasprune.methods.magnitude`; its old name here
still resolves.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.masks import MASK, set_mask

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
SCOPES = ("global", "layer")


@dataclass
class LayerSparsity:
    """One pruned layer: its weight count, how many are zero, and the threshold it saw."""

    weights: int
    zeros: int
    threshold: float

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


@dataclass
class Masked:
    """What :func:`mask_smallest` did: the global cut (``None`` per layer) and each layer."""

    scope: str
    requested_sparsity: float | None
    threshold: float | None
    layers: dict[str, LayerSparsity]

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights over the pruned layers."""
        weights = sum(s.weights for s in self.layers.values())
        zeros = sum(s.zeros for s in self.layers.values())
        return zeros / weights if weights else 0.0


def _check_args(sparsity: float | None, threshold: float | None, scope: str) -> None:
    if (sparsity is None) == (threshold is None):
        raise NaspruneError("threshold pruning needs exactly one of sparsity= or threshold=")
    if scope not in SCOPES:
        raise NaspruneError(f"unknown scope '{scope}': choose from {', '.join(SCOPES)}")
    if sparsity is not None:
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
            raise NaspruneError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
        if not (0.0 <= float(sparsity) < 1.0):
            raise NaspruneError(f"sparsity must be in [0, 1), got {sparsity!r}")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise NaspruneError(f"threshold must be a finite number ≥ 0, got {threshold!r}")
        if not math.isfinite(threshold) or threshold < 0:
            raise NaspruneError(f"threshold must be a finite number ≥ 0, got {threshold!r}")


def prunable_layers(
    model: nn.Module, layers: Iterable[str | nn.Module] | None = None
) -> dict[str, nn.Module]:
    """The conv/linear layers to prune: all of them, or the named/given subset."""
    named = dict(model.named_modules())
    if layers is None:
        found = {n: m for n, m in named.items() if isinstance(m, PRUNABLE)}
    else:
        by_module = {id(m): n for n, m in named.items()}
        found = {}
        for item in layers:
            name = by_module.get(id(item)) if isinstance(item, nn.Module) else item
            if name is None or name not in named:
                raise NaspruneError(f"layer '{item}' does not exist in the model")
            if not isinstance(named[name], PRUNABLE):
                raise NaspruneError(
                    f"layer '{name}' is a {type(named[name]).__name__}: threshold pruning "
                    "takes conv and linear layers"
                )
            found[name] = named[name]
    if not found:
        raise NaspruneError("the model has no conv or linear layer to prune")
    return found


def _old_mask(m: nn.Module) -> torch.Tensor | None:
    return m._buffers.get(MASK)


def _smallest_mask(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask with exactly the ``k`` smallest entries off (ties broken by position)."""
    keep = torch.ones(magnitude.numel(), dtype=torch.bool, device=magnitude.device)
    if k > 0:
        # A stable sort makes the count exact even when many weights tie (e.g. old zeros).
        order = torch.sort(magnitude.flatten(), stable=True).indices
        keep[order[:k]] = False
    return keep.view_as(magnitude)




def _global_masks(mags: dict[str, torch.Tensor], sparsity: float | None,
                  threshold: float | None) -> tuple[dict[str, torch.Tensor], float]:
    """Keep-masks from one magnitude cut over all layers, and that cut."""
    if sparsity is None:
        cut = float(threshold)  # type: ignore[arg-type]
        return {n: v >= cut for n, v in mags.items()}, cut
    flat = torch.cat([v.flatten().float().cpu() for v in mags.values()])
    k = int(round(float(sparsity) * flat.numel()))
    keep = _smallest_mask(flat, k)
    cut = float(flat[~keep].max()) if k else 0.0
    masks, start = {}, 0
    for n, v in mags.items():
        masks[n] = keep[start : start + v.numel()].view_as(v).to(v.device)
        start += v.numel()
    return masks, cut


def _layer_masks(chosen: dict[str, nn.Module], mags: dict[str, torch.Tensor],
                 sparsity: float | None, threshold: float | None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Keep-masks cut per layer (a fraction, or ``threshold · std(w)``), and each cut."""
    masks: dict[str, torch.Tensor] = {}
    cuts: dict[str, float] = {}
    for n, v in mags.items():
        if sparsity is not None:
            k = int(round(float(sparsity) * v.numel()))
            masks[n] = _smallest_mask(v, k)
            cuts[n] = float(v.flatten()[~masks[n].flatten()].max()) if k else 0.0
        else:
            w = chosen[n].weight.detach()
            cuts[n] = float(threshold) * float(w.float().std()) if w.numel() > 1 else 0.0
            masks[n] = v >= cuts[n]
    return masks, cuts


def _record(model: nn.Module, result: Masked) -> None:
    """Note on the model how it was pruned, for save()/load() and reports.

    A repeated call replaces the record (the masks are cumulative); another method's record
    is kept inside.
    """
    info: dict[str, Any] = {
        "method": "threshold",
        "scope": result.scope,
        "sparsity": result.sparsity,
        "threshold": result.threshold,
        "layers": list(result.layers),
    }
    prev = getattr(model, "nasprune_pruning", None)
    if isinstance(prev, dict):
        if prev.get("method") != "threshold":
            info["previous"] = prev
        elif "previous" in prev:
            info["previous"] = prev["previous"]
    model.nasprune_pruning = info  # type: ignore[attr-defined]


@torch.no_grad()
def mask_smallest(
    model: nn.Module,
    sparsity: float | None = None,
    threshold: float | None = None,
    scope: str = "global",
    layers: Iterable[str | nn.Module] | None = None,
) -> Masked:
    """Zero (and mask) the smallest-magnitude conv/linear weights of ``model`` in place.

    The arguments are :func:`nasprune.pruning.threshold`'s (see there); this is its
    measuring-free core, returning per-layer counts instead of a report with sizes and MACs.
    Pruning only ever adds zeros: a weight already masked stays masked.
    """
    _check_args(sparsity, threshold, scope)
    chosen = prunable_layers(model, layers)
    mags = {n: m.weight.detach().abs() for n, m in chosen.items()}
    for n, m in chosen.items():
        old = _old_mask(m)
        if old is not None:  # masked weights count as zeros even if an optimizer moved them
            mags[n] = mags[n] * old.to(mags[n].dtype)

    global_cut: float | None = None
    if scope == "global":
        masks, global_cut = _global_masks(mags, sparsity, threshold)
        cuts = dict.fromkeys(mags, global_cut)
    else:
        masks, cuts = _layer_masks(chosen, mags, sparsity, threshold)

    stats: dict[str, LayerSparsity] = {}
    for n, m in chosen.items():
        mask = masks[n]
        old = _old_mask(m)
        if old is not None:
            mask = mask & old.to(mask.device)
        set_mask(m, mask)
        stats[n] = LayerSparsity(
            weights=m.weight.numel(),
            zeros=int(m.weight.numel() - torch.count_nonzero(m.weight).item()),
            threshold=cuts[n],
        )
    result = Masked(scope=scope, requested_sparsity=None if sparsity is None else float(sparsity),
                    threshold=global_cut, layers=stats)
    _record(model, result)
    return result


# ``threshold`` and ``ThresholdReport`` measure sizes and MACs, so they moved to
# nasprune.methods.magnitude; resolved on first use so this module never imports metrics.
_MOVED = {"ThresholdReport", "threshold"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module("nasprune.methods.magnitude"), name)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
