"""Benchmark: search throughput with several workers, and the storage's cost per trial.

1. Trials per minute of the digits search (``nasprune workers -n N -- --checkpoint ...``:
   N real ``nasprune search`` processes on one study, random strategy, the default
   evaluator: 20 adaptive-BN batches, the whole 269-image validation split) with 1, 2 and 4
   workers, on SQLite and on PostgreSQL. Reported twice: over the wall time of the whole
   command (process start-up, imports and data loading included) and over the window in
   which trials ran (first trial start to last trial end, from the study's timestamps).
2. Storage overhead per trial: ``nasprune.search`` with a no-op evaluator (constant score,
   no pruning) for a fixed number of trials in memory, on SQLite and on PostgreSQL (both
   with heartbeats, as the search opens them); overhead = time per trial minus in-memory.
   An extra SQLite row uses WAL mode with ``synchronous=NORMAL`` (not the default) to show
   what the per-commit fsync costs.

Usage: ``nice .venv/bin/python bench/bench_workers.py [--postgres URL] [--trials 40]
[--workers 1,2,4] [--overhead-trials 100] [--json FILE]``. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

import nasprune
from nasprune.search import Budget
from nasprune.search import search as run_search
from nasprune.search.study import quiet_optuna


def make_checkpoint(directory: Path, epochs: int) -> Path:
    """The digits CNN (default width) trained briefly: the model being searched."""
    torch.manual_seed(0)
    data = nasprune.load_dataset("digits")
    model = nasprune.create_model("digitscnn", in_channels=1)
    nasprune.fit(model, data, epochs=epochs, progress=False, seed=0, device="cpu")
    return nasprune.save(model, directory / "digitscnn",
                         meta={"data": "digits", "input_shape": [1, 8, 8]})


def study_trials(url: str, study: str) -> list:
    with quiet_optuna():
        return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


def throughput(ckpt: Path, url: str, workers: int, trials: int, work: Path) -> dict:
    """Run ``nasprune workers`` once; trials per minute over the wall and the trial window."""
    study = f"bench-{workers}w-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "nasprune.cli", "workers", "-n", str(workers), "--",
           "--checkpoint", str(ckpt), "--storage", url, "--study", study,
           "--trials", str(trials), "--strategy", "random", "--seed", "0",
           "--device", "cpu", "--threads", "1", "--out", str(work / f"{study}.json")]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"workers failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    done = [t for t in study_trials(url, study) if t.state == TrialState.COMPLETE]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    window = (last - first).total_seconds()
    per_trial = sorted(t.user_attrs.get("seconds", float("nan")) for t in done)
    return {"workers": workers, "complete": len(done), "overshoot": len(done) - trials,
            "wall_s": wall, "window_s": window,
            "per_min_wall": 60 * len(done) / wall, "per_min_window": 60 * len(done) / window,
            "median_eval_s": per_trial[len(per_trial) // 2]}


class NoOpEvaluator:
    """Scores every candidate 0.5 at once: what remains is the search loop and the storage."""

    round_to = None
    min_channels = 1
    calls = 0

    def score(self, prune_ratios) -> float:
        self.calls += 1
        return 0.5


def sqlite_wal(url: str):
    """An SQLite storage in WAL mode with synchronous=NORMAL (not nasprune's default)."""
    from sqlalchemy import event

    from nasprune.search.study import open_storage

    storage = open_storage(url)

    def pragmas(conn, _record) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # reconnect with the pragmas
    return storage


def overhead(label: str, storage, trials: int) -> dict:
    """ms per no-op trial over the whole run, and over its first and last quarter."""
    model = nasprune.create_model("digitscnn", in_channels=1)
    data = nasprune.load_dataset("digits")
    counts = {"commit": 0, "select": 0, "write": 0}
    if storage is not None:  # count what the search asks of the database
        from sqlalchemy import event

        from nasprune.search.study import open_storage

        storage = open_storage(storage)

        def on_commit(_conn) -> None:
            counts["commit"] += 1

        def on_statement(_conn, _cursor, statement, *_a) -> None:
            is_select = statement.lstrip().upper().startswith("SELECT")
            counts["select" if is_select else "write"] += 1

        event.listen(storage.engine, "commit", on_commit)
        event.listen(storage.engine, "before_cursor_execute", on_statement)
    start = time.perf_counter()
    result = run_search(model, torch.zeros(1, 1, 8, 8), data, strategy="random",
                        target=Budget(macs=0.5), trials=trials, storage=storage,
                        study=f"overhead-{uuid.uuid4().hex[:8]}", seed=0,
                        evaluator=NoOpEvaluator(), progress=False)
    seconds = time.perf_counter() - start
    assert len(result.trials) == trials
    ends = sorted(t.datetime_complete for t in result.study.get_trials(deepcopy=False))
    q = max(2, trials // 4)

    def ms(span: list) -> float:
        return 1000 * (span[-1] - span[0]).total_seconds() / (len(span) - 1)

    return {"storage": label, "ms_per_trial": 1000 * seconds / trials, "seconds": seconds,
            "first_quarter_ms": ms(ends[:q]), "last_quarter_ms": ms(ends[-q:]),
            **{f"{k}s_per_trial": v / trials for k, v in counts.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--postgres", default=os.environ.get("NASPRUNE_TEST_POSTGRES_URL"),
                   help="PostgreSQL URL (default $NASPRUNE_TEST_POSTGRES_URL; skipped if none)")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--overhead-trials", type=int, default=100)
    p.add_argument("--epochs", type=int, default=5, help="training of the searched model")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    counts = [int(v) for v in args.workers.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    ckpt = make_checkpoint(work, args.epochs)
    storages = [("SQLite", f"sqlite:///{work / 'bench.db'}")]
    if args.postgres:
        storages.append(("PostgreSQL", args.postgres))
    rows = []
    for name, url in storages:
        for n in counts:
            r = throughput(ckpt, url, n, args.trials, work)
            r["storage"] = name
            rows.append(r)
            print(f"{name} {n} workers: {r['per_min_window']:.0f} trials/min in the window, "
                  f"{r['per_min_wall']:.0f} over the wall", file=sys.stderr, flush=True)
    n = args.overhead_trials
    over = [overhead("memory", None, n)]
    over += [overhead(name, url, n) for name, url in storages]
    over.insert(2, overhead("SQLite, WAL + synchronous=NORMAL", sqlite_wal(
        f"sqlite:///{work / 'wal.db'}"), n))

    base = {s: next(r for r in rows if r["storage"] == s and r["workers"] == counts[0])
            for s, _ in storages}
    print(f"Machine: {os.cpu_count()}-core CPU, Python {platform.python_version()}, "
          f"torch {torch.__version__}, optuna {optuna.__version__}; load average before "
          f"the run {os.getloadavg()[0]:.1f}. Date: {time.strftime('%Y-%m-%d', time.gmtime())}."
          "\n")
    print(f"| storage | workers | complete trials (asked {args.trials}) | trials/min "
          "(trial window) | speed-up | trials/min (wall, incl. start-up) | median s per "
          "evaluation |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        speedup = r["per_min_window"] / base[r["storage"]]["per_min_window"]
        print(f"| {r['storage']} | {r['workers']} | {r['complete']} | "
              f"{r['per_min_window']:.0f} | {speedup:.2f}× | {r['per_min_wall']:.0f} | "
              f"{r['median_eval_s']:.3f} |")
    print()
    mem = over[0]["ms_per_trial"]
    print(f"| storage ({n} no-op trials) | ms per trial | overhead vs memory | "
          f"ms per trial, first {max(2, n // 4)} | last {max(2, n // 4)} | "
          "commits / SELECTs / writes per trial |")
    print("|---|---:|---:|---:|---:|---:|")
    for o in over:
        sql = ("—" if o["storage"] == "memory" else
               f"{o['commits_per_trial']:.1f} / {o['selects_per_trial']:.1f} / "
               f"{o['writes_per_trial']:.1f}")
        print(f"| {o['storage']} | {o['ms_per_trial']:.1f} | {o['ms_per_trial'] - mem:+.1f} ms "
              f"| {o['first_quarter_ms']:.1f} | {o['last_quarter_ms']:.1f} | {sql} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"throughput": rows, "overhead": over},
                                              indent=1))


if __name__ == "__main__":
    main()
