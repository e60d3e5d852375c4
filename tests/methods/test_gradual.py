"""Gradual pruning: schedules, iterative prune/fine-tune, pruning while training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nasprune
from nasprune.errors import NaspruneError
from nasprune.methods import (
    cubic_schedule,
    iterative_prune,
    linear_schedule,
    prune_while_training,
)
from nasprune.metrics import count_macs, evaluate
from nasprune.pruning.masks import MASK


def sparsity(model: nn.Module) -> tuple[int, int]:
    """(zero weights, total weights) over the conv/linear layers."""
    ws = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    total = sum(w.numel() for w in ws)
    return total - sum(int(torch.count_nonzero(w)) for w in ws), total


def test_cubic_schedule_follows_zhu_and_gupta():
    assert cubic_schedule(0, 10, 0.0, 0.8) == 0.0
    assert cubic_schedule(10, 10, 0.0, 0.8) == pytest.approx(0.8)
    assert cubic_schedule(15, 10, 0.0, 0.8) == pytest.approx(0.8)  # clamped after the end
    # s_t = s_f + (s_i - s_f)(1 - t/n)^3 at t = n/2: 0.8 - 0.8/8.
    assert cubic_schedule(5, 10, 0.0, 0.8) == pytest.approx(0.7)
    assert cubic_schedule(1, 4, 0.2, 0.6) == pytest.approx(0.6 - 0.4 * 0.75**3)
    values = [cubic_schedule(t, 10, 0.0, 0.8) for t in range(11)]
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert all(s > 0 for s in steps) and steps == sorted(steps, reverse=True)  # fast, then slow
    assert linear_schedule(5, 10, 0.0, 0.8) == pytest.approx(0.4)
    assert linear_schedule(0, 10, 0.1, 0.8) == pytest.approx(0.1)
    with pytest.raises(NaspruneError, match="total steps"):
        cubic_schedule(1, 0, 0.0, 0.5)


def test_iterative_unstructured_reaches_the_sparsity_on_schedule(digits, trained_digits_cnn):
    before = copy.deepcopy(trained_digits_cnn.state_dict())
    result = iterative_prune(trained_digits_cnn, digits, digits.example_input(), target=0.7,
                             kind="unstructured", steps=3, epochs_per_step=1, progress=False)
    zeros, total = sparsity(result.model)
    assert abs(zeros - round(0.7 * total)) <= 1  # after the last fine-tune: masks held
    expected = [cubic_schedule(i, 3, 0.0, 0.7) for i in (1, 2, 3)]
    assert [h["target_sparsity"] for h in result.history] == pytest.approx(expected)
    assert [h["sparsity"] for h in result.history] == pytest.approx(expected, abs=1e-4)
    assert len(result.fits) == 3
    # Measured 0.963 (the unpruned model: 0.952) on a 2-core CPU.
    assert evaluate(result.model, digits, split="val")["top1"] > 0.9
    for k, v in trained_digits_cnn.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k])


def test_iterative_structured_reaches_the_macs_target(digits, trained_digits_cnn, tmp_path):
    ex = digits.example_input()
    result = iterative_prune(trained_digits_cnn, digits, ex, target=0.5, kind="structured", steps=2,
                             epochs_per_step=1, schedule="linear", progress=False)
    frac = count_macs(result.model, ex) / count_macs(trained_digits_cnn, ex)
    assert 0.47 <= frac <= 0.5
    assert [h["target_macs"] for h in result.history] == pytest.approx([0.75, 0.5])
    assert result.history[0]["macs"] <= 0.75
    # Physically smaller: widths shrank and stayed through fine-tuning.
    assert result.model.features[0].out_channels < trained_digits_cnn.features[0].out_channels
    assert result.model.nasprune_pruning["method"] == "iterative"
    # Measured 0.859 (unpruned 0.952) after two 1-epoch fine-tunes at a tenth of the lr.
    assert evaluate(result.model, digits, split="val")["top1"] > 0.8
    nasprune.save(result.model, tmp_path / "ckpt")
    loaded = nasprune.load(tmp_path / "ckpt").eval()
    assert torch.equal(loaded(ex), result.model.eval()(ex))


def test_prune_while_training_ends_at_the_target(digits):
    model = nasprune.create_model("digitscnn", in_channels=1, width=16)
    result = prune_while_training(model, digits, target_sparsity=0.7, epochs=4,
                                  adaptive=False, progress=False)
    zeros, total = sparsity(model)
    assert abs(zeros - round(0.7 * total)) <= 1
    # epochs 1..3 may prune, steps = ceil(3 / 2) = 2, no holds: increments after 1 and 2.
    assert [h["sparsity"] for h in result.history][:3] == pytest.approx(
        [0.0, cubic_schedule(1, 2, 0.0, 0.7), 0.7], abs=1e-4)
    assert all(hasattr(m, MASK) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert result.history[-1]["val_acc"] > 0.5


def test_adaptive_holds_after_an_accuracy_drop_and_still_reaches_the_target(digits):
    model = nasprune.create_model("digitscnn", in_channels=1, width=16)

    def drop_at_epoch_2(epoch, m, record):
        if epoch == 2:
            record["val_acc"] = 0.0  # simulate a collapse right after the first increment

    result = prune_while_training(model, digits, target_sparsity=0.6, epochs=5, steps=2,
                                  tolerance=0.02, callbacks=[drop_at_epoch_2], progress=False)
    held = [h["epoch"] for h in result.history if h["held"]]
    assert 2 in held
    assert sum("pruned_to" in h for h in result.history) == 2
    zeros, total = sparsity(model)
    assert abs(zeros - round(0.6 * total)) <= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": 1.0, "kind": "unstructured"}, "sparsity"),
        ({"target": 0.0, "kind": "structured"}, "MACs"),
        ({"target": 0.5, "kind": "diagonal"}, "unknown pruning kind"),
        ({"target": 0.5, "steps": 0}, "steps"),
        ({"target": 0.5, "schedule": "cubicc"}, "did you mean 'cubic'"),
    ],
)
def test_iterative_bad_arguments(digits, kwargs, message):
    model = nasprune.create_model("digitscnn", in_channels=1, width=8)
    with pytest.raises(NaspruneError, match=message):
        iterative_prune(model, digits, digits.example_input(), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_sparsity": 1.2, "epochs": 2}, "target_sparsity"),
        ({"target_sparsity": 0.5, "epochs": 0}, "epochs"),
        ({"target_sparsity": 0.5, "epochs": 3, "steps": 5}, "do not fit"),
        ({"target_sparsity": 0.5, "epochs": 3, "end_epoch": 4}, "end_epoch"),
        ({"target_sparsity": 0.5, "epochs": 3, "tolerance": -1}, "tolerance"),
    ],
)
def test_prune_while_training_bad_arguments(digits, kwargs, message):
    model = nasprune.create_model("digitscnn", in_channels=1, width=8)
    with pytest.raises(NaspruneError, match=message):
        prune_while_training(model, digits, **kwargs)
