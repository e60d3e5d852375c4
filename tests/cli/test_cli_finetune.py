"""``nasprune finetune``: a pruned checkpoint recovers its accuracy, stays small and keeps its
threshold masks; distillation from a teacher; bad input is one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nasprune
from nasprune.cli import main
from nasprune.metrics import count_macs, evaluate
from nasprune.pruning.masks import masked_modules

FT = ["--epochs", "4", "--threads", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def pruned(digits_cnn_checkpoint: Path, tmp_path_factory) -> Path:
    """The trained digits CNN with half of every group's channels removed, not fine-tuned."""
    out = tmp_path_factory.mktemp("ft") / "pruned"
    assert main(["prune", "--checkpoint", str(digits_cnn_checkpoint), "--ratio", "0.5",
                 "--out", str(out)]) == 0
    return out


def test_finetune_recovers_accuracy_and_keeps_the_pruned_shape(pruned, digits, tmp_path,
                                                               capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--checkpoint", str(pruned), "--out", str(out), *FT]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "results.json").read_text())
    before_model, after_model = nasprune.load(pruned), nasprune.load(out)
    # the numbers reported are the saved models' own
    assert doc["before"]["top1"] == pytest.approx(evaluate(before_model, digits)["top1"])
    assert doc["after"]["top1"] == pytest.approx(evaluate(after_model, digits)["top1"])
    assert doc["after"]["top1"] > doc["before"]["top1"] + 0.1  # a tiny net, 4 short epochs
    assert f"{doc['after']['top1']:.2%}" in printed
    assert len(doc["history"]) == 4 and doc["settings"]["optimizer"] == "sgd"
    x = digits.example_input(1)
    assert count_macs(after_model, x) == count_macs(before_model, x)  # still pruned
    meta = nasprune.checkpoint.read_spec(out)["meta"]
    assert meta["data"] == "digits" and meta["finetuned_from"] == str(pruned)
    assert meta["metrics"]["test"]["top1"] == doc["after"]["top1"]
    # the default output directory sits beside the input
    assert main(["finetune", "--checkpoint", str(pruned), "--epochs", "0", "--bn-batches", "0",
                 "--quiet"]) == 0
    assert (pruned.with_name("pruned-ft") / "results.json").is_file()


def test_threshold_masks_hold_through_finetune(digits_cnn_checkpoint, tmp_path):
    sparse, out = tmp_path / "sparse", tmp_path / "sparse-ft"
    assert main(["prune", "--checkpoint", str(digits_cnn_checkpoint),
                 "--threshold-sparsity", "0.7", "--out", str(sparse)]) == 0
    assert main(["finetune", "--checkpoint", str(sparse), "--out", str(out),
                 "--optimizer", "adam", *FT]) == 0
    model = nasprune.load(out)
    masked = masked_modules(model)
    assert masked
    for _, m in masked:
        mask = m._buffers["nasprune_mask"]
        assert not mask.all()
        assert torch.count_nonzero(m.weight[~mask]) == 0  # pruned weights are still zero


def test_distillation_from_the_teacher_changes_the_result(pruned, digits_cnn_checkpoint,
                                                          tmp_path):
    plain, kd = tmp_path / "plain", tmp_path / "kd"
    assert main(["finetune", "--checkpoint", str(pruned), "--out", str(plain), *FT]) == 0
    assert main(["finetune", "--checkpoint", str(pruned), "--out", str(kd), "--teacher",
                 str(digits_cnn_checkpoint), "--kd-weight", "0.5", *FT]) == 0
    a, b = nasprune.load(plain), nasprune.load(kd)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(),
                                                      strict=True))
    doc = json.loads((kd / "results.json").read_text())
    assert doc["settings"]["teacher"] == str(digits_cnn_checkpoint)
    assert doc["settings"]["kd_weight"] == 0.5


@pytest.mark.parametrize("extra, needle", [
    (["--epochs", "-1"], "epochs"),
    (["--lr", "nan"], "lr"),
    (["--kd-weight", "2", "--teacher", "{base}"], "kd_weight"),
    (["--bn-batches", "-3"], "bn_batches"),
    (["--optimizer", "adamm"], "adam"),
    (["--teacher", "{tmp}/missing"], "teacher"),
    (["--teacher", "{wide}"], "teacher"),
    (["--data", "mnist", "--data-dir", "{tmp}"], "mnist"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(pruned, digits_cnn_checkpoint,
                                                        tmp_path, capsys, extra, needle):
    wide = tmp_path / "wide"  # a model for another class count: not a valid teacher
    nasprune.save(nasprune.create_model("digitscnn", in_channels=1, num_classes=7), wide,
                  meta={"data": "digits"})
    extra = [a.format(base=digits_cnn_checkpoint, tmp=tmp_path, wide=wide) for a in extra]
    out = tmp_path / "never"
    assert main(["finetune", "--checkpoint", str(pruned), "--out", str(out), *FT, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
