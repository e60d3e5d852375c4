"""``experiment.task``: every method compared on a user's task (its batches, loss, score)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import nasprune
from nasprune.cli import main
from nasprune.experiment._fingerprint import baseline_fingerprint
from nasprune.experiment.config import load_experiment_config

# A user's task unlike the built-in data: batches are dicts of keyword arguments, the model
# is the user's own module (nasprune cannot rebuild it by name), and the score is an error
# rate (lower is better), so the table must name it and compare in its direction.
FACTORY = '''
import torch
from torch import nn

import nasprune


class KwNet(nn.Module):
    def __init__(self, width=12):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, 10)

    def forward(self, pixels, labels=None):  # dict batches carry their labels too
        return self.head(self.body(pixels))


def error_rate(outputs, batches):
    wrong = sum(int((o.argmax(1) != b["labels"]).sum()) for o, b in zip(outputs, batches))
    return wrong / sum(len(b["labels"]) for b in batches)


def _dicts(data, split, batch_size):
    return [{"pixels": x, "labels": y}
            for x, y in data.loader(split, batch_size=batch_size, shuffle=split == "train",
                                    seed=0)]


def make(width=12, batch_size=64):
    data = nasprune.load_dataset("digits")
    torch.manual_seed(0)
    task = nasprune.Task(train=_dicts(data, "train", batch_size),
                         val=_dicts(data, "val", 256), test=_dicts(data, "test", 256),
                         score=error_rate, maximize=False, name="kw-digits")
    return task, KwNet(width)


def no_model():
    return make()[0]
'''


def _cfg(factory: Path, **extra) -> dict:
    cfg = {
        "name": "task-experiment", "task": f"{factory}:make", "task_args": {"width": 12},
        "baseline": {"epochs": 3, "optimizer": "adam", "lr": 0.01},
        "finetune": {"epochs": 1, "bn_batches": 4},
        "search": {"trials": 3, "val_size": 200, "bn_batches": 4},
        "sensitivity": {"levels": [0.3, 0.6], "bn_batches": 2, "val_size": 200},
        "slimming": {"epochs": 1},
        "threads": 1,
        "methods": ["unpruned", "threshold", "uniform", "sensitivity", "slimming",
                    "nas:random"],
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def factory(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "kwtask.py"
    path.write_text(FACTORY)
    return path


@pytest.fixture(scope="module")
def run(factory, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp-task")
    return out, nasprune.experiment(_cfg(factory), out, progress=False)


@pytest.mark.slow  # one small experiment (six methods) shared by the module's tests
def test_every_method_is_scored_with_the_tasks_own_score(run, factory):
    from nasprune.task_loader import load_task

    out, result = run
    assert result.failed == []
    loaded = load_task(f"{factory}:make", {"width": 12})
    base = result.baseline["metrics"]
    assert base["score_name"] == "error_rate" and base["maximize"] is False
    assert "top1" not in base and 0.0 <= base["score"] < 0.5  # trained: better than chance
    for row in result.rows:
        model = nasprune.load(out / "methods" / row["dir"] / "model", base=loaded.model)
        score = nasprune.evaluate(model, loaded.task, split="test")["score"]
        assert score == row["score"], row["method"]  # same batches, same weights: exact
        assert row["delta_score"] == pytest.approx(row["score"] - base["score"])
        assert row["top1"] is None
        if row["kind"] not in ("unpruned", "threshold"):
            assert row["macs_fraction"] <= 0.5 + 1e-9, row["method"]
    # Dict inputs give no single tensor shape to time: latency is left out, not faked.
    assert result.baseline["latency"] is None
    assert result.row("uniform")["latency_b1_ms"] is None


@pytest.mark.slow
def test_table_and_report_name_the_score_and_its_direction(run, factory):
    out, result = run
    md = (out / "results.md").read_text()
    assert md.splitlines()[0].startswith("| method | error_rate ↓ | Δ error_rate |")
    assert f"| uniform | {result.row('uniform')['score']:.4f} |" in md
    with open(out / "results.csv", newline="") as f:
        table = {r["method"]: r for r in csv.DictReader(f)}
    assert float(table["uniform"]["score"]) == result.row("uniform")["score"]
    assert table["uniform"]["score_name"] == "error_rate" and table["uniform"]["top1"] == ""
    html = (out / "report.html").read_text()
    assert "<th>error_rate ↓</th>" in html and "lower is better" in html
    assert f"<td>task {factory}:make {{&quot;width&quot;: 12}}</td>" in html  # the data row
    assert (out / "plots" / "accuracy_vs_macs.png").stat().st_size > 1000
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["task"].endswith("kwtask.py:make")


@pytest.mark.slow
def test_rerun_reuses_everything_and_task_args_key_the_baseline(run, factory):
    out, first = run
    again = nasprune.experiment(_cfg(factory), out, progress=False, report=False)
    assert again.computed == [] and len(again.skipped) == len(first.rows)
    assert again.row("uniform")["score"] == first.row("uniform")["score"]
    fp = baseline_fingerprint(load_experiment_config(_cfg(factory)), "cpu")
    other = load_experiment_config(_cfg(factory, task_args={"width": 8}))
    assert baseline_fingerprint(other, "cpu") != fp
    # The built-in data set's settings do not matter once a task replaces it.
    same = load_experiment_config(_cfg(factory, data="digits", data_options={"x": 1}))
    assert baseline_fingerprint(same, "cpu") == fp


def test_cli_experiment_with_a_task(factory, tmp_path, capsys):
    out = tmp_path / "cli"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(json.dumps({"experiment": {k: v for k, v in _cfg(factory).items()
                                              if k not in ("task", "task_args")}}))
    code = main(["experiment", "--config", str(cfg), "--task", f"{factory}:make",
                 "--task-arg", "width=8", "--methods", "unpruned,uniform",
                 "--baseline-epochs", "1", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| method | error_rate ↓ |" in printed and "| uniform |" in printed
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["task_args"] == {"width": 8}
    assert doc["baseline"]["source"]["task_args"] == {"width": 8}


@pytest.mark.parametrize(("argv", "needle"), [
    (["--task", "{f}:no_model"], "returns no model"),
    (["--task", "{f}:missing"], "has no attribute 'missing'"),
    (["--task", "{f}:make", "--data", "digits"], "give --task or --data, not both"),
    (["--task", "not a spec"], "--task must look like"),
])
def test_bad_tasks_are_one_error_and_write_nothing(factory, tmp_path, capsys, argv, needle):
    out = tmp_path / "never"
    argv = [a.replace("{f}", str(factory)) for a in argv]
    code = main(["experiment", "--config", "example-digits", *argv, "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    assert not out.exists()
