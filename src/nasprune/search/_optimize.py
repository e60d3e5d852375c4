"""The trial loop of :func:`nasprune.search.search` and its progress (private).

``trials`` is a total, not an increment: the loop runs until the study holds that many
finished trials (complete, or stopped early at a rung), starting one only while finished +
running trials are fewer than the target, so several workers sharing a study stop together and a resumed run continues the
count. One trial per ``study.optimize`` call keeps that check between trials.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nasprune.errors import NaspruneError
from nasprune.search.study import count, fail_stale, finished, quiet_optuna

# Optuna's refusal to record a trial that another process already finished: a ValueError,
# or, when that process failed it as stale and this objective succeeded, the AssertionError
# "Should not reach." from Optuna's logging of the result (optuna/study/_optimize.py).
_TOLD_ELSEWHERE = re.compile(r"Cannot tell a (COMPLETE|PRUNED|FAIL) trial|^Should not reach\.$")

# Called before each trial: the parameters a strategy chose itself, or None (the sampler's).
Propose = Callable[[optuna.Study], "dict[str, float] | None"]


class Progress:
    """The progress bar and failure counts of one loop; Optuna calls it after each trial."""

    def __init__(self, study: optuna.Study, trials: int, desc: str, enabled: bool) -> None:
        from tqdm.auto import tqdm

        complete, _, _ = count(study)
        self.bar = tqdm(total=trials, initial=min(complete, trials), desc=desc,
                        disable=not enabled, unit="trial", dynamic_ncols=True, leave=True)
        self.failed_in_row = 0
        self.failed = 0
        self.last_error = ""

    def __call__(self, study: optuna.Study, t: FrozenTrial) -> None:
        if finished(t):  # complete, or stopped early at a rung
            self.failed_in_row = 0
            self.bar.update(1)
            best = _best_value(study)
            self.bar.set_postfix(trial=t.number, best=f"{best:.4f}" if best is not None else "-",
                                 macs=f"{t.user_attrs.get('macs_fraction', float('nan')):.1%}")
        elif t.state == TrialState.FAIL:
            self.failed_in_row += 1
            self.failed += 1
            self.last_error = t.user_attrs.get("error", "unknown error")

    def close(self) -> None:
        self.bar.close()

    def check_failures(self, max_failures: int) -> None:
        """Stop the search once ``max_failures`` trials in a row failed."""
        if self.failed_in_row >= max_failures:
            raise NaspruneError(f"{self.failed_in_row} trials in a row failed; last error: "
                                f"{self.last_error}")


def _best_value(study: optuna.Study) -> float | None:
    done = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values]
    return max(done) if done else None


def optimize(study: optuna.Study, objective: Callable[[optuna.Trial], Any], trials: int,
             propose: Propose, progress: Progress, max_failures: int, strategy: str) -> None:
    """Run trials until ``study`` holds ``trials`` complete ones (see the module docstring)."""
    with quiet_optuna():
        while True:
            fail_stale(study)
            complete, running, waiting = count(study)
            if complete >= trials:
                return
            if complete + running >= trials:
                # Other workers' trials finish the count — or go stale if their process
                # died, and are then failed and queued again (heartbeats).
                time.sleep(1.0)
                continue
            # Queued trials (the warm start, a dead worker's retry) run first: a procedure
            # proposed now would wait behind them.
            params = propose(study) if not waiting else None
            if params is not None:
                study.enqueue_trial(params, user_attrs={"procedure": strategy})
            try:
                study.optimize(objective, n_trials=1, catch=(Exception,),
                               callbacks=[progress], gc_after_trial=False,
                               show_progress_bar=False)
            except (ValueError, AssertionError) as exc:
                # Two workers can both claim one queued trial (Optuna's WAITING -> RUNNING
                # claim is not exclusive on SQLite under contention); the first to finish
                # records it — scored, skipped as a repeated warm-start copy (PRUNED), or
                # failed as stale — and the other's result is dropped, not an error.
                if not _TOLD_ELSEWHERE.search(str(exc)):
                    raise
            progress.check_failures(max_failures)


__all__ = ["Progress", "optimize"]
