"""Mean intersection-over-union: the task score of semantic segmentation.

IoU is accumulated over the whole split (intersections and unions summed over every
batch before dividing, the PASCAL VOC / Cityscapes convention), not averaged per image,
so small objects in one image cannot dominate the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nasprune.errors import NaspruneError
from nasprune.task import Score, logits_of, targets_of


def iou_counts(logits: torch.Tensor, targets: torch.Tensor, num_classes: int,
               ignore_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class ``(intersection, union)`` pixel counts of one batch.

    ``logits`` are ``(N, C, H, W)`` (class dimension 1, as ``F.cross_entropy`` takes them),
    ``targets`` ``(N, H, W)`` class indices; pixels whose target is ``ignore_index`` count
    for nothing.
    """
    if logits.dim() < 2 or logits.shape[1] != num_classes:
        raise NaspruneError(f"mIoU over {num_classes} classes needs outputs of shape "
                            f"(N, {num_classes}, H, W), got {tuple(logits.shape)}")
    pred = logits.argmax(dim=1)
    target = targets.to(pred.device).long()
    if pred.shape != target.shape:
        raise NaspruneError(f"mIoU: predictions {tuple(pred.shape)} and targets "
                            f"{tuple(target.shape)} differ in shape")
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    pred, target = pred.reshape(-1), target.reshape(-1)
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise NaspruneError(f"mIoU: target classes must lie in 0..{num_classes - 1}, got "
                            f"{int(target.min())}..{int(target.max())}")
    # One bincount over (target, prediction) pairs gives the confusion matrix.
    confusion = torch.bincount(target * num_classes + pred, minlength=num_classes ** 2)
    confusion = confusion.reshape(num_classes, num_classes).double()
    inter = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - inter
    return inter, union


def miou(num_classes: int, ignore_index: int | None = None) -> Score:
    """A task score: mean IoU over the classes present in the targets or the predictions.

    A class that appears in neither has no defined IoU and is left out of the mean (so a
    split without some class is not punished for it). Higher is better.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise NaspruneError(f"mIoU needs num_classes ≥ 2, got {num_classes!r}")

    def score(outputs: Sequence[Any], batches: Sequence[Any]) -> float:
        inter = torch.zeros(num_classes, dtype=torch.float64)
        union = torch.zeros(num_classes, dtype=torch.float64)
        for out, batch in zip(outputs, batches, strict=True):
            i, u = iou_counts(logits_of(out), targets_of(batch), num_classes, ignore_index)
            inter += i.cpu()
            union += u.cpu()
        present = union > 0
        if not bool(present.any()):
            raise NaspruneError("mIoU: no pixels to score")
        return float((inter[present] / union[present]).mean())

    score.__name__ = f"miou{num_classes}"
    return score
