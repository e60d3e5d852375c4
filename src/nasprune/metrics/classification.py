"""Classification quality: top-k accuracy, macro precision/recall/F1, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nasprune.errors import NaspruneError


def accuracy(
    logits: torch.Tensor, targets: torch.Tensor, topk: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Fraction (0..1) of samples whose label is among the ``k`` highest logits, per ``k``.

    With fewer classes than ``k`` every label is within the top ``k``, so the value is 1.0
    (the usual convention, e.g. top-5 on a 3-class problem).
    """
    if logits.dim() != 2 or targets.shape != (logits.shape[0],):
        raise NaspruneError(
            f"accuracy needs logits (N, C) and targets (N,), got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}")
    n, c = logits.shape
    if n == 0:
        raise NaspruneError("accuracy of an empty set is undefined")
    kmax = min(max(topk), c)
    top = logits.topk(kmax, dim=1).indices  # (N, kmax), best first
    hit = top.eq(targets.to(top.device).view(-1, 1))
    return {k: float(hit[:, : min(k, c)].any(dim=1).double().mean().item()) for k in topk}


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts; row = true class, column = predicted class (sklearn's layout)."""
    p = preds.long().flatten().cpu()
    t = targets.long().flatten().cpu()
    if p.shape != t.shape:
        raise NaspruneError(f"{p.numel()} predictions for {t.numel()} targets")
    for name, v in (("prediction", p), ("target", t)):
        if v.numel() and (v.min() < 0 or v.max() >= num_classes):
            raise NaspruneError(f"{name} labels must lie in 0..{num_classes - 1}")
    flat = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)


def classification_report(
    preds: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> dict:
    """Macro precision, recall and F1 plus the confusion matrix.

    ``preds`` are class indices (or logits ``(N, C)``, reduced by argmax). As in scikit-learn's
    ``average="macro"`` with ``zero_division=0``: the macro mean runs over the classes that
    occur in ``targets`` or ``preds``, a class never predicted has precision 0, and macro F1 is
    the mean of the per-class F1 scores (not the F1 of the macro precision and recall).
    Per-class values for all ``num_classes`` classes are under ``"per_class"``.
    """
    if preds.dim() == 2:
        preds = preds.argmax(dim=1)
    cm = confusion_matrix(preds, targets, num_classes).double()
    tp = cm.diag()
    predicted = cm.sum(dim=0)
    actual = cm.sum(dim=1)
    zero = torch.zeros_like(tp)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), zero)
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), zero)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-300), zero)
    present = (predicted > 0) | (actual > 0)
    k = int(present.sum().item())

    def macro(v: torch.Tensor) -> float:
        return float(v[present].sum().item() / k) if k else 0.0

    return {
        "precision": macro(precision),
        "recall": macro(recall),
        "f1": macro(f1),
        "confusion": cm.long().tolist(),
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": actual.long().tolist(),
        },
    }
