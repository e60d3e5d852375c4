"""Magnitude (threshold) pruning with its report, and the experiment's ``threshold`` method.

:func:`threshold` wraps the primitive :func:`nasprune.pruning.unstructured.mask_smallest`
with what :mod:`nasprune.metrics` measures: dense and CSR sizes, dense and sparse MACs.
Shapes do not change, so the saving shows in CSR storage and in the MACs a sparse kernel
would skip, both reported next to the dense numbers.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from nasprune.methods.registry import Context, Pruned, register_method, smallest_cut
from nasprune.metrics import count_macs, model_size_mb, sparse_macs, sparse_size_mb
from nasprune.pruning.unstructured import LayerSparsity, mask_smallest


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
    done = mask_smallest(model, sparsity=sparsity, threshold=threshold, scope=scope,
                         layers=layers)
    report = ThresholdReport(
        scope=done.scope,
        requested_sparsity=done.requested_sparsity,
        threshold=done.threshold,
        layers=done.layers,
        dense_size_mb=model_size_mb(model),
        sparse_size_mb=sparse_size_mb(model),
    )
    if example_inputs is not None:
        report.dense_macs = count_macs(model, example_inputs)
        report.sparse_macs = sparse_macs(model, example_inputs)
    return report


@register_method("threshold")
def threshold_method(ctx: Context) -> Pruned:
    """Unstructured masks; the global sparsity bisected until the *sparse* MACs meet the budget.

    Shapes do not change, so the dense MACs stay at 100 %.
    """
    start = time.perf_counter()
    scope = ctx.settings.scope
    reports: dict[float, Any] = {}

    def make(sparsity: float) -> tuple[nn.Module, float]:
        m = copy.deepcopy(ctx.model)
        reports[sparsity] = threshold(m, sparsity=sparsity, scope=scope)
        return m, float(sparse_macs(m, ctx.example))

    model, sparsity = smallest_cut(make, ctx.target_macs, 0.0, 0.999, steps=20,
                                   what="threshold pruning")
    rep = reports[sparsity]
    return Pruned(model, search_seconds=time.perf_counter() - start, info={
        "sparsity": rep.sparsity, "scope": scope,
        "note": "unstructured: dense MACs unchanged; sparse MACs meet the budget",
    })


__all__ = ["ThresholdReport", "threshold", "threshold_method"]
