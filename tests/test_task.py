"""The task interface: user batches, routing, loss and score through evaluate, fit and the
proxy, equal to the in-memory path on the same images; bad tasks are one clear error."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nasprune
from nasprune.errors import NaspruneError
from nasprune.search import Budget, Proxy, SearchSpace
from nasprune.task import Task, as_task, default_forward, default_loss, to_device


def normalised(data, split):
    """The split's images normalised exactly as the in-memory loader does, and labels."""
    s = data.split(split) if isinstance(split, str) else split
    x, y = next(iter(data.loader(s, batch_size=len(s))))
    return x, y


def loader_of(data, split, batch_size=128, **kw) -> DataLoader:
    x, y = normalised(data, split)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, **kw)


def test_evaluate_a_dataloader_task_equals_the_in_memory_path(trained_digits_cnn, digits):
    model = trained_digits_cnn
    task = Task(test=loader_of(digits, "test"))
    out = nasprune.evaluate(model, task)
    ref = nasprune.evaluate(model, digits)
    assert out["n"] == ref["n"] == len(digits.test)
    assert out["score"] == pytest.approx(ref["top1"], abs=1e-12)
    assert out["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert out["maximize"] is True
    # A bare DataLoader is a task too (train = val = test).
    assert nasprune.evaluate(model, loader_of(digits, "test"))["score"] == out["score"]


def test_a_custom_score_and_direction(trained_digits_cnn, digits):
    def error_rate(outputs, batches):
        wrong = sum(int((o.argmax(1) != b[1]).sum()) for o, b in zip(outputs, batches, strict=True))
        return wrong / sum(len(b[1]) for b in batches)

    task = Task(test=loader_of(digits, "test"), score=error_rate, maximize=False)
    out = nasprune.evaluate(trained_digits_cnn, task)
    ref = nasprune.evaluate(trained_digits_cnn, digits)
    assert out["score"] == pytest.approx(1 - ref["top1"], abs=1e-12)
    assert out["maximize"] is False


def test_proxy_on_user_batches_equals_the_in_memory_proxy(trained_digits_cnn, digits):
    """The same BN batches and validation images give the same score, to float tolerance."""
    model = trained_digits_cnn
    mem = Proxy(model, digits, bn_batches=4, val_size=200, device="cpu", seed=0,
                channels_last=False)
    task = Task(train=[b for b in mem._train_batches], val=[b for b in mem._val_batches])
    user = Proxy(model, task, bn_batches=4, val_size=200, device="cpu", seed=0,
                 example_inputs=digits.example_input())
    assert user.val_count == mem.val_count == 200
    space = SearchSpace(model, digits.example_input())
    for m in (0.3, 0.6):
        ratios = space.prune_ratios(space.project(torch.full((space.dim,), 0.5).numpy(),
                                                  Budget(macs=m)))
        assert user.score(ratios) == pytest.approx(mem.score(ratios), abs=1e-9)
    assert user.cached_bytes > 0


def test_proxy_caches_a_bounded_fixed_set_of_batches(trained_digits_cnn, digits):
    loader = loader_of(digits, "train", batch_size=32, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    proxy = Proxy(trained_digits_cnn, Task(train=loader, val=loader_of(digits, "val", 50)),
                  bn_batches=3, val_size=120, device="cpu")
    assert len(proxy._train_batches) == 3
    assert proxy.val_count == 150  # whole batches of 50 until at least 120 samples
    assert proxy.example_inputs.shape == (1, 1, 8, 8)
    with pytest.raises(NaspruneError, match=r"over cache_mb=0.001: lower val_size"):
        Proxy(trained_digits_cnn, Task(train=loader, val=loader_of(digits, "val")),
              bn_batches=3, val_size=300, device="cpu", cache_mb=0.001)


def test_fit_on_a_dataloader_learns_and_reports_the_task_score(digits):
    torch.manual_seed(0)
    model = nasprune.create_model("digitscnn", in_channels=1)
    task = Task(train=loader_of(digits, "train", 64, shuffle=True),
                val=loader_of(digits, "val"), test=loader_of(digits, "test"))
    before = nasprune.evaluate(model, task)["score"]
    result = nasprune.fit(model, task, epochs=3, progress=False, device="cpu")
    after = nasprune.evaluate(model, task)["score"]
    assert before < 0.3 and after > 0.85
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.history[-1]["val_score"] == pytest.approx(
        nasprune.evaluate(model, task, split="val")["score"])
    assert result.samples == 3 * len(digits.train)


def test_finetune_with_a_teacher_on_a_task_changes_the_result(trained_digits_cnn, digits):
    task = Task(train=loader_of(digits, "train", 64), val=loader_of(digits, "val"))
    example = digits.example_input()
    pruned = nasprune.prune(trained_digits_cnn, example, 0.6)
    plain, distilled = copy.deepcopy(pruned), copy.deepcopy(pruned)
    nasprune.finetune(plain, task, epochs=1, progress=False, device="cpu", seed=0)
    nasprune.finetune(distilled, task, epochs=1, progress=False, device="cpu", seed=0,
                      teacher=trained_digits_cnn)
    a, b = plain.state_dict(), distilled.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


class KeywordNet(nn.Module):
    """A model called with keyword arguments that returns a Hugging Face-like output."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nasprune.create_model("digitscnn", in_channels=1)

    def forward(self, pixel_values, labels=None):
        logits = self.body(pixel_values)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return type("Out", (), {"logits": logits, "loss": loss})()


def test_dict_batches_route_as_keyword_arguments_and_use_the_models_loss(digits):
    x, y = normalised(digits, "test")
    batches = [{"pixel_values": x[i:i + 100], "labels": y[i:i + 100]}
               for i in range(0, len(y), 100)]
    torch.manual_seed(0)
    model = KeywordNet()
    out = nasprune.evaluate(model, Task(test=batches))
    plain = nasprune.evaluate(model.body, Task(test=list(zip(
        [b["pixel_values"] for b in batches], [b["labels"] for b in batches], strict=True))))
    assert out["score"] == pytest.approx(plain["score"]) and out["n"] == len(y)
    assert out["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert isinstance(default_forward(model, batches[0]).loss, torch.Tensor)


def test_routing_and_loss_defaults():
    seen = {}

    class Probe(nn.Module):
        def forward(self, *args, **kwargs):
            seen["args"], seen["kwargs"] = len(args), sorted(kwargs)
            return torch.zeros(2, 3, requires_grad=True)

    probe = Probe()
    default_forward(probe, torch.ones(2, 4))
    assert seen == {"args": 1, "kwargs": []}
    default_forward(probe, ((torch.ones(2), torch.ones(2)), torch.zeros(2)))
    assert seen == {"args": 2, "kwargs": []}
    default_forward(probe, {"a": torch.ones(2), "labels": torch.zeros(2)})
    assert seen == {"args": 0, "kwargs": ["a", "labels"]}
    losses = {"loss_classifier": torch.tensor(1.5), "loss_box_reg": torch.tensor(0.25)}
    assert default_loss(losses, None).item() == pytest.approx(1.75)  # detection loss dicts
    batch = {"x": torch.ones(1), "nested": [torch.ones(1), {"y": torch.ones(1)}]}
    moved = to_device(batch, "cpu")
    assert moved["nested"][1]["y"].device.type == "cpu"


@pytest.mark.parametrize("task, match", [
    (Task(test=[object()]), "cannot feed a batch of type object"),
    (Task(test=[]), "nothing to evaluate: task 'task' has no test batches"),
    (Task(test=[(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))],
          score=lambda o, b: float("nan")), "score must return a number, got nan"),
    (Task(test=[(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))],
          score=lambda o, b: "high"), "score must return a number, got 'high'"),
    (Task(val=[(torch.randn(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))]),
     "the task 'task' has no test batches"),
])
def test_bad_tasks_are_one_clear_error(trained_digits_cnn, task, match):
    with pytest.raises(NaspruneError, match=re.escape(match)):
        nasprune.evaluate(trained_digits_cnn, task)


def test_a_loss_that_is_not_a_scalar_stops_training_with_a_clear_error(digits):
    model = nasprune.create_model("digitscnn", in_channels=1)
    task = Task(train=loader_of(digits, "train"), val=None,
                loss=lambda out, batch: out.sum(dim=1))
    with pytest.raises(NaspruneError, match=r"loss must return a scalar tensor, got \(128,\)"):
        nasprune.fit(model, task, epochs=1, progress=False, device="cpu")


def test_a_model_that_cannot_take_the_batch_is_named(digits):
    model = nasprune.create_model("digitscnn", in_channels=3)
    with pytest.raises(NaspruneError, match="the model cannot process a batch of task"):
        nasprune.fit(model, Task(train=loader_of(digits, "train")), epochs=1,
                     progress=False, device="cpu")


def test_as_task_rejects_what_is_not_data():
    with pytest.raises(NaspruneError, match="expected a nasprune Task, a built-in Dataset"):
        as_task(3)
    assert math.isclose(as_task([(torch.ones(1), torch.ones(1))], maximize=False).maximize, 0)


def test_fit_leaves_the_teachers_parameters_trainable(digits):
    teacher = nasprune.create_model("digitscnn", in_channels=1)
    student = nasprune.create_model("digitscnn", in_channels=1)
    nasprune.fit(student, Task(train=loader_of(digits, "train", 64)), epochs=1,
                 progress=False, device="cpu", teacher=teacher, validate=False)
    assert all(p.requires_grad for p in teacher.parameters())


def test_batch_len_counts_a_list_of_images_one_per_sample():
    from nasprune.task import batch_len

    images = [torch.zeros(3, 8, 8), torch.zeros(3, 6, 6)]  # torchvision detection's inputs
    assert batch_len((images, [{}, {}])) == 2
    assert batch_len([torch.zeros(5, 3), torch.zeros(5)]) == 5  # a DataLoader's [x, y]
    assert batch_len({"pixels": torch.zeros(4, 1, 8, 8), "labels": torch.zeros(4)}) == 4
    assert batch_len(((torch.zeros(7, 2), torch.zeros(7, 2)), torch.zeros(7))) == 7
