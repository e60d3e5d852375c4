"""The proxy's fine-tuning recipe: optimizer, learning rate, distillation from the unpruned
model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasprune.cli import main
from nasprune.errors import NaspruneError
from nasprune.search import Proxy
from nasprune.search.proxy_finetune import FinetuneRecipe, run_steps
from nasprune.task import Task


def test_learning_rate_defaults_per_optimizer():
    assert FinetuneRecipe().learning_rate == 0.01  # SGD: measured for CNN rungs
    assert FinetuneRecipe("adamw").learning_rate == 1e-3  # the optimizer's own default
    assert FinetuneRecipe("adamw", lr=5e-4).learning_rate == 5e-4
    with pytest.raises(NaspruneError, match="adamw"):
        FinetuneRecipe("lion")
    with pytest.raises(NaspruneError, match="finetune_lr"):
        FinetuneRecipe("sgd", lr=-1.0)


def _sgd_step(model: nn.Module, loss_scale: float, lr: float) -> dict[str, torch.Tensor]:
    """One hand-computed step of the recipe's SGD (first step: momentum buffer = gradient;
    weight decay 5e-4 on every parameter, as the CNN rungs were measured)."""
    x, y = _batch()
    model.zero_grad()
    (loss_scale * F.cross_entropy(model(x), y)).backward()
    return {n: p.detach() - lr * (p.grad + 5e-4 * p.detach())
            for n, p in model.named_parameters()}


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)


@pytest.mark.parametrize("distill", [False, True])
def test_one_step_equals_the_hand_computed_update(distill):
    """A student equal to its teacher has zero soft-target gradient, so a distilling step
    is the task's gradient weighted 0.1 (the 0.9 goes to the soft targets); without
    distillation it is the whole task gradient."""
    torch.manual_seed(0)
    teacher = nn.Linear(5, 3)
    student = copy.deepcopy(teacher)
    expected = _sgd_step(copy.deepcopy(teacher), 0.1 if distill else 1.0, lr=0.5)
    run_steps(student, teacher, Task(), [_batch()], steps=1, first_step=0,
              recipe=FinetuneRecipe("sgd", lr=0.5, distill=distill))
    for n, p in student.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n])


def test_distilling_proxy_leaves_the_teacher_untouched(trained, digits, space):
    before = copy.deepcopy(trained.state_dict())
    grads = [None if p.grad is None else p.grad.clone() for p in trained.parameters()]
    trained.train()
    fast = {"bn_batches": 2, "val_size": 200, "progress": False, "device": "cpu"}
    plain = Proxy(trained, digits, **fast)
    tuned = Proxy(trained, digits, finetune_steps=8, finetune_optimizer="adamw",
                  finetune_lr=2e-3, distill=True, **fast)
    ratios = space.prune_ratios(np.full(space.dim, 0.3))  # 70 % of every group removed
    # Pruned hard, the network recovers some of its accuracy in 8 distilling AdamW steps.
    assert tuned.score(ratios) > plain.score(ratios)
    assert trained.training  # the teacher's mode is restored
    for k, v in trained.state_dict().items():
        assert torch.equal(v, before[k]), k
    for p, g in zip(trained.parameters(), grads, strict=True):  # no gradient reached it
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)
    trained.eval()


def test_cli_rejects_an_unknown_finetune_optimizer(tmp_path, capsys):
    assert main(["search", "--model", "digitscnn", "--data", "digits", "--finetune-optimizer",
                 "lion", "--trials", "1", "--out", str(tmp_path / "x.json"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "adamw" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.json").exists()
