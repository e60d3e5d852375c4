"""`nasprune evaluate`: a saved digits model, its JSON against the metrics API, user errors."""

from __future__ import annotations

import json

import pytest

import nasprune
from nasprune import metrics as M
from nasprune.cli import main


@pytest.fixture(scope="module")
def saved(trained_narrow_digits_cnn, tmp_path_factory):
    """The briefly trained digits CNN of conftest saved with nasprune.save: (model, dir)."""
    directory = tmp_path_factory.mktemp("ckpt") / "digits-cnn"
    nasprune.save(trained_narrow_digits_cnn, directory)
    return trained_narrow_digits_cnn, directory


def test_json_equals_metrics_api(saved, digits, tmp_path, capsys):
    model, directory = saved
    out = tmp_path / "eval" / "metrics.json"
    code = main(["evaluate", "--checkpoint", str(directory), "--data", "digits",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "top-1 accuracy" in printed and "MACs" in printed and str(out) in printed
    got = json.loads(out.read_text())
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # atomic, no temp left

    expected = M.evaluate(model, digits, split="test")
    assert got["n"] == expected["n"] == 359
    assert got["confusion"] == expected["confusion"]
    for key in ("top1", "top5", "precision", "recall", "f1", "loss"):
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key
    assert got["top1"] > 0.5  # it did learn something: chance is 0.1

    example = digits.example_input(1)
    assert got["macs"] == M.count_macs(model, example)
    assert got["flops"] == 2 * got["macs"]
    assert got["sparse_macs"] == got["macs"]  # nothing pruned
    assert got["params"] == M.count_params(model)
    assert got["size_mb"] == pytest.approx(M.model_size_mb(model))
    assert got["sparse_size_mb"] == pytest.approx(M.sparse_size_mb(model))
    assert got["latency"] is None  # not asked for
    assert got["model"] == "digitscnn" and got["data"] == "digits" and got["split"] == "test"
    assert got["input_shape"] == [1, 8, 8]


def test_val_split_and_latency(saved, tmp_path):
    _, directory = saved
    out = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(directory), "--data", "digits",
                 "--split", "val", "--batch-size", "32", "--latency", "--threads", "1",
                 "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["split"] == "val" and got["n"] == 269
    batches = got["latency"]["batches"]
    assert set(batches) == {"1", "64"} and got["latency"]["threads"] == 1
    assert batches["64"]["p90_ms"] >= batches["64"]["median_ms"] > 0


@pytest.mark.parametrize("argv, needle", [
    (["--checkpoint", "{tmp}/does-not-exist", "--data", "digits"], "checkpoint"),
    (["--checkpoint", "{ckpt}", "--data", "no-such-data"], "no-such-data"),
    (["--checkpoint", "{ckpt}", "--data", "digits", "--batch-size", "0"], "batch"),
])
def test_user_errors_exit_2_with_one_line(saved, tmp_path, capsys, argv, needle):
    _, directory = saved
    argv = [a.format(tmp=tmp_path, ckpt=directory) for a in argv]
    out = tmp_path / "never.json"
    assert main(["evaluate", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
