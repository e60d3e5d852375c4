"""Search strategies by name: one registry, ``STRATEGIES``, of :class:`Strategy` objects.

Every strategy gives ``search()`` an Optuna sampler proposing one keep ratio per group
(parameter ``space.param_name(i)`` in ``[space.lower[i], space.upper[i]]``), so every
strategy is stored, resumed and shared between workers the same way. A sampler rebuilds what
it knows from the study's completed trials at each proposal, reading the *projected* keep
vector the objective stored in ``trial.user_attrs["keep"]`` (what was really evaluated) and
the score from ``trial.value``.

A strategy with ``single_process`` set (``differentiable``: gradient descent on channel
gates) computes each trial's keep vector itself (:meth:`Strategy.propose`); ``search()``
enqueues it as that trial's parameters and evaluates it like any other trial, so its results
land in the same study. The warm start's baselines (:mod:`nasprune.search.warm_start`) are
enqueued trials too: samplers learn from them like from any completed trial. ``STRATEGIES.get(name)(space, seed, **options)`` is the sampler.
"""

from __future__ import annotations

from typing import Any

from nasprune.registry import Registry
from nasprune.search.strategies.base import ProcedureStrategy, Strategy

STRATEGIES: Registry[Strategy] = Registry("search strategy")


def strategy_names() -> list[str]:
    """Every name ``search(strategy=...)`` accepts."""
    return STRATEGIES.names()


def check_strategy(name: str) -> None:
    """Raise NaspruneError (with a did-you-mean over all names) for an unknown strategy."""
    STRATEGIES.get(name)


def single_process(name: str) -> bool:
    """Whether strategy ``name`` runs its own procedure in one process (no worker pool)."""
    return STRATEGIES.get(name).single_process


def make_sampler(name: str, space: Any, seed: int | None = None, **options: Any) -> Any:
    """The Optuna sampler of strategy ``name`` for ``space``."""
    return STRATEGIES.get(name).sampler(space, seed, **options)


def _register(strategy: Strategy) -> None:
    STRATEGIES.register(strategy.name)(strategy)


# Registration: sampler modules expose factories, the gate procedure exposes ``run``.
from nasprune.search.strategies import (  # noqa: E402
    bayes,
    differentiable,
    evolution,
    gan,
    predictor,
    random,
    rl,
)

for _name, _make in (("random", random.make), ("evolution", evolution.make),
                     ("bayes", bayes.make_gp), ("tpe", bayes.make_tpe), ("rl", rl.make),
                     ("gan", gan.make), ("predictor", predictor.make)):
    _register(Strategy(_name, _make))
_register(ProcedureStrategy("differentiable", differentiable.run))

__all__ = ["STRATEGIES", "ProcedureStrategy", "Strategy", "check_strategy", "make_sampler",
           "single_process", "strategy_names"]
