"""A Hugging Face classifier on dict batches: fit, finetune (with and without a teacher) and
evaluate through the task's defaults (``model(**batch)``, the model's own ``.loss``, top-1
of ``.logits``), on the real digits as token sequences. Needs the optional ``hf`` extra;
the token-data tests run without it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nasprune
from nasprune.data.tokens import CLS_ID, LEVELS, PIXEL_OFFSET, PIXELS, SEQ_LEN, VOCAB_SIZE
from nasprune.task import Task
from nasprune.train.monitor import LossMonitor


def test_token_digits_are_the_digits_split_as_tokens(digits):
    task = nasprune.data.token_digits(batch_size=64)
    for name in ("val", "test"):
        ids = torch.cat([b["input_ids"] for b in task.split(name)])
        labels = torch.cat([b["labels"] for b in task.split(name)])
        split = digits.split(name)
        assert torch.equal(labels, split.y)
        assert ids.shape == (len(split), SEQ_LEN) and bool((ids[:, 0] == CLS_ID).all())
        assert int(ids.max()) < VOCAB_SIZE
        level = ids[:, 1:] - PIXEL_OFFSET - torch.arange(PIXELS) * LEVELS
        assert bool(((level >= 0) & (level < LEVELS)).all())  # each token names its pixel
        pixels = (level.double() * 255.0 / 16.0).round().to(torch.uint8)
        assert torch.equal(pixels, split.x.reshape(len(split), -1))
        assert all(bool((b["attention_mask"] == 1).all()) for b in task.split(name))
    train = torch.cat([b["labels"] for b in task.train])
    assert sorted(train.tolist()) == sorted(digits.train.y.tolist())  # shuffled, same samples
    assert len(task.train[0]["labels"]) == 64 and task.num_classes == 10


def test_train_acc_only_for_tasks_scored_by_top1():
    """A task with its own score has no training accuracy: None, not a fake 0 %."""
    monitor = LossMonitor()
    monitor.add(1, 1, torch.tensor(2.0), None, 8)
    monitor.add(1, 2, torch.tensor(1.0), torch.tensor(3), 4)
    monitor.flush()
    assert monitor.loss == pytest.approx((2.0 * 8 + 1.0 * 4) / 12)
    assert monitor.accuracy == pytest.approx(3 / 4) and monitor.scored == 4

    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    batches = [{"input": x[i:i + 16], "labels": y[i:i + 16]} for i in (0, 16)]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, input, labels):  # noqa: A002  (a keyword of the dict batch)
            return self.fc(input)

    net = Net()
    before = copy.deepcopy(net)
    plain = nasprune.fit(net, Task(train=batches), epochs=1, max_steps=1, progress=False,
                         validate=False)
    expected = float((before.fc(x[:16]).argmax(1) == y[:16]).float().mean())
    assert plain.history[0]["train_acc"] == pytest.approx(expected)
    custom = Task(train=batches, score=lambda outputs, batches: 0.5)
    record = nasprune.fit(Net(), custom, epochs=1, progress=False, validate=False).history[0]
    assert record["train_acc"] is None and record["loss"] > 0


@pytest.fixture(scope="module")
def bert_digits():
    """A 2-layer BERT (random init, no download) and the token digits: (model, task)."""
    transformers = pytest.importorskip(
        "transformers", reason="Hugging Face transformers not installed (pip install nasprune[hf])")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=80, num_labels=10,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # exact loss checks
    return transformers.BertForSequenceClassification(config), nasprune.data.token_digits(32)


@pytest.mark.slow  # ~15 s on a busy 2-core machine (3 epochs of a small BERT)
def test_fit_evaluate_and_finetune_a_hf_classifier(bert_digits):
    """One trained model serves both checks (one training run even under pytest-xdist)."""
    model, task = copy.deepcopy(bert_digits[0]), bert_digits[1]
    result = nasprune.fit(model, task, epochs=3, optimizer="adamw", lr=2e-3,
                          weight_decay=0.01, schedule="constant", progress=False)
    check_fit_and_evaluate(model, task, result)
    check_finetune(model, task)


def check_fit_and_evaluate(model, task, result) -> None:
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.samples == 3 * sum(len(b["labels"]) for b in task.train)
    assert all(0.0 <= r["train_acc"] <= 1.0 for r in result.history)  # top-1, reported
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    out = nasprune.evaluate(model, task)
    assert out["maximize"] is True and out["n"] == 359
    assert out["score"] > 0.45, out  # chance is 0.10; measured 0.63 after 3 epochs
    # The same numbers by hand: argmax of .logits against labels; the model's own .loss
    # averaged over samples.
    correct, loss_sum = 0, 0.0
    model.eval()
    with torch.no_grad():
        for b in task.test:
            o = model(**b)
            correct += int((o.logits.argmax(-1) == b["labels"]).sum())
            loss_sum += float(o.loss) * len(b["labels"])
    assert out["score"] == correct / 359
    assert out["loss"] == pytest.approx(loss_sum / 359, rel=1e-6)
    assert result.history[-1]["val_score"] == pytest.approx(
        nasprune.evaluate(model, task, split="val")["score"])


def test_fit_records_the_models_own_loss_and_top1(bert_digits):
    model, task = copy.deepcopy(bert_digits[0]), bert_digits[1]
    first = task.train[0]
    with torch.no_grad():
        own = model(**first)
    record = nasprune.fit(model, task, epochs=1, max_steps=1, optimizer="adamw", lr=1e-3,
                          progress=False, validate=False).history[0]
    assert record["loss"] == pytest.approx(float(own.loss), rel=1e-5)
    assert record["train_acc"] == float((own.logits.argmax(-1) == first["labels"]).float().mean())


def check_finetune(model, task) -> None:
    """finetune with and without a teacher: both move the weights, differently."""
    short = task.with_splits(train=task.train[:3])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    plain, taught = copy.deepcopy(model), copy.deepcopy(model)
    teacher = copy.deepcopy(model)
    for student, kw in ((plain, {}), (taught, {"teacher": teacher})):
        res = nasprune.finetune(student, short, epochs=1, optimizer="adamw", progress=False,
                                validate=False, **kw)
        assert res.steps == 3 and res.history[0]["train_acc"] is not None
    w = "classifier.weight"
    assert not torch.equal(plain.state_dict()[w], start[w])
    assert not torch.equal(taught.state_dict()[w], start[w])
    # Distillation pulls towards the teacher's soft targets: a different update.
    assert (plain.state_dict()[w] - taught.state_dict()[w]).abs().max() > 1e-6
    assert torch.equal(teacher.state_dict()[w], start[w])  # the teacher is never trained
    assert nasprune.evaluate(taught, task)["score"] > 0.3


def test_hf_image_classifier_fits_a_built_in_data_set(digits):
    """A Hugging Face image classifier returns an output object, not a tensor: fit and
    evaluate on the built-in (in-memory) digits read its ``.logits``."""
    transformers = pytest.importorskip("transformers", reason="needs the optional hf extra")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32,
                                    num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, num_labels=10)
    model = transformers.ViTForImageClassification(config)
    before = nasprune.evaluate(model, digits)["top1"]
    nasprune.fit(model, digits, epochs=4, batch_size=32, optimizer="adamw", lr=5e-3,
                 augment=False, progress=False)
    after = nasprune.evaluate(model, digits)["top1"]
    assert after > before + 0.2, (before, after)  # measured: 0.09 -> 0.45
