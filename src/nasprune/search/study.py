"""Optuna studies for searches: storage URLs, resume checks, trial counting.

Every trial of a search lives in an Optuna storage: in memory (``storage=None``), SQLite
(``sqlite:///runs/s.db``) or PostgreSQL (``postgresql://user@host/db``), the latter two
shared by any number of worker processes or machines. RDB storages run with heartbeats, so
a trial whose process died is marked failed after ``grace_period`` seconds and retried (a
copy with the same parameters is queued) by the next worker that looks.

A study remembers what it searches (group names, objective, budget) in its user attrs, so
resuming it with another model, budget or objective is a clear error instead of a silently
mixed study.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from nasprune.errors import NaspruneError
from nasprune.search.budget import Budget

try:  # optuna ≥ 4.9 (the old name is deprecated and warns on every storage opened)
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _Retry

    _RETRY_KW = "heartbeat_stale_trial_callback"
except ImportError:  # pragma: no cover - older optuna
    from optuna.storages import RetryFailedTrialCallback as _Retry

    _RETRY_KW = "failed_trial_callback"

HEARTBEAT_INTERVAL = 5  # seconds between a running trial's heartbeats
GRACE_PERIOD = 20  # a trial silent this long belongs to a dead worker
MAX_RETRY = 3  # how often a dead worker's trial is queued again


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO and warns about experimental features: silence both."""
    logger = logging.getLogger("optuna")
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", module="optuna")
            yield
    finally:
        optuna.logging.set_verbosity(level)
        logger.disabled = False


def heartbeat_settings() -> tuple[int, int]:
    """(seconds between heartbeats, seconds of silence after which a trial counts as dead).

    ``HEARTBEAT_INTERVAL`` / ``GRACE_PERIOD`` unless the environment variables
    ``NASPRUNE_HEARTBEAT_INTERVAL`` / ``NASPRUNE_GRACE_PERIOD`` say otherwise — e.g. a longer
    grace for workers on a slow network, or seconds in crash tests. All workers of a study
    should use the same values.
    """
    values = []
    for var, default in (("NASPRUNE_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL),
                         ("NASPRUNE_GRACE_PERIOD", GRACE_PERIOD)):
        text = os.environ.get(var, "").strip()
        try:
            value = int(text) if text else default
        except ValueError:
            value = 0
        if value < 1:
            raise NaspruneError(f"{var} must be a whole number of seconds ≥ 1, got '{text}'")
        values.append(value)
    if values[1] <= values[0]:
        raise NaspruneError(f"NASPRUNE_GRACE_PERIOD ({values[1]} s) must be longer than "
                            f"NASPRUNE_HEARTBEAT_INTERVAL ({values[0]} s)")
    return values[0], values[1]


def open_storage(url: str | optuna.storages.BaseStorage | None,
                 heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> Any:
    """``None`` (in memory), a storage object, or an RDB URL opened with heartbeats.

    ``heartbeat_interval``/``grace_period`` default to :func:`heartbeat_settings`;
    ``heartbeat_interval=0`` opens the storage without heartbeats.
    """
    if url is None or isinstance(url, optuna.storages.BaseStorage):
        return url
    if heartbeat_interval is None or grace_period is None:
        interval, grace = heartbeat_settings()
        heartbeat_interval = interval if heartbeat_interval is None else heartbeat_interval
        grace_period = grace if grace_period is None else grace_period
    if not isinstance(url, str) or "://" not in url:
        raise NaspruneError(
            f"storage must be a database URL such as sqlite:///runs/search.db or "
            f"postgresql://user@host/db, got {url!r}")
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise NaspruneError(f"unsupported storage '{scheme}': use sqlite:///FILE or "
                            "postgresql://...")
    if scheme == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        parent = os.path.dirname(os.path.abspath(path)) if path and path != ":memory:" else ""
        if parent and not os.path.isdir(parent):
            raise NaspruneError(f"storage directory {parent} does not exist (for {url})")
    kwargs: dict[str, Any] = {}
    try:
        with quiet_optuna():
            if heartbeat_interval:
                kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                              **{_RETRY_KW: _Retry(max_retry=MAX_RETRY)})
            return _create_rdb_storage(url, kwargs)
    except Exception as exc:  # sqlalchemy/driver errors come in many types
        # One line (drivers add hints and links on more lines), and never the password.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise NaspruneError(f"cannot open storage {_safe_url(url)}: {type(exc).__name__}: "
                            f"{first}") from exc


def _create_rdb_storage(url: str, kwargs: dict[str, Any], attempts: int = 6) -> Any:
    """``RDBStorage(url)``, retried when workers race to create the schema of a new database.

    Several workers started at once on an empty PostgreSQL database all try to create
    Optuna's tables; the losers get a unique-violation or "already exists" error. The
    tables exist by then, so opening again succeeds. Connection errors are not retried.
    """
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            return RDBStorage(url, **kwargs)
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _safe_url(url: str) -> str:
    """``url`` with its password masked, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..."


def open_study(storage: Any, name: str | None, directions: list[str], sampler: Any,
               meta: dict[str, Any]) -> optuna.Study:
    """Create or load (``load_if_exists``) a study and check it searches the same thing."""
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise NaspruneError(f"study name must be a non-empty string, got {name!r}")
    try:
        with quiet_optuna():
            study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                        directions=directions, load_if_exists=True)
    except ValueError as exc:
        raise NaspruneError(f"cannot open study '{name}': {exc}") from exc
    except Exception as exc:
        raise NaspruneError(f"cannot open study '{name}': {type(exc).__name__}: {exc}") from exc
    stored = study.user_attrs.get("nasprune")
    if stored is None:
        study.set_user_attr("nasprune", meta)
        study.set_user_attr("budget", meta["budget"])
        return study
    if [d.name.lower() for d in study.directions] != [d.lower() for d in directions]:
        raise NaspruneError(f"study '{study.study_name}' was created for objective "
                            f"'{stored.get('objective')}', not '{meta['objective']}'")
    for key, what in (("groups", "model (its channel groups differ)"),
                      ("objective", "objective"), ("budget", "budget"),
                      ("space", "search space"), ("rungs", "rung setting"),
                      ("bounds", "keep bounds")):
        if stored.get(key) != meta.get(key):
            raise NaspruneError(
                f"study '{study.study_name}' belongs to a different {what}: stored "
                f"{_short(stored.get(key))}, now {_short(meta.get(key))}; use another "
                "study name")
    return study


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def budget_dict(budget: Budget) -> dict[str, float | None]:
    d = asdict(budget)
    if d["speedup"] is None:
        del d["speedup"]  # studies stored before speed-up budgets existed still match
    return d


def finished(t: FrozenTrial) -> bool:
    """Whether ``t`` counts towards ``trials``: complete, or stopped early at a rung (a
    PRUNED trial with rung scores) — not a warm-start copy skipped unscored."""
    return t.state == TrialState.COMPLETE or (t.state == TrialState.PRUNED
                                              and bool(t.user_attrs.get("rung_scores")))


def count(study: optuna.Study) -> tuple[int, int, int]:
    """(finished, running, waiting) trials in the storage right now; finished: see
    :func:`finished`, i.e. every candidate scored."""
    trials = study.get_trials(deepcopy=False)
    n = {s: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
                        TrialState.WAITING)}
    for t in trials:
        if t.state == TrialState.PRUNED and not finished(t):
            continue
        if t.state in n:
            n[t.state] += 1
    return (n[TrialState.COMPLETE] + n[TrialState.PRUNED], n[TrialState.RUNNING],
            n[TrialState.WAITING])


def fail_stale(study: optuna.Study) -> None:
    """Mark trials of dead workers failed (heartbeat storages; queues their retries)."""
    with quiet_optuna():
        optuna.storages.fail_stale_trials(study)  # a no-op without heartbeats
