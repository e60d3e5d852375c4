"""The proxy's short fine-tune: a few steps on the fixed training batches before scoring.

Rungs and ``finetune_steps`` fine-tune every candidate the same way. SGD at lr 0.01 was
measured for CNNs with BatchNorm (BENCHMARKS.md, multi-fidelity scoring); a Transformer
fine-tunes with AdamW and, as its real fine-tune usually does, by distillation from the
unpruned model. :class:`FinetuneRecipe` names the optimizer, the learning rate and whether
the unpruned model is the teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.validate import check_positive_number

# The lr of plain SGD in the proxy (measured for CNN rungs); other optimizers default to
# their registry lr (AdamW 1e-3).
SGD_LR = 0.01
KD_TEMPERATURE, KD_WEIGHT = 4.0, 0.9  # nasprune.finetune's distillation defaults


@dataclass(frozen=True)
class FinetuneRecipe:
    """How the proxy fine-tunes a candidate: ``optimizer`` (a name of
    :data:`nasprune.train.optim.OPTIMIZERS`), ``lr`` (None: 0.01 for ``sgd``, else the
    optimizer's default) and ``distill`` (the unpruned model's soft targets, weighted
    0.9 at temperature 4, beside the task's loss)."""

    optimizer: str = "sgd"
    lr: float | None = None
    distill: bool = False

    def __post_init__(self) -> None:
        from nasprune.train.optim import OPTIMIZERS

        OPTIMIZERS.get(self.optimizer)  # an unknown name: one clear NaspruneError
        if self.lr is not None:
            check_positive_number("finetune_lr", self.lr)
        if not isinstance(self.distill, bool):
            raise NaspruneError(f"distill must be True or False, got {self.distill!r}")

    @property
    def learning_rate(self) -> float:
        from nasprune.train.optim import default_lr

        if self.lr is not None:
            return float(self.lr)
        return SGD_LR if self.optimizer == "sgd" else default_lr(self.optimizer)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        from nasprune.train.optim import make_optimizer

        if self.optimizer == "sgd":  # exactly as the CNN rungs were measured: every
            # parameter decayed (make_optimizer spares biases and norms)
            return torch.optim.SGD(model.parameters(), lr=self.learning_rate, momentum=0.9,
                                   weight_decay=5e-4)
        return make_optimizer(self.optimizer, model, lr=self.learning_rate, momentum=0.9,
                              weight_decay=0.01)


def run_steps(model: nn.Module, teacher: nn.Module, task: Any, batches: Sequence,
              steps: int, first_step: int, recipe: FinetuneRecipe) -> None:
    """``steps`` steps of ``recipe`` on ``batches`` (cycled, from batch ``first_step``);
    ``teacher`` (the unpruned model) gives the soft targets when the recipe distills, in
    eval mode (no dropout), its own mode restored afterwards."""
    if not recipe.distill:
        _steps(model, None, task, batches, steps, first_step, recipe)
        return
    was_training = teacher.training
    teacher.eval()
    try:
        _steps(model, teacher, task, batches, steps, first_step, recipe)
    finally:
        teacher.train(was_training)


def _steps(model: nn.Module, teacher: nn.Module | None, task: Any, batches: Sequence,
           steps: int, first_step: int, recipe: FinetuneRecipe) -> None:
    from nasprune.task import logits_of
    from nasprune.train.distill import soft_target_loss

    opt = recipe.make_optimizer(model)
    model.train()
    for i in range(first_step, first_step + steps):
        batch = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        out, loss = task.compute_loss(model, batch)
        if teacher is not None:
            with torch.no_grad():
                soft = logits_of(task.forward(teacher, batch))
            loss = (KD_WEIGHT * soft_target_loss(logits_of(out), soft, KD_TEMPERATURE)
                    + (1.0 - KD_WEIGHT) * loss.float())
        if not torch.isfinite(loss):
            raise NaspruneError(f"proxy fine-tuning diverged: loss is {loss.item()} "
                                f"at step {i}")
        loss.backward()
        opt.step()
    model.eval()


__all__ = ["FinetuneRecipe", "run_steps"]
