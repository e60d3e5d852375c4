"""``bayes`` (Gaussian-process BO with expected improvement) and ``tpe``: Optuna's own.

``bayes`` is Optuna's ``GPSampler`` (Matérn-5/2 GP, log expected improvement for one
objective, log EHVI for several; needs torch and scipy, both dependencies of nasprune).
``tpe`` is the multivariate Tree-structured Parzen Estimator with the constant liar, so
parallel workers do not all propose the same point. Both model the function from the raw
parameters to the score; the objective's projection onto the budget is deterministic, so
that function is well defined (constant along rays, since projection rescales).

Both are wrapped in :class:`TrialSeeded`, which reseeds the sampler's random state from
``(seed, trial.number)`` before each trial: the same seed reproduces a study, a resumed
study does not replay its first proposals, and workers sharing a seed still differ.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler, GPSampler, TPESampler

from nasprune.errors import NaspruneError
from nasprune.search.strategies.base import check_options
from nasprune.search.strategies.learned import seed_for
from nasprune.search.strategies.random import UniformSampler

if TYPE_CHECKING:
    from collections.abc import Sequence

    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial, TrialState


def _reseed(obj: Any, seed: int, seen: set[int] | None = None) -> None:
    """Reseed every numpy RandomState an Optuna sampler (and its sub-samplers) holds."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    for i, value in enumerate(vars(obj).values()):
        rng = getattr(value, "rng", None)  # optuna's LazyRandomState
        if isinstance(rng, np.random.RandomState):
            rng.seed(seed_for(seed, i))
        elif isinstance(value, np.random.RandomState):
            value.seed(seed_for(seed, i))
        elif isinstance(value, BaseSampler):
            _reseed(value, seed_for(seed, i), seen)


class TrialSeeded(BaseSampler):
    """Delegates to ``inner``, reseeding its random state from ``(seed, trial.number)``."""

    def __init__(self, inner: BaseSampler, seed: int | None) -> None:
        self.inner = inner
        self.seed = seed

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if self.seed is not None:
            _reseed(self.inner, seed_for(self.seed, trial.number))
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


class _UniformIndependent(UniformSampler):
    """Startup draws for the GP: each parameter is its entry of ``random``'s vector."""

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        rng = np.random.default_rng(seed_for(self.seed, trial.number))
        keep = self.lower + rng.random(self.space.dim) * (self.upper - self.lower)
        if param_name in self.names:
            return float(keep[self.names.index(param_name)])
        return super().sample_independent(study, trial, param_name, param_distribution)


def make_gp(space: Any, seed: int | None = None, **options: Any) -> BaseSampler:
    """Factory for ``bayes``. Options: ``n_startup_trials`` (10), ``deterministic_objective``
    (True: the proxy score of a candidate is deterministic, so the GP need not fit noise —
    measured better on digits at 25 % MACs, see BENCHMARKS.md).

    The startup trials are the same uniform vectors ``random`` draws (paired comparison).
    """
    check_options(options, ("n_startup_trials", "deterministic_objective"), "bayes")
    startup = options.get("n_startup_trials", 10)
    if not isinstance(startup, int) or startup < 1:
        raise NaspruneError(f"strategy option n_startup_trials must be an integer ≥ 1, got {startup!r}")
    with warnings.catch_warnings():  # deterministic_objective is "experimental" in Optuna
        warnings.simplefilter("ignore", ExperimentalWarning)
        inner = GPSampler(
            seed=seed_for(seed, 1),
            independent_sampler=_UniformIndependent(space, seed=seed),
            n_startup_trials=startup,
            deterministic_objective=bool(options.get("deterministic_objective", True)),
            warn_independent_sampling=False,
        )
    return TrialSeeded(inner, seed)


def make_tpe(space: Any, seed: int | None = None, **options: Any) -> BaseSampler:
    """Factory for ``tpe``. Options: ``n_startup_trials`` (10), ``n_ei_candidates`` (24),
    ``multivariate`` (True), ``constant_liar`` (True)."""
    check_options(options, ("n_startup_trials", "n_ei_candidates", "multivariate", "constant_liar"),
           "tpe")
    inner = TPESampler(
        seed=seed_for(seed, 1),
        n_startup_trials=options.get("n_startup_trials", 10),
        n_ei_candidates=options.get("n_ei_candidates", 24),
        multivariate=options.get("multivariate", True),
        constant_liar=options.get("constant_liar", True),
    )
    return TrialSeeded(inner, seed)
