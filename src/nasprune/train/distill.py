"""Knowledge distillation (Hinton et al.): the student matches the teacher's soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      targets: torch.Tensor, temperature: float = 4.0, weight: float = 0.9,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """``weight``·KL(student/T ‖ teacher/T)·T² + (1 − ``weight``)·CE(student, targets).

    The T² factor keeps the soft-target gradients on the same scale as the hard ones
    whatever the temperature.
    """
    hard = F.cross_entropy(student_logits.float(), targets, label_smoothing=label_smoothing)
    return weight * soft_target_loss(student_logits, teacher_logits, temperature) \
        + (1.0 - weight) * hard


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperature: float = 4.0) -> torch.Tensor:
    """KL(student/T ‖ teacher/T)·T² over the class dimension, averaged over every other
    position.

    The class dimension is the last one for ``(N, C)`` classification and ``(N, T, V)``
    token logits, and dimension 1 for dense predictions of four or more dimensions
    (``(N, C, H, W)`` segmentation logits, PyTorch's convention for images and volumes).
    """
    t = temperature
    s_logits, t_logits = _classes_last(student_logits), _classes_last(teacher_logits)
    classes = s_logits.shape[-1]
    s = F.log_softmax(s_logits.float().reshape(-1, classes) / t, dim=1)
    q = F.log_softmax(t_logits.float().reshape(-1, classes) / t, dim=1)
    return F.kl_div(s, q, reduction="batchmean", log_target=True) * (t * t)


def _classes_last(logits: torch.Tensor) -> torch.Tensor:
    """``(N, C, *spatial)`` → ``(N, *spatial, C)`` for dense outputs; others unchanged."""
    return logits.movedim(1, -1) if logits.dim() >= 4 else logits
