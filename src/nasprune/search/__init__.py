"""Search: per-group prune ratios found by neural-architecture search at a budget.

``SearchSpace`` (groups, bounds, analytic costs, budget projection), ``Budget``,
``Evaluator`` (adaptive-BN proxy score on validation data), ``STRATEGIES`` (samplers by
name) and ``search()`` (Optuna studies: in memory, SQLite, PostgreSQL; resumable).
"""

from __future__ import annotations

import sys
import types

from nasprune.search.budget import Budget
from nasprune.search.evaluate import Evaluator, check_proxy, spearman
from nasprune.search.run import Candidate, SearchResult, build_result, search
from nasprune.search.space import SearchSpace
from nasprune.search.strategies import (
    DIFFERENTIABLE_PROCEDURES,
    STRATEGIES,
    make_sampler,
    strategy_names,
)

__all__ = [
    "DIFFERENTIABLE_PROCEDURES",
    "STRATEGIES",
    "Budget",
    "Candidate",
    "Evaluator",
    "SearchResult",
    "SearchSpace",
    "build_result",
    "check_proxy",
    "make_sampler",
    "search",
    "spearman",
    "strategy_names",
]


class _CallableModule(types.ModuleType):
    """``nasprune.search(...)`` must work although ``nasprune.search`` is also this package.

    Importing the subpackage makes ``nasprune.search`` the module (Python sets the parent's
    attribute), shadowing the lazily resolved function; calling the module calls
    :func:`search`.
    """

    def __call__(self, *args, **kwargs):
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
