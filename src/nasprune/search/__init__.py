"""Search: per-group prune ratios found by neural-architecture search at a budget.

``SearchSpace`` (groups, bounds, analytic costs, budget projection), ``Budget``,
``Evaluator`` (adaptive-BN proxy score on validation data), ``STRATEGIES`` (samplers by
name) and ``search()`` (Optuna studies: in memory, SQLite, PostgreSQL; resumable).
"""

from __future__ import annotations

from nasprune._callable_module import make_callable
from nasprune.search.budget import Budget
from nasprune.search.proxy import Evaluator, check_proxy, spearman
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


make_callable(__name__, search)
