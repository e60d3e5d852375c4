"""``prune --task`` and ``evaluate --task --latency``: the task's model and its own inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nasprune
from nasprune.cli import main
from nasprune.task_loader import load_task

# The README's own-data example: digits in plain DataLoaders and its own small CNN.
EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "digits_task.py")
SPEC = f"{EXAMPLE}:make_task"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """DigitsNet trained briefly on the example task and saved (a user-model checkpoint)."""
    torch.manual_seed(0)
    loaded = load_task(SPEC, {"with_model": True})
    nasprune.fit(loaded.model, loaded.task, epochs=2, optimizer="adam", lr=3e-3,
                 progress=False)
    return nasprune.save(loaded.model, tmp_path_factory.mktemp("net") / "digits-net")


def test_prune_with_a_task_saves_a_model_that_evaluate_task_reads_back(trained, tmp_path,
                                                                        capsys):
    out = tmp_path / "pruned"
    code = main(["prune", "--task", SPEC, "--task-arg", "with_model=true",
                 "--checkpoint", str(trained), "--ratio", "0.5", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"nasprune finetune --task {SPEC}" in printed
    spec = json.loads((out / "spec.json").read_text())
    meta = spec["meta"]
    assert meta["task"] == SPEC and meta["task_args"] == {"with_model": True}
    assert meta["input_shape"] == [1, 8, 8]  # from the task's first validation batch
    assert meta["after"]["macs"] < 0.5 * meta["before"]["macs"]

    loaded = load_task(SPEC, {"with_model": True})
    pruned = nasprune.load(out, base=loaded.model)
    assert pruned.features[0].out_channels == 8  # DigitsNet width 16, half removed
    expected = nasprune.evaluate(pruned, loaded.task, split="test")["score"]
    report = tmp_path / "eval.json"
    code = main(["evaluate", "--task", SPEC, "--task-arg", "with_model=true",
                 "--checkpoint", str(out), "--latency", "--threads", "1",
                 "--out", str(report)])
    assert code == 0
    got = json.loads(report.read_text())
    assert got["score"] == expected  # the same batches and weights: exact
    lat = got["latency"]
    assert lat["input_shape"] == [1, 8, 8] and set(lat["batches"]) == {"1", "64"}
    assert all(v["median_ms"] > 0 for v in lat["batches"].values())


def test_prune_task_without_checkpoint_prunes_the_factorys_model(tmp_path):
    out = tmp_path / "pruned"
    assert main(["prune", "--task", SPEC, "--task-arg", "with_model=true",
                 "--ratio", "0.25", "--out", str(out)]) == 0
    base = load_task(SPEC, {"with_model": True}).model
    pruned = nasprune.load(out, base=base)
    assert pruned.features[3].out_channels == 24  # 32 channels, a quarter removed
    assert pruned(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--task", SPEC, "--ratio", "0.5"], "returns no model"),
    (["--task", SPEC, "--task-arg", "with_model=true", "--ratio", "0.5",
      "--input-shape", "1,8,8"], "--input-shape does not apply with --task"),
    (["--ratio", "0.5"], "--checkpoint DIR is required"),
])
def test_bad_prune_task_flags_are_one_error(tmp_path, capsys, argv, needle):
    out = tmp_path / "never"
    assert main(["prune", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    assert not out.exists()
