"""Search strategies by name.

``STRATEGIES`` maps a name to a factory ``make(space, seed, **options) -> BaseSampler``: every
strategy is an Optuna sampler proposing one keep ratio per group (parameter
``space.param_name(i)`` in ``[space.lower[i], space.upper[i]]``), so every strategy is stored,
resumed and shared between workers the same way. A sampler rebuilds what it knows from the
study's completed trials at each proposal, reading the *projected* keep vector the objective
stored in ``trial.user_attrs["keep"]`` (what was really evaluated) and the score from
``trial.value``.

``DIFFERENTIABLE_PROCEDURES`` maps a name to a procedure
``run(space, evaluator, budget, model, data, seed, **options) -> keep vector`` that finds a
keep vector by other means (gradient descent on channel gates). ``search()`` runs it once per
trial it still needs (seed derived from the trial count), enqueues the vector as that trial's
parameters and evaluates it like any other trial, so its results land in the same study.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nasprune.registry import Registry

STRATEGIES: Registry[Callable[..., Any]] = Registry("search strategy")
DIFFERENTIABLE_PROCEDURES: Registry[Callable[..., Any]] = Registry("search procedure")


def strategy_names() -> list[str]:
    """Every name ``search(strategy=...)`` accepts: samplers and procedures."""
    return sorted(STRATEGIES.names() + DIFFERENTIABLE_PROCEDURES.names())


def check_strategy(name: str) -> None:
    """Raise NaspruneError (with a did-you-mean over all names) for an unknown strategy."""
    if name in STRATEGIES or name in DIFFERENTIABLE_PROCEDURES:
        return
    from nasprune.errors import NaspruneError
    from nasprune.registry import did_you_mean

    raise NaspruneError(
        f"unknown search strategy '{name}': {did_you_mean(str(name), strategy_names())}")


def make_sampler(name: str, space: Any, seed: int | None = None, **options: Any) -> Any:
    """The Optuna sampler of strategy ``name`` for ``space``."""
    return STRATEGIES.get(name)(space, seed, **options)


# Registration: each module exposes ``make`` (samplers) or ``run`` (procedures).
from nasprune.search.strategies import (  # noqa: E402
    bayes,
    differentiable,
    evolution,
    gan,
    predictor,
    random,
    rl,
)

STRATEGIES.register("random")(random.make)
STRATEGIES.register("evolution")(evolution.make)
STRATEGIES.register("bayes")(bayes.make_gp)
STRATEGIES.register("tpe")(bayes.make_tpe)
STRATEGIES.register("rl")(rl.make)
STRATEGIES.register("gan")(gan.make)
STRATEGIES.register("predictor")(predictor.make)
DIFFERENTIABLE_PROCEDURES.register("differentiable")(differentiable.run)

__all__ = ["DIFFERENTIABLE_PROCEDURES", "STRATEGIES", "check_strategy", "make_sampler",
           "strategy_names"]
