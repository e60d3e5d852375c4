"""``evolution`` — a steady-state genetic algorithm over keep vectors.

The population is the ``population`` best completed trials in the storage (for a
multi-objective study: the best by non-dominated rank, then crowding distance, as in
NSGA-II). Each proposal picks two parents by tournament selection, recombines them
(blend crossover BLX-α, or uniform crossover) with probability ``crossover_prob`` and
applies Gaussian mutation to each gene with probability ``mutation_prob``; at least one gene
always mutates when the child equals a parent, so a child never repeats its parent. Genes live
in the unit cube of the space (``0`` = lower bound, ``1`` = upper bound) and are the
*projected* keep vectors the objective stored, so the GA breeds what was really evaluated.

Steady state (one child per trial, no generations) is what makes the GA work resumed or
with many workers: any worker can breed from whatever the storage holds at that moment.
The first ``population`` trials are uniform random draws (the same as ``random``'s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.study import StudyDirection
from optuna.trial import TrialState

from nasprune.errors import NaspruneError
from nasprune.search.strategies.learned import (
    History,
    LearnedSampler,
    check_fraction,
    check_positive,
    construct,
    from_unit,
    to_unit,
)

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial


def pareto_ranks(values: np.ndarray) -> np.ndarray:
    """Non-dominated sorting rank (0 = Pareto front) of rows, every column maximised."""
    n = len(values)
    ranks = np.full(n, -1)
    remaining = np.arange(n)
    rank = 0
    while len(remaining):
        v = values[remaining]
        ge = (v[:, None, :] >= v[None, :, :]).all(-1)
        gt = (v[:, None, :] > v[None, :, :]).any(-1)
        dominated = (ge & gt).any(0)  # column j is dominated by some row i
        front = remaining[~dominated]
        ranks[front] = rank
        remaining = remaining[dominated]
        rank += 1
    return ranks


def crowding(values: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of the rows (larger = more isolated; ends are infinite)."""
    n, m = values.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(values[:, j], kind="stable")
        span = values[order[-1], j] - values[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (values[order[2:], j] - values[order[:-2], j]) / span
    return dist


class EvolutionSampler(LearnedSampler):
    """Steady-state GA: tournament selection, BLX-α / uniform crossover, Gaussian mutation.

    Options: ``population`` (pool size and random warm-up trials, default 10),
    ``tournament`` (contestants per parent, 3), ``crossover`` ("blend" or "uniform"),
    ``crossover_prob`` (0.9), ``blend_alpha`` (0.3), ``mutation_prob`` (per gene; default
    ``max(1/dim, 0.2)``), ``mutation_sigma`` (standard deviation in unit coordinates, 0.1).
    """

    def __init__(
        self,
        space: Any,
        seed: int | None = None,
        population: int = 10,
        tournament: int = 3,
        crossover: str = "blend",
        crossover_prob: float = 0.9,
        blend_alpha: float = 0.3,
        mutation_prob: float | None = None,
        mutation_sigma: float = 0.1,
    ) -> None:
        if not isinstance(population, int) or population < 2:
            raise NaspruneError(f"strategy option population must be an integer ≥ 2, got {population!r}")
        if not isinstance(tournament, int) or tournament < 1:
            raise NaspruneError(f"strategy option tournament must be an integer ≥ 1, got {tournament!r}")
        if crossover not in ("blend", "uniform"):
            raise NaspruneError(
                f"strategy option crossover must be 'blend' or 'uniform', got {crossover!r}")
        check_fraction("crossover_prob", crossover_prob)
        check_positive("blend_alpha", blend_alpha, allow_zero=True)
        check_positive("mutation_sigma", mutation_sigma)
        if mutation_prob is not None:
            check_fraction("mutation_prob", mutation_prob)
        super().__init__(space, seed=seed, warmup=population)
        self.population = population
        self.tournament = tournament
        self.crossover = crossover
        self.crossover_prob = float(crossover_prob)
        self.blend_alpha = float(blend_alpha)
        self.mutation_prob = (max(1.0 / space.dim, 0.2) if mutation_prob is None
                              else float(mutation_prob))
        self.mutation_sigma = float(mutation_sigma)

    # ------------------------------------------------------------------------------------
    def _pool(self, study: Study, history: History) -> tuple[np.ndarray, np.ndarray]:
        """The population (unit-cube genes) ordered best first, and its fitness ranks."""
        genes = history.unit(self.lower, self.upper)
        if len(study.directions) > 1:
            values = self._all_values(study, history)
            ranks = pareto_ranks(values)
            crowd = np.zeros(len(ranks))
            for r in np.unique(ranks):
                idx = np.where(ranks == r)[0]
                crowd[idx] = crowding(values[idx])
            order = np.lexsort((-crowd, ranks))
        else:
            # Ties (equal scores, common with small validation sets) go to the newest trial,
            # which keeps the population moving instead of freezing on early lucky draws.
            order = np.lexsort((-history.numbers, -history.score))
        order = order[: self.population]
        return genes[order], np.arange(len(order))

    @staticmethod
    def _all_values(study: Study, history: History) -> np.ndarray:
        signs = np.array([1.0 if d == StudyDirection.MAXIMIZE else -1.0
                          for d in study.directions])
        by_number = {t.number: t for t in study.get_trials(deepcopy=False,
                                                          states=(TrialState.COMPLETE,))}
        return np.array([signs * np.asarray(by_number[int(n)].values, dtype=float)
                         for n in history.numbers])

    def _select(self, rank: np.ndarray, rng: np.random.Generator) -> int:
        k = min(self.tournament, len(rank))
        contestants = rng.choice(len(rank), size=k, replace=False)
        return int(contestants[np.argmin(rank[contestants])])

    def propose(self, study: Study, trial: FrozenTrial, history: History,
                rng: np.random.Generator) -> np.ndarray:
        genes, rank = self._pool(study, history)
        a = b = genes[self._select(rank, rng)]
        crossed = len(genes) > 1 and rng.random() < self.crossover_prob
        if crossed:
            b = genes[self._select(rank, rng)]
            if self.crossover == "uniform":
                child = np.where(rng.random(len(a)) < 0.5, a, b)
            else:
                lo, hi = np.minimum(a, b), np.maximum(a, b)
                d = (hi - lo) * self.blend_alpha
                child = rng.uniform(lo - d, hi + d)
        else:
            child = a.copy()
        mutate = rng.random(len(child)) < self.mutation_prob
        # A child equal to a parent (no crossover, or a parent crossed with itself) would
        # repeat a known score: then at least one gene mutates.
        if not mutate.any() and (np.array_equal(child, a) or np.array_equal(child, b)):
            mutate[rng.integers(len(child))] = True
        child = child + mutate * rng.normal(0.0, self.mutation_sigma, len(child))
        return from_unit(np.clip(child, 0.0, 1.0), self.lower, self.upper)


def make(space: Any, seed: int | None = None, **options: Any) -> EvolutionSampler:
    """Factory for the ``evolution`` strategy (options: see :class:`EvolutionSampler`)."""
    return construct(EvolutionSampler, space, seed, options)


__all__ = ["EvolutionSampler", "crowding", "make", "pareto_ranks", "to_unit"]
