"""Crash safety with real processes: SIGKILL a search mid-trial, SIGKILL a checkpoint save.

A killed search must lose no finished trial; its running trial is failed through the
storage heartbeat and re-run (same parameters) when the search is resumed, and the study
ends with exactly the requested number of complete trials. A killed ``save`` must never
leave a checkpoint that ``load`` trusts but that holds anything other than one complete save.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import nasprune
from nasprune.errors import NaspruneError
from nasprune.search import Budget, Evaluator
from nasprune.search import search as run_search
from nasprune.search.study import open_storage, quiet_optuna

WORKER = str(Path(__file__).with_name("reliability_worker.py"))
TRIALS = 8


@pytest.fixture(scope="module")
def checkpoint(digits, tmp_path_factory) -> Path:
    """A briefly trained digits CNN on disk, so the scores of candidates differ."""
    torch.manual_seed(0)
    model = nasprune.create_model("digitscnn", in_channels=1, width=8)
    nasprune.fit(model, digits, epochs=1, progress=False, seed=0, device="cpu")
    return nasprune.save(model, tmp_path_factory.mktemp("ck") / "base")


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


def test_sigkill_mid_trial_loses_nothing_and_resume_retries(checkpoint, digits, tmp_path):
    url, study = f"sqlite:///{tmp_path / 'search.db'}", "crash"
    proc = subprocess.Popen(
        [sys.executable, WORKER, "--checkpoint", str(checkpoint), "--storage", url,
         "--study", study, "--trials", str(TRIALS), "--sleep", "0.5", "--heartbeat", "1",
         "--grace", "2", "--strategy", "evolution", "--option", "population=3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def mid_trial() -> bool:
        if not (tmp_path / "search.db").exists():
            return False
        try:
            states = [t.state for t in _trials(url, study)]
        except (KeyError, Exception):  # the study is being created
            return False
        return states.count(TrialState.COMPLETE) >= 3 and states.count(TrialState.RUNNING) == 1

    try:
        _wait(proc, mid_trial)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    before = _trials(url, study)
    finished = {t.number: (t.params, t.value, t.user_attrs["keep"]) for t in before
                if t.state == TrialState.COMPLETE}
    orphans = [t for t in before if t.state == TrialState.RUNNING]
    assert len(finished) >= 3 and len(orphans) == 1
    orphan = orphans[0]
    assert len(finished) < TRIALS  # the kill really happened before the end

    # Resume: the same study, the same storage settings, no artificial sleep.
    model = nasprune.load(checkpoint).eval()
    evaluator = Evaluator(model, digits, bn_batches=2, val_size=128, device="cpu", seed=0)
    result = run_search(model, torch.zeros(1, 1, 8, 8), digits, strategy="evolution",
                        target=Budget(macs=0.5), trials=TRIALS,
                        storage=open_storage(url, heartbeat_interval=1, grace_period=2),
                        study=study, seed=0, evaluator=evaluator, progress=False, population=3)

    after = {t.number: t for t in _trials(url, study)}
    # every trial finished before the kill is still there, unchanged
    for number, (params, value, keep) in finished.items():
        t = after[number]
        assert t.state == TrialState.COMPLETE
        assert (t.params, t.value, t.user_attrs["keep"]) == (params, value, keep)
    # the interrupted trial is failed, and re-run once with the same parameters
    assert after[orphan.number].state == TrialState.FAIL
    retries = [t for t in after.values() if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE and retries[0].params == orphan.params
    # exactly the requested number of complete trials, nothing left running or queued
    states = [t.state for t in after.values()]
    assert states.count(TrialState.COMPLETE) == TRIALS == len(result.trials)
    assert states.count(TrialState.RUNNING) == states.count(TrialState.WAITING) == 0
    assert sorted(after) == list(range(len(after)))  # trial numbers dense and unique
    # the re-run trial scored like any other evaluation of those ratios would
    assert retries[0].value == pytest.approx(evaluator.score(retries[0].user_attrs[
        "prune_ratios"]), abs=0)


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


@pytest.mark.parametrize("saves_before_kill, extra_delay", [(2, 0.0), (4, 0.013)])
def test_sigkill_during_save_never_leaves_a_trusted_partial_checkpoint(
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
    try:
        model = nasprune.load(target)
    except NaspruneError as exc:  # an interrupted overwrite is refused, loudly
        assert "sha256" in str(exc) or "weights" in str(exc)
        return
    # Anything load accepts is one complete save: every weight and the meta agree on k.
    values = {float(v) for p in model.parameters() for v in p.detach().flatten().unique()}
    assert len(values) == 1
    k = values.pop()
    assert k >= saves_before_kill
    meta = nasprune.checkpoint.read_spec(target)["meta"]
    assert meta["k"] == k
