"""The contract every registered search strategy keeps (like Optuna's ``SamplerTestCase``).

One parametrized class runs for each name of :func:`nasprune.search.strategy_names` and each
search space of :func:`nasprune.search.spaces.space_names`, so a new strategy (or space) is
checked as soon as it is registered: its proposals lie within the space's
bounds, the same seed gives the same proposals (and another seed other ones), a fresh
sampler carries on a study reloaded from SQLite from the stored trials alone, every
proposal meets the MACs budget once projected, and a misspelt option is a clear error.

The objective is synthetic (``-‖keep - k*‖²`` on the real digits-CNN search space, no
training), so the class is fast and noise-free; the end-to-end search of every strategy is
in ``test_strategies.py``.
"""

from __future__ import annotations

import shutil

import numpy as np
import optuna
import pytest
import torch

import nasprune
from nasprune.errors import NaspruneError
from nasprune.search import Budget, strategy_names
from nasprune.search.space import SearchSpace
from nasprune.search.spaces import make_space, space_names
from nasprune.search.strategies import make_sampler, single_process

X = torch.zeros(1, 1, 8, 8)
TRIALS = 8
# Short warm-ups (and cheap training for the learned samplers), so the learned part of
# every strategy proposes some of the TRIALS trials.
OPTIONS = {
    "evolution": {"population": 3},
    "bayes": {"n_startup_trials": 3},
    "tpe": {"n_startup_trials": 3},
    "rl": {"warmup": 3, "updates_per_trial": 5},
    "gan": {"warmup": 3, "steps": 10},
    "predictor": {"warmup": 3, "ensemble": 2, "candidates": 64},
}
BUDGET = Budget(macs=0.5)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module", params=space_names())
def space(request) -> SearchSpace:
    """Every registered space: the per-group one, the lower-dimensional stage one and the
    blocks one (on a ResNet-20: the digits CNN has no blocks to drop)."""
    # Bounds narrower than the defaults, so "within bounds" is a real constraint.
    name = "resnet20" if request.param == "blocks" else "digitscnn"
    return make_space(request.param, nasprune.create_model(name, in_channels=1), X,
                      min_keep=0.3, max_keep=0.9)


def _target(space: SearchSpace) -> np.ndarray:
    return np.random.default_rng(100).uniform(0.35, 0.85, space.dim)


def _objective(space: SearchSpace, project: bool = False):
    """Suggest, (optionally) project onto BUDGET, store ``keep`` as search() does, score."""
    target = _target(space)

    def objective(trial: optuna.Trial) -> float:
        raw = np.array([trial.suggest_float(space.param_name(i), space.lower[i],
                                            space.upper[i]) for i in range(space.dim)])
        trial.set_user_attr("raw", raw.tolist())
        keep = space.project(raw, BUDGET) if project else raw
        trial.set_user_attr("keep", keep.tolist())
        return -float(((keep - target) ** 2).sum())

    return objective


def _proposals(study: optuna.Study, space: SearchSpace) -> np.ndarray:
    return np.array([space.keep_from_params(t.params) for t in study.trials])


@pytest.mark.parametrize("name", strategy_names())
class TestStrategyContract:
    """What search() relies on from every strategy."""

    def sampler(self, name: str, space: SearchSpace, seed: int | None, **extra):
        if single_process(name):
            pytest.skip(f"'{name}' is a procedure run by search(), not a learning sampler: "
                        "its contract is checked end to end in test_strategies.py and "
                        "test_strategies_learned.py")
        return make_sampler(name, space, seed, **{**OPTIONS.get(name, {}), **extra})

    @staticmethod
    def per_group_only(space: SearchSpace) -> None:
        """Seeding and deduplication are the sampler's own, whatever the space: checked once."""
        if space.kind != "per-group":
            pytest.skip("space-independent: checked on the per-group space")

    def run(self, name, space, seed, trials=TRIALS, project=False) -> optuna.Study:
        study = optuna.create_study(direction="maximize",
                                    sampler=self.sampler(name, space, seed))
        study.optimize(_objective(space, project), n_trials=trials)
        return study

    def test_is_a_name_search_accepts(self, name) -> None:
        from nasprune.search.strategies import check_strategy

        check_strategy(name)  # no error

    def test_proposals_lie_within_the_bounds(self, name, space) -> None:
        proposals = _proposals(self.run(name, space, 0), space)
        assert proposals.shape == (TRIALS, space.dim)
        assert np.all(proposals >= space.lower) and np.all(proposals <= space.upper), name

    def test_never_repeats_a_proposal(self, name, space) -> None:
        """A repeated keep vector is a wasted evaluation (the score is already known)."""
        self.per_group_only(space)
        proposals = _proposals(self.run(name, space, 0, trials=12), space)
        assert len({tuple(p) for p in proposals}) == len(proposals), name

    def test_same_seed_same_proposals_other_seed_other_ones(self, name, space) -> None:
        self.per_group_only(space)
        a = _proposals(self.run(name, space, 1), space)
        b = _proposals(self.run(name, space, 1), space)
        c = _proposals(self.run(name, space, 2), space)
        assert np.array_equal(a, b), name
        assert not np.array_equal(a, c), name

    def test_carries_on_a_study_reloaded_from_storage(self, name, space, tmp_path) -> None:
        """A fresh sampler on a reloaded study goes on from the stored trials alone."""
        if space.kind == "blocks":
            pytest.skip("reloading is the sampler's own: checked on the per-group and stage "
                        "spaces (the blocks space's bounds and projection are checked here)")
        url, copy = (f"sqlite:///{tmp_path / f}" for f in ("s.db", "copy.db"))
        first = optuna.create_study(storage=url, study_name="s", direction="maximize",
                                    sampler=self.sampler(name, space, 0))
        first.optimize(_objective(space), n_trials=5)
        stored = _proposals(first, space)
        shutil.copy(tmp_path / "s.db", tmp_path / "copy.db")

        again = optuna.load_study(study_name="s", storage=url,
                                  sampler=self.sampler(name, space, 1))
        again.optimize(_objective(space), n_trials=4)
        reloaded = optuna.load_study(study_name="s", storage=url)
        assert [t.number for t in reloaded.trials] == list(range(9))
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in reloaded.trials)
        everything = _proposals(reloaded, space)
        assert np.array_equal(everything[:5], stored)  # stored trials untouched
        new = everything[5:]
        assert np.all(new >= space.lower) and np.all(new <= space.upper)
        if name != "random":
            # Past its warm-up (3 trials) on the 5 stored ones: not the random draw it
            # would make on an empty study.
            plain = optuna.load_study(study_name="s", storage=copy,
                                      sampler=make_sampler("random", space, 1))
            plain.optimize(_objective(space), n_trials=4)
            assert not np.array_equal(new, _proposals(plain, space)[5:]), name

    def test_every_projected_proposal_meets_the_budget(self, name, space) -> None:
        study = self.run(name, space, 0, project=True)
        for t in study.trials:
            keep = np.array(t.user_attrs["keep"])
            assert np.all(keep >= space.lower - 1e-12) and np.all(keep <= space.upper + 1e-12)
            macs = space.fractions(keep)[0]
            # Dropped blocks may leave the budget out of reach even at full width.
            full = space.kind == "blocks" and np.allclose(space.group_keep(keep),
                                                          space.group_upper)
            assert full or 0.99 * BUDGET.macs <= macs, (name, t.number, macs)
            assert macs <= BUDGET.macs, (name, t.number, macs)

    def test_rejects_unknown_options(self, name, space) -> None:
        self.per_group_only(space)
        with pytest.raises(NaspruneError, match="unknown option 'no_such_option'"):
            self.sampler(name, space, 0, no_such_option=1)
