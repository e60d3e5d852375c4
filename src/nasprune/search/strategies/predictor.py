"""``predictor`` — a surrogate of the score fitted on finished trials proposes the next vector.

An ensemble of small regressors (gradient-boosted trees by default, or MLPs) is fitted on
the completed trials' projected keep vectors (rescaled to [0, 1] per group) and standardised
scores; each member sees a bootstrap resample, so the members' spread estimates the
surrogate's uncertainty. A proposal scores many candidates — uniform draws and Gaussian
mutations of the best trials — by ``mean + kappa · std`` (an upper confidence bound: high
predicted score or high uncertainty) and returns the best; with probability ``epsilon`` it
returns a uniform draw instead.

The surrogate is trained on *projected* vectors (what was evaluated), so candidates are
projected onto the budget before they are scored when the study records its budget
(``study.user_attrs["budget"]``); the raw candidate is returned and the objective projects it
to the same vector. Without a recorded budget candidates are scored as they are. The
surrogate is refitted from scratch on the stored trials whenever their number changes, so
proposals depend only on the storage and the seed.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from nasprune.errors import NaspruneError
from nasprune.search.strategies.learned import (
    History,
    LearnedSampler,
    check_fraction,
    check_positive,
    construct,
    from_unit,
    seed_for,
    study_budget,
    to_unit,
)

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial

MODELS = ("gbr", "mlp")


def _regressor(kind: str, seed: int | None) -> Any:
    if kind == "gbr":
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(n_estimators=100, max_depth=3, learning_rate=0.05,
                                         subsample=0.8, random_state=seed)
    from sklearn.neural_network import MLPRegressor

    return MLPRegressor(hidden_layer_sizes=(32, 32), alpha=1e-3, learning_rate_init=3e-3,
                        max_iter=400, random_state=seed)


class PredictorSampler(LearnedSampler):
    """Surrogate-guided proposals with UCB exploration; see the module docstring."""

    def __init__(
        self,
        space: Any,
        seed: int | None = None,
        warmup: int | None = 10,
        model: str = "gbr",
        ensemble: int = 5,
        candidates: int = 256,
        mutate: float = 0.5,
        sigma: float = 0.1,
        elite: int = 5,
        kappa: float = 1.0,
        epsilon: float = 0.05,
        project: bool = True,
    ) -> None:
        super().__init__(space, seed, warmup)
        if model not in MODELS:
            raise NaspruneError(f"predictor model must be one of {', '.join(MODELS)}, got {model!r}")
        for name, value in (("ensemble", ensemble), ("candidates", candidates),
                            ("elite", elite), ("sigma", sigma)):
            check_positive(name, value)
        check_positive("kappa", kappa, allow_zero=True)
        check_fraction("mutate", mutate)
        check_fraction("epsilon", epsilon)
        self.model, self.ensemble, self.candidates = model, int(ensemble), int(candidates)
        self.mutate, self.sigma, self.elite = mutate, sigma, int(elite)
        self.kappa, self.epsilon, self.project = kappa, epsilon, project
        self._fitted: tuple[int, list[Any]] | None = None

    def warmup_trials(self, study: Study) -> int:
        return max(3, super().warmup_trials(study))  # a surrogate needs a few points

    def fit(self, history: History) -> list[Any]:
        """The ensemble fitted on bootstrap resamples of the stored trials."""
        n = len(history)
        if self._fitted is not None and self._fitted[0] == n:
            return self._fitted[1]
        x = history.unit(self.lower, self.upper)
        y = (history.score - history.score.mean()) / (history.score.std() or 1.0)
        rng = np.random.default_rng(seed_for(self.seed, 5, n))
        members = []
        for m in range(self.ensemble):
            idx = rng.integers(0, n, n) if self.ensemble > 1 else np.arange(n)
            reg = _regressor(self.model, seed_for(self.seed, 6, n, m))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MLP convergence chatter on tiny data
                reg.fit(x[idx], y[idx])
            members.append(reg)
        self._fitted = (n, members)
        return members

    def candidate_pool(self, history: History, rng: np.random.Generator) -> np.ndarray:
        """Uniform draws plus Gaussian mutations of the ``elite`` best trials (unit space)."""
        dim = self.space.dim
        n_mut = int(round(self.mutate * self.candidates))
        pool = [rng.random((self.candidates - n_mut, dim))]
        if n_mut:
            best = history.unit(self.lower, self.upper)[np.argsort(-history.score)[: self.elite]]
            parents = best[rng.integers(0, len(best), n_mut)]
            pool.append(np.clip(parents + self.sigma * rng.standard_normal((n_mut, dim)), 0, 1))
        return np.concatenate(pool)

    def propose(
        self, study: Study, trial: FrozenTrial, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        if rng.random() < self.epsilon:
            return from_unit(rng.random(self.space.dim), self.lower, self.upper)
        members = self.fit(history)
        raw = from_unit(self.candidate_pool(history, rng), self.lower, self.upper)
        budget = study_budget(study) if self.project else None
        evaluated = raw
        if budget is not None:
            # As the objective does: exact fit for one objective, only scale-down for two.
            exact = len(study.directions) == 1
            evaluated = np.stack([self.space.project(k, budget, exact=exact) for k in raw])
        x = to_unit(evaluated, self.lower, self.upper)
        preds = np.stack([m.predict(x) for m in members])
        ucb = preds.mean(axis=0) + self.kappa * preds.std(axis=0)
        return raw[int(np.argmax(ucb))]


def make(space: Any, seed: int | None = None, **options: Any) -> PredictorSampler:
    """Factory for the ``predictor`` strategy (options: see :class:`PredictorSampler`)."""
    return construct(PredictorSampler, space, seed, options)
