"""``nasprune workers``: start N ``nasprune search`` processes on one shared study.

Workers coordinate only through the study's database (Optuna's distributed mode): each is
an ordinary ``nasprune search`` with the same ``--storage`` and ``--study``; a worker
starts a trial only while the study holds fewer complete + running trials than
``--trials``, and stops when it holds that many complete ones. On one machine this module
launches them; on a cluster, run the same ``nasprune search`` command (or ``nasprune
workers`` with a smaller N) on every host against a PostgreSQL URL.

Everything is validated once, before any process starts (a bad flag fails one time, not N
times), and the database tables are created up front so the workers do not race to do it.
Each worker gets ``cpus // N`` intra-op threads unless ``--threads`` is given; its output
lines are prefixed with ``[wK]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from nasprune.cli import search
from nasprune.cli._parser import root_parser
from nasprune.errors import NaspruneError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "workers", help="run N `nasprune search` processes on one study (shared --storage "
        "and --study); on a cluster run the same search command on every host",
        usage="nasprune workers [-n N] -- SEARCH_FLAGS...")
    p.add_argument("-n", "--workers", type=int, default=2, metavar="N",
                   help="worker processes on this machine (default 2)")
    p.add_argument("search_args", nargs=argparse.REMAINDER, metavar="SEARCH_FLAGS",
                   help="after --: the flags of `nasprune search`, including --storage URL "
                   "and --study NAME")
    p.set_defaults(func=cmd_workers)


def cmd_workers(args: argparse.Namespace) -> int:
    return run_workers(args.workers, args.search_args)


def resolve_search_args(search_argv: Sequence[str]) -> Any:
    """The :class:`SearchConfig` that ``nasprune search <search_argv>`` would run, and its
    parsed flags (a parser of the search verb alone: the same flags and messages)."""
    parser, sub = root_parser()
    search.add(sub)
    args = parser.parse_args(["search", *search_argv])
    return search.search_config_from_args(args), args


def _pump(stream: IO[str], prefix: str, sink: IO[str], lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            sink.write(prefix + line)
            sink.flush()


def _complete(storage: Any, study: str) -> int | None:
    import optuna
    from optuna.trial import TrialState

    from nasprune.search.study import quiet_optuna

    try:
        with quiet_optuna():
            s = optuna.load_study(study_name=study, storage=storage)
            return len(s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    except Exception:  # not created yet, or a transient database error: just skip a beat
        return None


def _prepare(n: int, search_argv: Sequence[str]) -> tuple[Any, Any, list[str]]:
    """Check everything once; returns the config, the opened storage and the workers' argv."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise NaspruneError(f"--workers must be at least 1, got {n!r}")
    argv = list(search_argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if argv[:1] == ["search"]:
        argv = argv[1:]
    cfg, args = resolve_search_args(argv)
    if cfg.storage is None or not cfg.study:
        raise NaspruneError("workers share one study through a database: pass --storage "
                            "sqlite:///FILE or postgresql://... and --study NAME")
    from nasprune.search import single_process

    if single_process(cfg.strategy):
        raise NaspruneError(f"strategy '{cfg.strategy}' trains one gated network per trial "
                            "and gains nothing from workers: run one `nasprune search`")
    from nasprune.search.study import open_storage

    search.model_and_data(cfg)  # a bad checkpoint or data set fails here once, not in N workers
    storage = open_storage(cfg.storage)  # creates the tables once, before the workers race
    if args.threads is None:
        argv += ["--threads", str(max(1, (os.cpu_count() or 1) // n))]
    if not args.quiet:
        argv.append("--quiet")  # n progress bars would garble each other: one summary here
    return cfg, storage, argv


def _launch(n: int, argv: list[str], lock: threading.Lock, procs: list[subprocess.Popen],
            pumps: list[threading.Thread]) -> None:
    """Start ``n`` search processes, each with threads copying its output, prefixed."""
    for i in range(n):
        p = subprocess.Popen([sys.executable, "-m", "nasprune.cli", "search", *argv],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             bufsize=1)
        procs.append(p)
        for stream, sink in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
            t = threading.Thread(target=_pump, args=(stream, f"[w{i}] ", sink, lock),
                                 daemon=True)
            t.start()
            pumps.append(t)


def _watch(procs: list[subprocess.Popen], storage: Any, cfg: Any, lock: threading.Lock,
           start: float, progress: bool, poll_seconds: float) -> None:
    """Wait for every process; print the study's count of complete trials as it grows."""
    last = None
    while any(p.poll() is None for p in procs):
        time.sleep(poll_seconds)
        done = _complete(storage, cfg.study) if progress else None
        if done is not None and done != last:
            last = done
            with lock:
                print(f"study '{cfg.study}': {done}/{cfg.trials} complete trials "
                      f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)


def run_workers(n: int, search_argv: Sequence[str], progress: bool = True,
                poll_seconds: float = 2.0) -> int:
    """Run ``n`` workers of ``nasprune search <search_argv>``; their worst exit code."""
    cfg, storage, argv = _prepare(n, search_argv)
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    start = time.perf_counter()
    try:
        _launch(n, argv, lock, procs, pumps)
        _watch(procs, storage, cfg, lock, start, progress, poll_seconds)
    except KeyboardInterrupt:
        for p in procs:  # their trials stay RUNNING until the heartbeat fails them
            p.terminate()
        for p in procs:
            p.wait()
        raise
    for t in pumps:
        t.join(timeout=5)
    codes = [p.returncode for p in procs]
    done = _complete(storage, cfg.study)
    print(f"{n} workers finished in {time.perf_counter() - start:.1f} s (exit codes "
          f"{codes}): study '{cfg.study}' holds {done} complete trials")
    bad = [c for c in codes if c != 0]
    return bad[0] if bad else 0
