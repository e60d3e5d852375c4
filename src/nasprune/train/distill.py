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
    """KL(student/T ‖ teacher/T)·T² over the last dimension (classes, or a vocabulary per
    token), averaged over every other position."""
    t = temperature
    classes = student_logits.shape[-1]
    s = F.log_softmax(student_logits.float().reshape(-1, classes) / t, dim=1)
    q = F.log_softmax(teacher_logits.float().reshape(-1, classes) / t, dim=1)
    return F.kl_div(s, q, reduction="batchmean", log_target=True) * (t * t)
