"""Training: ``fit`` / ``finetune``, optimizers and schedules by name, distillation, BN tools."""

from __future__ import annotations

from nasprune.train.bn import recalibrate_bn
from nasprune.train.distill import distillation_loss
from nasprune.train.loop import FitResult, finetune, fit
from nasprune.train.optim import OPTIMIZERS, default_lr, make_optimizer
from nasprune.train.schedule import SCHEDULES, make_schedule
from nasprune.train.seed import seed_everything

__all__ = ["OPTIMIZERS", "SCHEDULES", "FitResult", "default_lr", "distillation_loss",
           "finetune", "fit", "make_optimizer", "make_schedule", "recalibrate_bn",
           "seed_everything"]
