"""Many workers on one study: real processes on PostgreSQL (3) and SQLite (2).

The workers share nothing but the storage URL and the study name. Checked: trial numbers
never collide, every trial is complete with a value, no candidate is evaluated twice (the
evaluations counted by the workers add up to the complete trials), every worker did some
of the work, and the total is the requested one — or, documented in the README, at most
``workers - 1`` over it when several workers start their last trials at the same moment.
A sampler in one worker learns from the trials the others stored (``study.get_trials``).

The PostgreSQL test runs when ``NASPRUNE_TEST_POSTGRES_URL`` is set (CI: ``.ci/postgres.sh``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

import nasprune
from nasprune.cli import main
from nasprune.search import STRATEGIES, Budget, SearchSpace, make_sampler, single_process
from nasprune.search import search as run_search
from nasprune.search.study import quiet_optuna

WORKER = str(Path(__file__).with_name("reliability_worker.py"))
PG_URL = os.environ.get("NASPRUNE_TEST_POSTGRES_URL")
X = torch.zeros(1, 1, 8, 8)


@pytest.fixture(scope="module")
def checkpoint(digits_cnn_checkpoint: Path) -> Path:
    return digits_cnn_checkpoint


def run_workers(checkpoint: Path, url: str, study: str, workers: int, trials: int,
                strategy: str, options: dict[str, int], sleep: float,
                barrier: Path) -> list[int]:
    """Start ``workers`` processes on one study, wait for all; their evaluation counts."""
    barrier.mkdir()
    cmd = [sys.executable, WORKER, "--checkpoint", str(checkpoint), "--storage", url,
           "--study", study, "--trials", str(trials), "--strategy", strategy,
           "--sleep", str(sleep), "--barrier", str(barrier), "--peers", str(workers)]
    for k, v in options.items():
        cmd += ["--option", f"{k}={v}"]
    procs = [subprocess.Popen(cmd + ["--seed", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    counts = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        found = re.search(r"evaluated (\d+)", out)
        assert found and "done" in out, out + err
        counts.append(int(found.group(1)))
    return counts


def check_study(url: str, study: str, trials: int, workers: int, counts: list[int]) -> None:
    with quiet_optuna():
        all_trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    numbers = [t.number for t in all_trials]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(numbers)))
    # Workers opening a fresh study at once may each queue its warm start: the later
    # copies are skipped unscored (PRUNED), never evaluated twice.
    copies = [t for t in all_trials if t.state == TrialState.PRUNED]
    assert all("warm_start" in t.user_attrs and "keep" not in t.user_attrs for t in copies)
    all_trials = [t for t in all_trials if t.state != TrialState.PRUNED]
    states = {t.state for t in all_trials}
    assert states == {TrialState.COMPLETE}, states  # nothing failed, running or queued
    assert all(t.value is not None and 0.0 <= t.value <= 1.0 for t in all_trials)
    complete = len(all_trials)
    # the total-target rule: at least `trials`, and at most workers - 1 more (see README)
    assert trials <= complete <= trials + workers - 1, complete
    # no candidate evaluated twice, and every worker took part
    assert sum(counts) == complete, (counts, complete)
    assert all(c >= 1 for c in counts), counts
    vectors = {tuple(sorted(t.params.items())) for t in all_trials}
    assert len(vectors) == complete
    # every trial stored what it evaluated and met the budget
    for t in all_trials:
        assert len(t.user_attrs["keep"]) == len(t.params)
        assert t.user_attrs["macs_fraction"] <= 0.5 + 0.01


@pytest.mark.skipif(not PG_URL, reason="NASPRUNE_TEST_POSTGRES_URL is not set")
def test_three_workers_on_postgresql(checkpoint, tmp_path):
    study = f"workers-pg-{uuid.uuid4().hex[:12]}"
    counts = run_workers(checkpoint, PG_URL, study, workers=3, trials=30,
                         strategy="evolution", options={"population": 6}, sleep=0.1,
                         barrier=tmp_path / "barrier")
    check_study(PG_URL, study, 30, 3, counts)


def _max_overlap(trials) -> int:
    """The most trials that were running at the same moment."""
    events = sorted([(t.datetime_start, 1) for t in trials]
                    + [(t.datetime_complete, -1) for t in trials])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


@pytest.mark.slow
def test_two_workers_on_sqlite_with_the_workers_verb(checkpoint, tmp_path, capsys):
    """`nasprune workers -n 2 -- <search flags>`: two real `nasprune search` processes."""
    url = f"sqlite:///{tmp_path / 'verb.db'}"
    out = tmp_path / "best.json"
    code = main(["workers", "-n", "2", "--", "--checkpoint", str(checkpoint),
                 "--storage", url, "--study", "verb", "--trials", "12",
                 "--finetune-steps", "60", "--bn-batches", "2", "--val-size", "128",
                 "--strategy", "evolution", "--option", "population=4", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "[w0] searched evolution" in printed.out and "[w1] searched evolution" in printed.out
    assert "2 workers finished" in printed.out and "exit codes [0, 0]" in printed.out
    with quiet_optuna():
        trials = optuna.load_study(study_name="verb", storage=url).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 12 <= len(complete) <= 13
    # Both workers may queue the fresh study's warm start at once: the later copies are
    # skipped unscored (PRUNED), never evaluated twice.
    assert all(t.state == TrialState.PRUNED and "warm_start" in t.user_attrs
               and "keep" not in t.user_attrs for t in trials if t not in complete)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({tuple(sorted(t.params.items())) for t in complete}) == len(complete)
    assert _max_overlap(complete) == 2  # the two workers really ran trials side by side
    doc = json.loads(out.read_text())
    best = max(complete, key=lambda t: (t.value, -t.number))
    assert doc["ratios"] == best.user_attrs["prune_ratios"]


@pytest.mark.parametrize("argv, needle", [
    (["-n", "0", "--", "--checkpoint", "{ck}"], "at least 1"),
    (["-n", "2", "--", "--checkpoint", "{ck}"], "--storage"),
    (["-n", "2", "--", "--checkpoint", "{ck}", "--storage", "sqlite:///{tmp}/x.db"],
     "--study NAME"),
    (["-n", "2", "--", "--checkpoint", "{ck}", "--storage", "sqlite:///{tmp}/x.db",
      "--study", "s", "--strategy", "differentiable"], "differentiable"),
    (["-n", "2", "--", "--checkpoint", "{ck}", "--storage", "sqlite:///{tmp}/x.db",
      "--study", "s", "--target-macs", "2"], "target_macs"),
    (["-n", "2", "--", "--checkpoint", "{ck}", "--storage", "ftp://x", "--study", "s"],
     "unsupported storage"),
    (["-n", "2", "--", "--checkpoint", "{tmp}/missing", "--storage", "sqlite:///{tmp}/x.db",
      "--study", "s"], "missing"),
    (["-n", "2", "--", "--checkpoint", "{ck}", "--data", "imagefolder", "--data-dir",
      "{tmp}/none", "--storage", "sqlite:///{tmp}/x.db", "--study", "s"], "does not exist"),
])
def test_workers_verb_rejects_bad_input_before_starting(checkpoint, argv, needle, tmp_path,
                                                        capsys):
    argv = [a.format(tmp=tmp_path, ck=checkpoint) for a in argv]
    assert main(["workers", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no database, no result: nothing started


# ------------------------------------------------- samplers learn from others' trials

LEARNED = [s for s in STRATEGIES.names() if s != "random" and not single_process(s)]
OPTIONS = {"evolution": {"population": 3}, "bayes": {"n_startup_trials": 3},
           "tpe": {"n_startup_trials": 3}, "rl": {"warmup": 3}, "gan": {"warmup": 3},
           "predictor": {"warmup": 3}}


@pytest.fixture(scope="module")
def worker_a(checkpoint, digits, tmp_path_factory):
    """Worker A: a finished 6-trial search in an SQLite study (each test gets a copy)."""
    db = tmp_path_factory.mktemp("a") / "a.db"
    url = f"sqlite:///{db}"
    model = nasprune.load(checkpoint).eval()
    run_search(model, X, digits, strategy="random", target=Budget(macs=0.5), trials=6,
               storage=url, study="shared", seed=0, progress=False, bn_batches=2,
               val_size=128, device="cpu", rungs=None)
    return db, model


def _copy_study(source: optuna.Study, scores: list[float] | None = None) -> optuna.Study:
    """An in-memory study holding ``source``'s trials (optionally with other scores)."""
    with quiet_optuna():
        copy = optuna.create_study(directions=source.directions)
        for k, v in source.user_attrs.items():
            copy.set_user_attr(k, v)
        for i, t in enumerate(source.get_trials(states=(TrialState.COMPLETE,))):
            value = t.value if scores is None else scores[i]
            copy.add_trial(optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, value=value,
                user_attrs=t.user_attrs))
    return copy


def _propose(study: optuna.Study, strategy: str, space: SearchSpace) -> np.ndarray:
    """Worker B's next proposal: a fresh sampler (no memory) asks the study."""
    with quiet_optuna():
        study.sampler = make_sampler(strategy, space, 0, **OPTIONS.get(strategy, {}))
        trial = study.ask()
        # as the search objective does: one suggest_float per group, in order
        return np.array([trial.suggest_float(space.param_name(i), float(space.lower[i]),
                                             float(space.upper[i])) for i in range(space.dim)])


@pytest.mark.parametrize("strategy", LEARNED)
def test_a_new_worker_learns_from_the_stored_trials(worker_a, strategy, tmp_path):
    db, model = worker_a
    url = f"sqlite:///{shutil.copy(db, tmp_path / 'b.db')}"
    space = SearchSpace(model, X)
    with quiet_optuna():
        stored = optuna.load_study(study_name="shared", storage=url)
    assert len(stored.trials) == 6
    scores = [t.value for t in stored.get_trials(states=(TrialState.COMPLETE,))]
    in_b = _propose(optuna.load_study(study_name="shared", storage=url), strategy, space)
    # the same proposal as a sampler that holds A's trials itself ...
    same = _propose(_copy_study(stored), strategy, space)
    np.testing.assert_array_equal(in_b, same)
    # ... and it depends on what A measured: other scores for the same trials change it
    other = _propose(_copy_study(stored, [1.0 - s for s in scores]), strategy, space)
    assert not np.array_equal(in_b, other)


@pytest.mark.skipif(not PG_URL, reason="NASPRUNE_TEST_POSTGRES_URL is not set")
def test_workers_opening_a_brand_new_postgresql_database_at_once_all_succeed():
    """Every worker of a new cluster creates Optuna's schema at the same instant: none fails."""
    import threading

    import psycopg
    from sqlalchemy.engine import make_url

    from nasprune.search.study import open_storage

    base = make_url(PG_URL)
    name = f"race_{uuid.uuid4().hex[:10]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    start, errors, opened = threading.Barrier(6), [], []

    def worker() -> None:
        start.wait()
        try:
            opened.append(open_storage(url, heartbeat_interval=0))
        except Exception as exc:  # the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == [] and len(opened) == 6
        study = optuna.create_study(storage=opened[0], study_name="race")
        assert optuna.load_study(storage=opened[-1], study_name="race")._study_id == study._study_id
    finally:
        for st in opened:
            st.engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
