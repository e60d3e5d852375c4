"""Crash safety with real processes: SIGKILL a search mid-trial, SIGKILL a checkpoint save.

A killed search must lose no finished trial; its running trial is failed through the
storage heartbeat and re-run (same parameters) when the search is resumed, and the study
ends with exactly the requested number of complete trials. A killed ``save`` (an overwrite)
must leave a checkpoint that loads as exactly one complete save, the old one or the new.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import nasprune
from nasprune.cli import main
from nasprune.errors import NaspruneError
from nasprune.search import Proxy
from nasprune.search.study import open_storage, quiet_optuna

TRIALS = 8


@pytest.fixture(scope="module")
def checkpoint(digits_cnn_checkpoint: Path) -> Path:
    return digits_cnn_checkpoint


def _trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    with quiet_optuna():
        return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


def _wait(proc: subprocess.Popen, until, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"worker exited early ({proc.returncode}):\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"timed out waiting for the worker:\n{out}\n{err}")
        time.sleep(0.1)


def _search_argv(checkpoint: Path, url: str, out: Path) -> list[str]:
    """``nasprune search`` as a user would run it; fine-tuning steps make trials last."""
    return ["search", "--checkpoint", str(checkpoint), "--storage", url, "--study", "crash",
            "--trials", str(TRIALS), "--strategy", "evolution", "--option", "population=3",
            "--finetune-steps", "60", "--bn-batches", "2", "--val-size", "128", "--seed", "0",
            "--device", "cpu", "--threads", "1", "--quiet", "--out", str(out)]


@pytest.mark.slow
def test_sigkill_mid_trial_loses_nothing_and_resume_retries(checkpoint, digits, tmp_path,
                                                            monkeypatch):
    url, out = f"sqlite:///{tmp_path / 'search.db'}", tmp_path / "best.json"
    # Heartbeats every second; a trial silent for 3 s belongs to a dead worker.
    env = {**os.environ, "NASPRUNE_HEARTBEAT_INTERVAL": "1", "NASPRUNE_GRACE_PERIOD": "3"}
    for k in ("NASPRUNE_HEARTBEAT_INTERVAL", "NASPRUNE_GRACE_PERIOD"):
        monkeypatch.setenv(k, env[k])
    argv = _search_argv(checkpoint, url, out)
    proc = subprocess.Popen([sys.executable, "-m", "nasprune.cli", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def mid_trial() -> bool:
        if not (tmp_path / "search.db").exists():
            return False
        try:
            trials = _trials(url, "crash")
        except Exception:  # the study is still being created
            return False
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        # Kill inside the evaluation, once the running trial has drawn all its ratios
        # (a kill between two suggest calls leaves a partial parameter set behind).
        return (len(done) >= 3 and len(running) == 1
                and len(running[0].params) == len(done[0].params))

    try:
        _wait(proc, mid_trial)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    before = _trials(url, "crash")
    finished = {t.number: (t.params, t.value, t.user_attrs["keep"]) for t in before
                if t.state == TrialState.COMPLETE}
    orphans = [t for t in before if t.state == TrialState.RUNNING]
    assert len(finished) >= 3 and len(orphans) == 1
    orphan = orphans[0]
    assert len(finished) < TRIALS  # the kill really happened before the end
    # No result file yet. (A kill inside a transaction leaves SQLite's hot journal
    # search.db-journal: the next open rolls it back, which the resume below goes through.)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("search.db")] == []

    # Resume: the very same command.
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    after = {t.number: t for t in _trials(url, "crash")}
    # every trial finished before the kill is still there, unchanged
    for number, (params, value, keep) in finished.items():
        t = after[number]
        assert t.state == TrialState.COMPLETE
        assert (t.params, t.value, t.user_attrs["keep"]) == (params, value, keep)
    # the interrupted trial is failed, and re-run once with the same parameters
    assert after[orphan.number].state == TrialState.FAIL
    retries = [t for t in after.values() if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retries) == 1
    # (the same parameters; if the kill still landed between two suggest calls, the
    # ratios drawn so far are kept and only the missing ones are drawn afresh)
    assert retries[0].state == TrialState.COMPLETE
    assert orphan.params.items() <= retries[0].params.items()
    assert len(retries[0].params) == len(next(iter(finished.values()))[0])
    # exactly the requested number of complete trials, nothing left running or queued
    states = [t.state for t in after.values()]
    assert states.count(TrialState.COMPLETE) == TRIALS == doc["trials"]
    assert states.count(TrialState.RUNNING) == states.count(TrialState.WAITING) == 0
    assert sorted(after) == list(range(len(after)))  # trial numbers dense and unique
    best = max((t for t in after.values() if t.state == TrialState.COMPLETE),
               key=lambda t: (t.value, -t.number))
    assert doc["ratios"] == best.user_attrs["prune_ratios"]
    # the re-run trial scored what any evaluation of those ratios scores
    model = nasprune.load(checkpoint).eval()
    evaluator = Proxy(model, digits, bn_batches=2, val_size=128, finetune_steps=60,
                          device="cpu", seed=0)
    assert retries[0].value == evaluator.score(retries[0].user_attrs["prune_ratios"])


def test_heartbeat_settings_from_the_environment(monkeypatch):
    from nasprune.search.study import heartbeat_settings

    monkeypatch.delenv("NASPRUNE_HEARTBEAT_INTERVAL", raising=False)
    monkeypatch.delenv("NASPRUNE_GRACE_PERIOD", raising=False)
    assert heartbeat_settings() == (5, 20)
    monkeypatch.setenv("NASPRUNE_HEARTBEAT_INTERVAL", "2")
    monkeypatch.setenv("NASPRUNE_GRACE_PERIOD", "7")
    assert heartbeat_settings() == (2, 7)
    storage = open_storage("sqlite:///:memory:")
    assert storage.get_heartbeat_interval() == 2 and storage.grace_period == 7
    assert open_storage("sqlite:///:memory:", heartbeat_interval=0).get_heartbeat_interval() \
        is None
    monkeypatch.setenv("NASPRUNE_GRACE_PERIOD", "2")
    with pytest.raises(NaspruneError, match="GRACE_PERIOD .* must be longer"):
        heartbeat_settings()
    monkeypatch.setenv("NASPRUNE_GRACE_PERIOD", "soon")
    with pytest.raises(NaspruneError, match="NASPRUNE_GRACE_PERIOD must be .* got 'soon'"):
        open_storage("sqlite:///:memory:")


SAVER = """
import sys, torch, nasprune
torch.set_num_threads(1)
model = nasprune.create_model("digitscnn", in_channels=1, width=96)
k = 0
while True:
    k += 1
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(k))
    nasprune.save(model, sys.argv[1], meta={"k": k})
    print(k, flush=True)
"""


@pytest.mark.parametrize("saves_before_kill, extra_delay", [(2, 0.0), (4, 0.013), (3, 0.004)])
def test_sigkill_during_save_keeps_the_old_or_the_new_checkpoint(
        tmp_path, saves_before_kill, extra_delay):
    target = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(saves_before_kill):  # let some saves complete (overwrites follow)
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
        time.sleep(extra_delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    # An interrupted overwrite leaves the previous save or the new one, never neither:
    # load succeeds and what it returns is one complete save (weights and meta agree on k).
    model = nasprune.load(target)
    values = {float(v) for p in model.parameters() for v in p.detach().flatten().unique()}
    assert len(values) == 1
    k = values.pop()
    assert k >= saves_before_kill
    meta = nasprune.checkpoint.read_spec(target)["meta"]
    assert meta["k"] == k


EXPERIMENT = """\
experiment:
  name: crash
  baseline: {epochs: 2}
  finetune: {epochs: 2, bn_batches: 2}
  latency: {batch: 4, warmup: 0, repeats: 1}
  threads: 1
  methods: [unpruned, uniform, global, slimming]
"""


@pytest.mark.slow
def test_sigkill_mid_experiment_resumes_without_trusting_partial_results(tmp_path):
    """Kill `nasprune experiment` right after a method finished; the re-run reuses exactly
    the finished methods and recomputes the rest."""
    (tmp_path / "exp.yaml").write_text(EXPERIMENT)
    run = tmp_path / "run"
    argv = ["experiment", "--config", str(tmp_path / "exp.yaml"), "--out", str(run), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "nasprune.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(proc, lambda: (run / "methods" / "uniform" / "result.json").exists())
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert not (run / "results.json").exists()  # the comparison is written only at the end
    finished = {d.name: (d / "result.json").stat().st_mtime_ns
                for d in (run / "methods").iterdir() if (d / "result.json").exists()}
    assert {"unpruned", "uniform"} <= set(finished) and len(finished) < 4
    for name in finished:  # a committed method directory is complete
        assert json.loads((run / "methods" / name / "result.json").read_text())["status"] == "ok"
        assert (run / "methods" / name / "model" / "spec.json").is_file()

    result = nasprune.experiment(tmp_path / "exp.yaml", run, progress=False, report=False)
    assert sorted(result.skipped) == sorted(finished)
    assert sorted(result.computed) == sorted({"unpruned", "uniform", "global", "slimming"}
                                             - set(finished))
    assert not result.failed
    for name, stamp in finished.items():
        assert (run / "methods" / name / "result.json").stat().st_mtime_ns == stamp
    doc = json.loads((run / "results.json").read_text())
    assert [r["method"] for r in doc["rows"]] == ["unpruned", "uniform", "global", "slimming"]
    assert all(r["status"] == "ok" for r in doc["rows"])
