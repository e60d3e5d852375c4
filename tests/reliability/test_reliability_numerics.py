"""Numerical faults: NaN/inf stop the run that produced them, clearly, and nothing else.

Training or fine-tuning whose loss becomes NaN/inf raises one NaspruneError naming the
epoch and step (through the CLI: exit 2, one line, no checkpoint). A search trial whose
score is NaN fails alone and the search still delivers the requested complete trials. In an
experiment, a method whose fine-tuning diverges is recorded as failed while every other
method finishes and the comparison is still written.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import nasprune
from nasprune.errors import NaspruneError
from nasprune.experiment import METHODS, Pruned, register_method
from nasprune.search import Budget, Proxy
from nasprune.search import search as run_search

X = torch.zeros(1, 1, 8, 8)


def _nan_when_training(module, inputs, output):
    return output * float("nan") if module.training else output


if "test-diverging-finetune" not in METHODS:

    @register_method("test-diverging-finetune")
    def _diverging(ctx) -> Pruned:
        """Prunes like ``uniform`` but its logits are NaN in training mode: fine-tuning
        diverges at the first step while the weights themselves stay finite."""
        model = ctx.prune(0.3)
        model.classifier.register_forward_hook(_nan_when_training)
        return Pruned(model)


@pytest.fixture()
def cnn():
    torch.manual_seed(0)
    return nasprune.create_model("digitscnn", in_channels=1, width=8)


@pytest.mark.parametrize("call", ["fit", "finetune"])
def test_diverging_loss_stops_with_a_clear_error(cnn, digits, call):
    cnn.classifier.register_forward_hook(_nan_when_training)
    before = {k: v.detach().clone() for k, v in cnn.named_parameters()}
    with pytest.raises(NaspruneError, match=r"training diverged: loss is nan at epoch 1 step 1"):
        getattr(nasprune, call)(cnn, digits, epochs=2, progress=False, device="cpu")
    # stopped at once: the optimizer never stepped on a NaN gradient
    for k, v in cnn.named_parameters():
        assert torch.equal(v.detach(), before[k]), k


def test_exploding_learning_rate_is_caught(cnn, digits):
    with pytest.raises(NaspruneError, match="diverged: loss is (nan|inf)"):
        nasprune.fit(cnn, digits, epochs=3, lr=1e30, progress=False, device="cpu")


class _NaNForSomeCandidates(Proxy):
    """Scores NaN for every candidate whose first group keeps more than half its channels."""

    def score(self, prune_ratios):
        value = super().score(prune_ratios)
        return float("nan") if prune_ratios["features.0"] < 0.5 else value


def test_nan_score_fails_only_that_trial(cnn, digits):
    evaluator = _NaNForSomeCandidates(cnn, digits, bn_batches=1, val_size=64, device="cpu")
    result = run_search(cnn, X, digits, strategy="random", target=Budget(macs=0.5), trials=8,
                        seed=0, progress=False, evaluator=evaluator, max_failures=50)
    trials = result.study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state.name == "FAIL"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 8 == len(result.trials)
    assert failed, "the generated candidates never hit the NaN branch"
    assert result.failed == len(failed)
    for t in failed:
        assert t.user_attrs["error"] == "score is nan"
        assert t.user_attrs["prune_ratios"]["features.0"] < 0.5
    assert all(math.isfinite(t.value) and t.user_attrs["prune_ratios"]["features.0"] >= 0.5
               for t in complete)


def test_search_gives_up_after_consecutive_failures(cnn, digits):
    class AlwaysNaN(Proxy):
        def score(self, prune_ratios):
            return float("nan")

    evaluator = AlwaysNaN(cnn, digits, bn_batches=1, val_size=64, device="cpu")
    with pytest.raises(NaspruneError, match="3 trials in a row failed; last error: score is nan"):
        run_search(cnn, X, digits, strategy="random", trials=5, progress=False,
                   evaluator=evaluator, max_failures=3)


def test_experiment_marks_only_the_diverging_method_failed(tmp_path, capsys):
    cfg = {
        "name": "numerics",
        "baseline": {"epochs": 1},
        "finetune": {"epochs": 1, "bn_batches": 2},
        "latency": {"batch": 4, "warmup": 0, "repeats": 1},
        "threads": 1,
        "methods": ["unpruned", "uniform", {"method": "test-diverging-finetune",
                                            "name": "diverging"}],
    }
    result = nasprune.experiment(cfg, tmp_path / "run", progress=False, report=False)
    assert result.failed == ["diverging"]
    bad = result.row("diverging")
    assert bad["status"] == "failed" and "training diverged: loss is nan" in bad["error"]
    for name in ("unpruned", "uniform"):
        row = result.row(name)
        assert row["status"] == "ok" and 0.0 <= row["top1"] <= 1.0
    methods = tmp_path / "run" / "methods"
    assert not (methods / "diverging" / "model").exists()  # no model from a failed run
    assert (methods / "uniform" / "model" / "spec.json").is_file()
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["status"] for r in doc["rows"]] == ["ok", "ok", "failed"]
    assert "| diverging | failed |" in (tmp_path / "run" / "results.md").read_text()
