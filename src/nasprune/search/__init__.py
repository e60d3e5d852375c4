"""Search: per-group prune ratios found by neural-architecture search at a budget.

``SearchSpace`` (groups, bounds, analytic costs, budget projection), ``Budget``, ``Proxy``
(adaptive-BN proxy score on validation data; ``Evaluator`` is its former name),
``Rungs`` (multi-fidelity scoring with early stopping), ``STRATEGIES`` (strategies by
name) and ``search()`` (Optuna studies: in memory, SQLite,
PostgreSQL; resumable).
"""

from __future__ import annotations

from nasprune._callable_module import make_callable
from nasprune.search.budget import Budget
from nasprune.search.proxy import Evaluator, Proxy
from nasprune.search.proxy_check import check_proxy, spearman
from nasprune.search.run import Candidate, SearchResult, build_result, search
from nasprune.search.rungs import Rung, Rungs
from nasprune.search.space import SearchSpace
from nasprune.search.strategies import (
    STRATEGIES,
    make_sampler,
    single_process,
    strategy_names,
)

__all__ = [
    "STRATEGIES",
    "Budget",
    "Candidate",
    "Evaluator",
    "Proxy",
    "Rung",
    "Rungs",
    "SearchResult",
    "SearchSpace",
    "build_result",
    "check_proxy",
    "make_sampler",
    "search",
    "single_process",
    "spearman",
    "strategy_names",
]


make_callable(__name__, search)
