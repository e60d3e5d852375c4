"""The data-driven methods on a user's Task: sensitivity, block ranking, the Taylor
criterion, slimming and gradual pruning take torch DataLoaders over the digits images
(normalised exactly as the in-memory loader does). Where the method is deterministic the
result equals the in-memory Dataset's on the same batches; where the batch order differs,
the method's real effect is asserted with a real score."""

from __future__ import annotations

import copy
import itertools
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nasprune
from nasprune.errors import NaspruneError
from nasprune.methods._sparsity_ramp import SparsityRamp
from nasprune.methods.blocks import remove_blocks, sensitivity_scores
from nasprune.methods.gradual import iterative_prune, prune_while_training
from nasprune.methods.schedules import linear_schedule
from nasprune.methods.sensitivity import ratios_from_sensitivity, sensitivity
from nasprune.methods.slimming import bn_gammas, slim
from nasprune.metrics import count_macs
from nasprune.pruning.criteria.base import ScoreContext
from nasprune.pruning.criteria.taylor import accumulate_gradients
from nasprune.task import Task
from nasprune.train import recalibrate_bn


def normalised(data, split):
    s = data.split(split) if isinstance(split, str) else split
    return next(iter(data.loader(s, batch_size=len(s))))


def loader_of(data, split, batch_size=128, **kw) -> DataLoader:
    x, y = normalised(data, split)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, **kw)


def same_batches(data, n: int, batch_size: int) -> DataLoader:
    """A DataLoader giving exactly the first ``n`` batches the in-memory path draws
    (``shuffle=True, seed=0``), in order."""
    batches = list(itertools.islice(data.loader("train", batch_size=batch_size, shuffle=True,
                                                seed=0), n))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def trainable(model: nn.Module) -> nn.Module:
    """A copy of a shared fixture with gradients on (a test that used it as a teacher in
    ``fit`` leaves its parameters frozen)."""
    return copy.deepcopy(model).requires_grad_(True)


def error_rate(outputs, batches) -> float:
    wrong = sum(int((o.argmax(1) != b[1]).sum()) for o, b in zip(outputs, batches, strict=True))
    return wrong / sum(len(b[1]) for b in batches)


# ---- Taylor ------------------------------------------------------------------------------

def _grads(model, data) -> dict[str, torch.Tensor]:
    m = copy.deepcopy(model)
    accumulate_gradients(ScoreContext(m, data=data, seed=0, batches=4))
    return {n: p.grad.clone() for n, p in m.named_parameters()}


def test_taylor_on_a_task_equals_the_in_memory_path(trained_digits_cnn, digits):
    model, ex = trainable(trained_digits_cnn), digits.example_input()
    task = Task(train=same_batches(digits, 4, 64))
    ref, got = _grads(model, digits), _grads(model, task)
    for name, g in ref.items():
        assert g.abs().sum() > 0
        torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-7)
    # Dict batches routed by a custom forward: the same gradients.
    dicts = Task(train=[{"pixels": x, "labels": y} for x, y in same_batches(digits, 4, 64)],
                 forward=lambda m, b: m(b["pixels"]))
    torch.testing.assert_close(_grads(model, dicts)["features.0.weight"],
                               ref["features.0.weight"], rtol=1e-5, atol=1e-7)
    kw = {"criterion": "taylor"}
    a = nasprune.pruning.removed_channels(model, ex, 0.5, data=digits, **kw)
    b = nasprune.pruning.removed_channels(model, ex, 0.5, data=task, **kw)
    assert a == b
    assert a != nasprune.pruning.removed_channels(model, ex, 0.5, criterion="l1")


def test_taylor_without_data_names_the_task():
    model = nasprune.create_model("digitscnn", in_channels=1)
    with pytest.raises(NaspruneError, match=re.escape("data=<a nasprune Task")):
        nasprune.prune(model, torch.randn(1, 1, 8, 8), 0.5, criterion="taylor")
    with pytest.raises(NaspruneError, match="no training batches"):
        nasprune.prune(model, torch.randn(1, 1, 8, 8), 0.5, criterion="taylor",
                       data=Task(train=[]))


# ---- sensitivity -------------------------------------------------------------------------

GROUPS = ["features.0", "features.7"]


def _calibration_task(digits, bn_batches, val_size, **kw) -> Task:
    """The BN batches and validation samples the in-memory sensitivity path uses."""
    return Task(train=same_batches(digits, bn_batches, 128),
                val=loader_of(digits, digits.val.subset(val_size), batch_size=100), **kw)


def test_sensitivity_on_a_task_equals_the_in_memory_table(trained_digits_cnn, digits):
    model, ex = trained_digits_cnn, digits.example_input()
    args = {"levels": (0.3, 0.8), "bn_batches": 3, "groups": GROUPS}
    ref = sensitivity(model, digits, val_size=200, **args)
    got = sensitivity(model, _calibration_task(digits, 3, 200), example_inputs=ex, **args)
    assert got.baseline == pytest.approx(ref.baseline, abs=1e-12) and ref.baseline > 0.8
    for g in GROUPS:
        assert [a for _, a in got.curves[g]] == pytest.approx([a for _, a in ref.curves[g]],
                                                              abs=1e-12)
    assert got.macs == ref.macs and got.maximize and got.metric == "score"
    assert ref.drops("features.7")[-1][1] > 0.05  # a real drop, not a flat table
    # An error rate (lower is better): the drops are the same, in the task's direction.
    err = sensitivity(model, _calibration_task(digits, 3, 200, score=error_rate,
                                               maximize=False), example_inputs=ex, **args)
    assert err.baseline == pytest.approx(1 - ref.baseline, abs=1e-12)
    for g in GROUPS:
        assert [d for _, d in err.drops(g)] == pytest.approx([d for _, d in ref.drops(g)],
                                                             abs=1e-12)
    assert ratios_from_sensitivity(err, model, ex, target_macs=0.7) == pytest.approx(
        ratios_from_sensitivity(ref, model, ex, target_macs=0.7), abs=1e-9)
    back = type(err).from_dict(err.to_dict())
    assert back.maximize is False and back.drops("features.0") == err.drops("features.0")
    assert "lower is better" in str(err)


def test_sensitivity_on_a_shuffling_loader_measures_every_copy_on_the_same_batches(
        trained_digits_cnn, digits):
    """A shuffling DataLoader: the batches are drawn once, so pruning nothing (level ~0)
    scores exactly the baseline; Taylor ranks on those batches too."""
    shuffled = Task(train=loader_of(digits, "train", 64, shuffle=True),
                    val=loader_of(digits, "val", 64, shuffle=True))
    table = sensitivity(trainable(trained_digits_cnn), shuffled, example_inputs=digits.example_input(),
                        levels=(0.01, 0.9), bn_batches=2, val_size=128, groups=["features.0"],
                        criterion="taylor")
    (_, first), (_, last) = table.curves["features.0"]
    assert first == table.baseline  # 1 % of 32 channels rounds to none removed
    assert last < table.baseline - 0.05


# ---- blocks by evaluation ----------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(torch.add(self.body(x), x))


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(Block(8), Block(8), Block(8))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(F.relu(self.blocks(self.stem(x))))


def test_block_sensitivity_on_a_task_equals_the_in_memory_scores(digits):
    torch.manual_seed(0)
    net = ResNet()
    nasprune.fit(net, digits, epochs=2, progress=False)
    net.eval()
    names = ["blocks.0", "blocks.1", "blocks.2"]
    ref = sensitivity_scores(net, names, digits, bn_batches=2, val_size=150)
    got = sensitivity_scores(net, names, _calibration_task(digits, 2, 150), bn_batches=2,
                             val_size=150)
    assert got == pytest.approx(ref, abs=1e-12)
    assert max(ref.values()) > 0.02  # removing some block really costs accuracy
    err = sensitivity_scores(net, names, _calibration_task(digits, 2, 150, score=error_rate,
                                                           maximize=False), bn_batches=2)
    assert err == pytest.approx(ref, abs=1e-12)
    ex = digits.example_input(2)
    pruned = remove_blocks(net, ex, n=1, criterion="sensitivity",
                           data=_calibration_task(digits, 2, 150), bn_batches=2)
    assert pruned.nasprune_pruning["removed"] == [min(ref, key=ref.get)]
    # The output-norm criterion feeds the task's training batches (routed by its forward).
    by_norm = remove_blocks(net, ex, n=1, data=Task(train=loader_of(digits, "train")),
                            batches=2)
    assert by_norm.nasprune_pruning["scores"] == pytest.approx(
        remove_blocks(net, ex, n=1, data=digits, batches=2).nasprune_pruning["scores"],
        rel=1e-6)


# ---- slimming and gradual ----------------------------------------------------------------

def _gamma_spread(model) -> float:
    """Coefficient of variation of all BatchNorm |γ|: L1 on γ drives the unimportant ones
    toward zero while the loss holds the important ones up, so the spread grows."""
    g = bn_gammas(model)
    return float(g.std() / g.mean())


def test_slimming_with_a_task_sparsifies_gammas_and_cuts_to_the_budget(trained_digits_cnn,
                                                                       digits):
    gen = torch.Generator().manual_seed(0)
    task = Task(train=loader_of(digits, "train", 64, shuffle=True, generator=gen),
                val=loader_of(digits, "val"))
    plain, sparse = trainable(trained_digits_cnn), trainable(trained_digits_cnn)
    kw = {"epochs": 2, "optimizer": "sgd", "lr": 5e-2, "progress": False}
    nasprune.finetune(plain, task, **kw)
    res = nasprune.finetune(sparse, task, bn_l1=0.1, **kw)
    assert _gamma_spread(sparse) > 2 * _gamma_spread(plain)  # measured 0.18 vs 0.07
    assert res.history[-1]["val_score"] > 0.8
    ex = digits.example_input()
    small = slim(sparse, ex, macs_target=0.4)
    assert count_macs(small, ex) <= 0.4 * count_macs(sparse, ex)
    recalibrate_bn(small, task.train, batches=5)
    assert nasprune.evaluate(small, task, "val")["score"] > 0.8  # measured 0.91


def test_iterative_prune_on_a_task_reaches_the_target_with_taylor(trained_digits_cnn, digits):
    gen = torch.Generator().manual_seed(0)
    task = Task(train=loader_of(digits, "train", 64, shuffle=True, generator=gen),
                val=loader_of(digits, "val"))
    ex = digits.example_input()
    res = iterative_prune(trainable(trained_digits_cnn), task, ex, target=0.4, steps=1, epochs_per_step=1,
                          criterion="taylor", progress=False)
    assert count_macs(res.model, ex) <= 0.4 * count_macs(trained_digits_cnn, ex)
    assert res.model.nasprune_pruning["last_step"]["criterion"] == "taylor"
    assert all(r["val_acc"] is None and r["val_score"] > 0.7 for r in res.history)
    assert res.history[-1]["val_score"] == pytest.approx(
        nasprune.evaluate(res.model, task, "val")["score"], abs=1e-12)


def test_prune_while_training_on_a_task_with_a_lower_is_better_score(
        trained_narrow_digits_cnn, digits):
    model = trainable(trained_narrow_digits_cnn)
    gen = torch.Generator().manual_seed(0)
    task = Task(train=loader_of(digits, "train", 64, shuffle=True, generator=gen),
                val=loader_of(digits, "val"), score=error_rate, maximize=False)
    res = prune_while_training(model, task, target_sparsity=0.6, epochs=2, steps=1,
                               optimizer="adam", lr=1e-3, progress=False)
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.6, abs=0.01)
    assert [e["sparsity"] for e in res.history][-1] == pytest.approx(0.6, abs=0.01)
    assert all("val_acc" not in e for e in res.history)
    assert res.history[-1]["val_score"] < 0.3  # an error rate


def test_the_adaptive_ramp_holds_when_a_lower_is_better_score_rises():
    net = nn.Sequential(nn.Linear(4, 4))

    def ramp(maximize):
        return SparsityRamp([], linear_schedule, 0.5, 2, 1, 4, True, 0.01, "global", None,
                            maximize)

    up, down = ramp(False), ramp(True)
    for r in (up, down):
        r(1, net, {"val_acc": None, "val_score": 0.10})
        r(2, net, {"val_acc": None, "val_score": 0.20})  # an error rising: worse
    assert up.history[1]["held"] is True and up.advances == 1
    assert down.history[1]["held"] is False and down.advances == 2
