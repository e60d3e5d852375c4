"""Unstructured (magnitude threshold) pruning: zero the smallest weights, keep them zero.

Like ``torch.nn.utils.prune`` the model is modified in place and a report is returned: each
pruned layer gets a ``nasprune_mask`` buffer (:mod:`nasprune.pruning.masks`), so the zeros
survive fine-tuning (``fit`` re-applies the masks after every optimizer step) and
``save``/``load`` keep them. Shapes do not change: the saving is in CSR storage and in the
MACs a sparse kernel would skip, both reported next to the dense numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
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
class ThresholdReport:
    """What :func:`threshold` did: sparsity per layer and overall, sizes and MACs.

    ``threshold`` is the one global magnitude cut for ``scope="global"`` and ``None`` for
    ``scope="layer"`` (each layer's own cut is in ``layers[name].threshold``). Sizes are in
    MB (2**20 bytes); ``dense_macs``/``sparse_macs`` are ``None`` unless ``example_inputs``
    were given.
    """

    scope: str
    requested_sparsity: float | None
    threshold: float | None
    layers: dict[str, LayerSparsity]
    dense_size_mb: float
    sparse_size_mb: float
    dense_macs: int | None = None
    sparse_macs: int | None = None

    @property
    def weights(self) -> int:
        return sum(s.weights for s in self.layers.values())

    @property
    def zeros(self) -> int:
        return sum(s.zeros for s in self.layers.values())

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights over the pruned layers."""
        return self.zeros / self.weights if self.weights else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (per-layer sparsity included)."""
        out = asdict(self)
        out["sparsity"] = self.sparsity
        out["weights"], out["zeros"] = self.weights, self.zeros
        for name, s in self.layers.items():
            out["layers"][name]["sparsity"] = s.sparsity
        return out

    def __str__(self) -> str:
        lines = [f"{'layer':<32} {'weights':>9} {'sparsity':>9}"]
        for name, s in self.layers.items():
            lines.append(f"{name:<32} {s.weights:>9} {s.sparsity:>9.1%}")
        lines.append(f"{'overall':<32} {self.weights:>9} {self.sparsity:>9.1%}")
        lines.append(f"size: {self.dense_size_mb:.3f} MB dense, {self.sparse_size_mb:.3f} MB CSR")
        if self.dense_macs is not None:
            lines.append(f"MACs: {self.dense_macs:,} dense, {self.sparse_macs:,} sparse")
        return "\n".join(lines)


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


@torch.no_grad()
def threshold(
    model: nn.Module,
    sparsity: float | None = None,
    threshold: float | None = None,
    scope: str = "global",
    layers: Iterable[str | nn.Module] | None = None,
    *,
    example_inputs: Any = None,
) -> ThresholdReport:
    """Zero the smallest-magnitude conv/linear weights of ``model`` in place, with masks.

    Give exactly one of

    * ``sparsity`` in [0, 1): the fraction of weights to zero. ``scope="global"`` ranks all
      selected weights together (one magnitude cut, Han et al. 2015 / torch's
      ``global_unstructured``): exactly ``round(sparsity · N)`` weights become zero.
      ``scope="layer"`` zeroes ``round(sparsity · n_l)`` in every layer ``l``.
    * ``threshold`` ≥ 0: zero every weight with ``|w| < threshold`` (global scope), or with
      ``|w| < threshold · std(w_l)`` per layer (layer scope — Han et al.'s per-layer rule,
      so one number suits layers of different scale).

    ``layers`` (names or modules) restricts pruning to a subset; by default every conv and
    linear layer is pruned, the classifier included, as in Han et al. — pass ``layers`` to
    keep it dense. Pruning only ever adds zeros: a weight already masked stays masked, so
    calling this with a rising sparsity (gradual pruning) is exact.

    Returns a :class:`ThresholdReport`; with ``example_inputs`` it also has dense and sparse
    MACs (:func:`nasprune.metrics.sparse_macs`).
    """
    from nasprune.metrics import count_macs, model_size_mb, sparse_macs, sparse_size_mb

    _check_args(sparsity, threshold, scope)
    chosen = prunable_layers(model, layers)
    mags = {n: m.weight.detach().abs() for n, m in chosen.items()}
    for n, m in chosen.items():
        old = _old_mask(m)
        if old is not None:  # masked weights count as zeros even if an optimizer moved them
            mags[n] = mags[n] * old.to(mags[n].dtype)

    cuts: dict[str, float] = {}
    masks: dict[str, torch.Tensor] = {}
    global_cut: float | None = None
    if scope == "global":
        flat = torch.cat([v.flatten().float().cpu() for v in mags.values()])
        if sparsity is not None:
            k = int(round(float(sparsity) * flat.numel()))
            keep = _smallest_mask(flat, k)
            global_cut = float(flat[~keep].max()) if k else 0.0
            start = 0
            for n, v in mags.items():
                masks[n] = keep[start : start + v.numel()].view_as(v).to(v.device)
                start += v.numel()
        else:
            global_cut = float(threshold)  # type: ignore[arg-type]
            masks = {n: v >= global_cut for n, v in mags.items()}
        cuts = dict.fromkeys(mags, global_cut)
    else:
        for n, v in mags.items():
            if sparsity is not None:
                k = int(round(float(sparsity) * v.numel()))
                masks[n] = _smallest_mask(v, k)
                cuts[n] = float(v.flatten()[~masks[n].flatten()].max()) if k else 0.0
            else:
                w = chosen[n].weight.detach()
                cuts[n] = float(threshold) * float(w.float().std()) if w.numel() > 1 else 0.0
                masks[n] = v >= cuts[n]

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

    report = ThresholdReport(
        scope=scope,
        requested_sparsity=None if sparsity is None else float(sparsity),
        threshold=global_cut,
        layers=stats,
        dense_size_mb=model_size_mb(model),
        sparse_size_mb=sparse_size_mb(model),
    )
    if example_inputs is not None:
        report.dense_macs = count_macs(model, example_inputs)
        report.sparse_macs = sparse_macs(model, example_inputs)
    # Recorded so save()/load() and reports know how the model was pruned. A repeated call
    # replaces the record (the masks are cumulative); another method's record is kept inside.
    info: dict[str, Any] = {
        "method": "threshold",
        "scope": scope,
        "sparsity": report.sparsity,
        "threshold": global_cut,
        "layers": list(stats),
    }
    prev = getattr(model, "nasprune_pruning", None)
    if isinstance(prev, dict):
        if prev.get("method") != "threshold":
            info["previous"] = prev
        elif "previous" in prev:
            info["previous"] = prev["previous"]
    model.nasprune_pruning = info  # type: ignore[attr-defined]
    return report
