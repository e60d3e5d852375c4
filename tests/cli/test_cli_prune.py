"""`nasprune prune`: structured and threshold pruning of a checkpoint from the command line."""

from __future__ import annotations

import json

import pytest
import torch

import nasprune
from nasprune.cli import main
from nasprune.metrics import count_macs


@pytest.fixture()
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = nasprune.create_model("digitscnn", in_channels=1, width=16)
    nasprune.save(model, tmp_path / "base", meta={"input_shape": [1, 8, 8], "data": "digits"})
    return tmp_path / "base", model


def test_prune_ratio_saves_a_smaller_loadable_model(ckpt, tmp_path, capsys):
    src, model = ckpt
    out = tmp_path / "pruned"
    assert main(["prune", "--checkpoint", str(src), "--ratio", "0.5", "--round-to", "4",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "MACs" in text and "params" in text and "size MB" in text and "→" in text
    pruned = nasprune.load(out)
    x = torch.randn(2, 1, 8, 8)
    expected = nasprune.prune(model, x, 0.5, round_to=4)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), expected.eval()(x))
    spec = json.loads((out / "spec.json").read_text())
    assert spec["meta"]["input_shape"] == [1, 8, 8] and spec["meta"]["data"] == "digits"
    assert spec["meta"]["after"]["macs"] == count_macs(pruned, x[:1])
    assert f"{spec['meta']['before']['macs']:,}" in text


def test_prune_ratios_file_and_global(ckpt, tmp_path):
    src, model = ckpt
    x = torch.randn(1, 1, 8, 8)
    name = nasprune.pruning.groups(model, x)[1].name
    (tmp_path / "r.json").write_text(json.dumps({name: 0.75}))
    assert main(["prune", "--checkpoint", str(src), "--ratios", str(tmp_path / "r.json"),
                 "--out", str(tmp_path / "a")]) == 0
    assert nasprune.load(tmp_path / "a").nasprune_pruning["channels"][name] == [16, 4]
    assert main(["prune", "--checkpoint", str(src), "--global", "0.5", "--criterion", "l2",
                 "--out", str(tmp_path / "b")]) == 0
    rec = nasprune.load(tmp_path / "b").nasprune_pruning
    assert rec["global_target"] == 0.5 and rec["criterion"] == "l2"


def test_prune_threshold_zeroes_weights(ckpt, tmp_path, capsys):
    src, _ = ckpt
    assert main(["prune", "--checkpoint", str(src), "--threshold-sparsity", "0.7",
                 "--out", str(tmp_path / "t")]) == 0
    assert "sparse MACs" in capsys.readouterr().out
    pruned = nasprune.load(tmp_path / "t")
    w = torch.cat([m.weight.flatten() for m in pruned.modules()
                   if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))])
    assert abs((w == 0).float().mean().item() - 0.7) < 0.01


@pytest.mark.parametrize("argv, words", [
    (["--ratio", "1.5"], "[0, 1)"),
    (["--ratio", "0.5", "--criterion", "fgpm"], "did you mean 'fpgm'"),
    (["--ratios", "missing.json"], "not found"),
    (["--ratio", "0.5", "--criterion", "taylor"], "needs training data"),
])
def test_prune_errors_are_one_line(ckpt, tmp_path, capsys, argv, words):
    src, _ = ckpt
    assert main(["prune", "--checkpoint", str(src), *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_prune_needs_an_input_shape(tmp_path, capsys):
    nasprune.save(nasprune.create_model("lenet5"), tmp_path / "m")
    assert main(["prune", "--checkpoint", str(tmp_path / "m"), "--ratio", "0.5",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["prune", "--checkpoint", str(tmp_path / "m"), "--ratio", "0.5",
                 "--input-shape", "3,16,16", "--out", str(tmp_path / "o")]) == 0


def test_prune_taylor_with_data(ckpt, tmp_path):
    src, _ = ckpt
    assert main(["prune", "--checkpoint", str(src), "--ratio", "0.5", "--criterion", "taylor",
                 "--data", "digits", "--out", str(tmp_path / "t")]) == 0
    assert nasprune.load(tmp_path / "t").nasprune_pruning["criterion"] == "taylor"
