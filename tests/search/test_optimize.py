"""The trial loop: a trial another worker finished first is not an error of this one."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from nasprune.search._optimize import Progress, optimize
from nasprune.search.study import quiet_optuna


def _study() -> optuna.Study:
    with quiet_optuna():
        return optuna.create_study(direction="maximize",
                                   sampler=optuna.samplers.RandomSampler(seed=0))


@pytest.mark.parametrize("state", [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
def test_a_trial_finished_by_another_worker_is_dropped(state):
    """Two workers can claim one queued trial; the second to tell it gets Optuna's
    "Cannot tell a <STATE> trial". The loop drops that result and goes on."""
    study = _study()
    stolen = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 1:  # the other worker records this trial first
            values = [0.5] if state == TrialState.COMPLETE else None
            study._storage.set_trial_state_values(trial._trial_id, state, values)
            stolen.append(trial.number)
        return x

    optimize(study, objective, trials=3, propose=lambda s: None,
             progress=Progress(study, 3, "t", enabled=False), max_failures=3,
             strategy="random")
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert stolen == [1] and states[1] == state
    assert states.count(TrialState.COMPLETE) == 3  # the loop still ran to the target
    assert len(states) == 3 + (state != TrialState.COMPLETE)
