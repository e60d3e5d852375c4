"""What a search strategy is: a sampler for the study loop, or a procedure that runs itself.

Every strategy hands ``search()`` an Optuna sampler, so every strategy is stored, resumed and
shared between workers the same way. Most strategies are nothing more (:class:`Strategy`).
A :class:`ProcedureStrategy` finds each trial's keep vector by other means (gradient descent
on channel gates) in the calling process: :meth:`Strategy.propose` returns that vector, the
loop enqueues it as the trial's parameters, and its sampler only replays enqueued trials.
It says so with ``single_process``: a pool of workers gains nothing from it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import optuna
from optuna.samplers import BaseSampler

from nasprune.errors import NaspruneError
from nasprune.search.strategies.learned import seed_for

# A procedure's leading positional arguments; everything after them is a strategy option.
PROCEDURE_ARGS = ("space", "proxy", "budget", "model", "data", "seed")


def check_options(options: dict[str, Any], allowed: tuple[str, ...] | list[str],
                  name: str) -> None:
    """Raise a NaspruneError (with a did-you-mean) for an option strategy ``name`` lacks."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        from nasprune.registry import did_you_mean

        raise NaspruneError(f"unknown option '{unknown[0]}' for strategy '{name}': "
                            f"{did_you_mean(unknown[0], list(allowed))}")


class Strategy:
    """A strategy whose Optuna sampler proposes every trial (``make(space, seed, **options)``)."""

    # True: the strategy runs its own procedure per trial in this process (no worker pool).
    single_process: ClassVar[bool] = False

    def __init__(self, name: str, make: Callable[..., BaseSampler]) -> None:
        self.name = name
        self.make = make

    def sampler(self, space: Any, seed: int | None = None, **options: Any) -> BaseSampler:
        """The Optuna sampler of this strategy for ``space``; unknown options are errors."""
        return self.make(space, seed, **options)

    # ``STRATEGIES.get(name)(space, seed, **options)``: the sampler, as before strategies
    # were objects.
    __call__ = sampler

    def propose(self, study: Any, space: Any, proxy: Any, budget: Any, model: Any, data: Any,
                seed: int | None, **options: Any) -> np.ndarray | None:
        """The next trial's keep vector when the strategy runs itself; None: ask the sampler."""
        return None


class ProcedureStrategy(Strategy):
    """A strategy that computes each trial's keep vector itself (see the module docstring).

    ``procedure(space, proxy, budget, model, data, seed, **options) -> keep vector``.
    """

    single_process: ClassVar[bool] = True

    def __init__(self, name: str, procedure: Callable[..., np.ndarray]) -> None:
        super().__init__(name, self._replay_sampler)
        self.procedure = procedure
        self.option_names = tuple(p for p in inspect.signature(procedure).parameters
                                  if p not in PROCEDURE_ARGS)

    def _replay_sampler(self, space: Any, seed: int | None = None,
                        **options: Any) -> BaseSampler:
        check_options(options, self.option_names, self.name)
        return optuna.samplers.RandomSampler(seed=seed)  # only enqueued trials run

    def propose(self, study: Any, space: Any, proxy: Any, budget: Any, model: Any, data: Any,
                seed: int | None, **options: Any) -> np.ndarray:
        """Run the procedure, seeded from ``seed`` and the study's trial count."""
        n = len(study.get_trials(deepcopy=False))
        keep = np.asarray(self.procedure(space, proxy, budget, model, data, seed_for(seed, n),
                                         **options), dtype=float)
        if keep.shape != (space.dim,) or not np.all(np.isfinite(keep)):
            raise NaspruneError(f"procedure '{self.name}' returned no valid keep "
                                f"vector (shape {keep.shape})")
        return np.clip(keep, space.lower, space.upper)


__all__ = ["ProcedureStrategy", "Strategy", "check_options"]
