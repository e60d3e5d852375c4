"""``--task module:function`` on the command line: search, evaluate, finetune, workers.

A factory module is written into a temporary directory (as a user's file would be) and the
CLI is run in-process; its results are checked against the library run on the same task.
Bad factories give one ``error:`` line, exit code 2 and no result file.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import nasprune
from nasprune.cli import main
from nasprune.search import Proxy
from nasprune.search.study import quiet_optuna
from nasprune.task_loader import load_task

FACTORY = '''
import torch
from torch.utils.data import DataLoader, TensorDataset

import nasprune


def _split(data, name, batch_size):
    # The built-in digits, normalised, as plain tensors in ordinary DataLoaders.
    x, y = map(torch.cat, zip(*data.loader(name, batch_size=4096)))
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def make(batch_size=64):
    data = nasprune.load_dataset("digits")
    return nasprune.Task(train=_split(data, "train", batch_size),
                         val=_split(data, "val", 256), test=_split(data, "test", 256),
                         name="user-digits")


def make_with_model(checkpoint, batch_size=64):
    return make(batch_size), nasprune.load(checkpoint)


def wrong():
    return [1, 2]


def broken():
    raise ValueError("no data here")


NOT_A_FUNCTION = 3
'''


@pytest.fixture(scope="module")
def factory(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "usertask.py"
    path.write_text(FACTORY)
    return path


@pytest.fixture(scope="module")
def checkpoint(digits_cnn_checkpoint: Path) -> Path:
    return digits_cnn_checkpoint


def _one_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    return err


def test_search_with_a_task_meets_the_budget_and_records_the_import_path(
        factory, checkpoint, tmp_path, capsys):
    out = tmp_path / "s.json"
    spec = f"{factory}:make"
    code = main(["search", "--task", spec, "--task-arg", "batch_size=32", "--checkpoint",
                 str(checkpoint), "--target-macs", "0.5", "--trials", "4", "--strategy",
                 "random", "--bn-batches", "2", "--val-size", "128", "--out", str(out),
                 "--rungs", "off", "--quiet"])  # one fidelity: its score is re-scored below
    printed = capsys.readouterr()
    assert code == 0, printed.err
    # `nasprune prune` cannot rebuild a task's own model: the hint points to Python.
    assert "next, in Python: nasprune.prune(model, example_inputs" in printed.out
    assert "nasprune prune --checkpoint" not in printed.out
    doc = json.loads(out.read_text())
    assert doc["task"] == spec and doc["task_args"] == {"batch_size": 32}
    assert 0 < doc["best"]["macs_fraction"] <= 0.5
    resolved = yaml.safe_load(out.with_suffix(".config.yaml").read_text())["search"]
    assert resolved["task"] == spec and resolved["task_args"] == {"batch_size": 32}
    # The best trial's score is the proxy's on the same task rebuilt from the record.
    task = load_task(doc["task"], doc["task_args"]).task
    proxy = Proxy(nasprune.load(checkpoint), task, bn_batches=2, val_size=128, seed=0)
    assert proxy.score(doc["ratios"]) == pytest.approx(doc["best"]["score"], abs=1e-6)
    assert doc["best"]["score"] > 0.2  # 10 classes: chance is 0.1, even at half the MACs


def test_evaluate_with_a_task_whose_factory_returns_the_model(factory, checkpoint, tmp_path,
                                                              capsys):
    out = tmp_path / "e.json"
    code = main(["evaluate", "--task", f"{factory}:make_with_model", "--task-arg",
                 f"checkpoint={checkpoint}", "--split", "val", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    task, model = load_task(f"{factory}:make_with_model", {"checkpoint": str(checkpoint)})\
        .task, nasprune.load(checkpoint)
    expected = nasprune.evaluate(model, task, split="val")
    assert doc["score"] == pytest.approx(expected["score"]) and doc["n"] == expected["n"]
    assert doc["loss"] == pytest.approx(expected["loss"]) and doc["split"] == "val"
    assert f"score {expected['score']:.4f}" in capsys.readouterr().out


def test_finetune_with_a_task_saves_a_checkpoint_that_scores_what_it_reports(
        factory, checkpoint, tmp_path, capsys):
    out = tmp_path / "ft"
    code = main(["finetune", "--task", f"{factory}:make", "--checkpoint", str(checkpoint),
                 "--epochs", "1", "--bn-batches", "2", "--device", "cpu", "--out", str(out),
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "results.json").read_text())
    task = load_task(f"{factory}:make").task
    before = nasprune.evaluate(nasprune.load(checkpoint), task)["score"]
    assert summary["before"]["score"] == pytest.approx(before)
    tuned = nasprune.load(out)
    assert nasprune.evaluate(tuned, task)["score"] == pytest.approx(summary["after"]["score"])
    assert summary["after"]["score"] > 0.5 and len(summary["history"]) == 1
    assert nasprune.checkpoint.read_spec(out)["meta"]["task"] == f"{factory}:make"


@pytest.mark.slow
def test_two_workers_rebuild_the_task_from_its_import_path(factory, checkpoint, tmp_path,
                                                          capsys):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    out = tmp_path / "w.json"
    code = main(["workers", "-n", "2", "--", "--task", f"{factory}:make", "--checkpoint",
                 str(checkpoint), "--storage", url, "--study", "t", "--trials", "4",
                 "--strategy", "random", "--bn-batches", "2", "--val-size", "128",
                 "--rungs", "off", "--out", str(out)])  # no trial stopped early at a rung
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "[w0] searched random" in printed.out and "[w1] searched random" in printed.out
    with quiet_optuna():
        trials = optuna.load_study(study_name="t", storage=url).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # Both workers open the fresh study and queue its warm start; the later copies are
    # skipped unscored (PRUNED), never run twice.
    copies = [t for t in trials if t not in complete]
    assert 4 <= len(complete) <= 5
    assert all(t.state == TrialState.PRUNED and "warm_start" in t.user_attrs
               and "keep" not in t.user_attrs for t in copies)
    assert json.loads(out.read_text())["task"] == f"{factory}:make"


@pytest.mark.parametrize("target, needle", [
    ("missing.py:make", "task file not found"),
    ("{bad}:make", "cannot import the task module"),
    ("{f}:nope", "has no attribute 'nope': choose from: broken, make, make_with_model, wrong"),
    ("{f}:NOT_A_FUNCTION", "is a int, not a function"),
    ("{f}:wrong", "returned a list; expected a nasprune.Task or a (Task, torch.nn.Module)"),
    ("{f}:broken", "failed: ValueError: no data here"),
    ("no_such_module_xyz:make", "No module named 'no_such_module_xyz'"),
])
def test_bad_factories_are_one_error_and_write_nothing(factory, checkpoint, tmp_path, capsys,
                                                       target, needle):
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_module_xyz\n")
    out = tmp_path / "s.json"
    code = main(["search", "--task", target.format(f=factory, bad=bad), "--checkpoint",
                 str(checkpoint), "--trials", "2", "--out", str(out)])
    assert code == 2
    _one_error(capsys, needle)
    assert not out.exists() and not out.with_suffix(".config.yaml").exists()


def test_an_import_error_names_the_missing_module(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_module_xyz\n")
    assert main(["evaluate", "--task", f"{bad}:make"]) == 2
    _one_error(capsys, "ModuleNotFoundError: No module named 'not_a_module_xyz'")


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", "--task", "{f}:make"], "returns no model: pass --checkpoint"),
    (["search", "--task", "{f}:make", "--data", "digits"], "give --task or --data"),
    (["finetune", "--task", "{f}:make", "--checkpoint", "{ck}", "--task-arg", "x"],
     "--task-arg must look like KEY=VALUE"),
    (["evaluate", "--checkpoint", "{ck}", "--task-arg", "a=1"], "--task-arg needs --task"),
    (["experiment", "--config", "example-digits", "--task", "{f}:make"],
     "returns no model"),
    (["experiment", "--config", "example-digits", "--task-arg", "a=1"],
     "experiment.task_args needs experiment.task"),
])
def test_flag_misuse_is_one_error(factory, checkpoint, capsys, argv, needle):
    assert main([a.format(f=factory, ck=checkpoint) for a in argv]) == 2
    _one_error(capsys, needle)
