"""The Optuna objective of a search: suggest, project onto the budget, record, score.

What a trial evaluated is stored as its user attrs (projected keep vector, prune ratios,
MACs, params, seconds), so samplers, resumed runs and other workers read the same record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from nasprune.errors import NaspruneError
from nasprune.search.budget import Budget
from nasprune.search.proxy import Proxy
from nasprune.search.rungs import score_in_rungs
from nasprune.search.space import SearchSpace
from nasprune.search.warm_start import ATTR as WARM_ATTR
from nasprune.search.warm_start import is_repeat


def _second_objective(budget: Budget) -> str:
    """What a multi-objective search minimises: the budgeted quantity (MACs by default)."""
    if budget.macs is None and budget.params is not None:
        return "params_fraction"
    if budget.macs is None and budget.params is None and budget.timed:
        return "latency_ms"
    return "macs_fraction"


def _avoid_duplicates(trial: optuna.Trial, space: SearchSpace, budget: Budget,
                      raw: np.ndarray, keep: np.ndarray, exact: bool,
                      tries: int = 8) -> tuple[np.ndarray, int]:
    """Nudge a proposal whose pruned architecture was already evaluated in this study.

    Projection maps whole rays to one point and rounding maps nearby points to the same
    channel counts, so samplers (GP-BO proposing corners, a GA child equal to its parent)
    can land on an architecture the study already scored; re-scoring it would waste the
    trial. The raw vector gets seeded Gaussian noise (σ growing per try, in units of the
    bounds' width) and is projected again; returns the keep vector and the tries used.
    """
    seen = {tuple(space.kept(np.asarray(t.user_attrs["keep"])))
            for t in trial.study.get_trials(deepcopy=False,
                                            states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                    TrialState.RUNNING))
            if t.number != trial.number and len(t.user_attrs.get("keep", ())) == space.dim}
    if tuple(space.kept(keep)) not in seen:
        return keep, 0
    rng = np.random.default_rng([trial.number, 7919])
    width = space.upper - space.lower
    for i in range(1, tries + 1):
        x = np.clip(raw + rng.normal(0.0, 0.03 * i, space.dim) * width, space.lower, space.upper)
        cand = space.project(x, budget, exact=exact)
        if tuple(space.kept(cand)) not in seen:
            return cand, i
    return keep, tries  # a crowded region: evaluate it anyway


def _record(trial: optuna.Trial, space: SearchSpace, keep: np.ndarray,
            strategy: str) -> dict[str, Any]:
    """Store what the trial evaluates (before scoring, so a failed trial keeps it too)."""
    macs, params = space.cost(keep)
    attrs: dict[str, Any] = {
        "keep": [float(k) for k in keep],
        "prune_ratios": space.prune_ratios(keep),
        "macs": int(macs), "params": int(params),
        "macs_fraction": macs / space.base_macs,
        "params_fraction": params / space.base_params,
        "strategy": strategy,
    }
    if space.latency is not None:
        attrs["latency_ms"] = float(space.latency.predict(space.kept(keep)))
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    return attrs


def _score(trial: optuna.Trial, proxy: Proxy, ratios: dict[str, float], report: bool) -> float:
    """The proxy score (the top rung's with rungs, which may stop the trial early); a
    failure or a non-finite score is stored with the trial, then raised."""
    start = time.perf_counter()
    try:
        if getattr(proxy, "rungs", None) is not None:
            score = score_in_rungs(trial, proxy, ratios, report=report)
        else:
            score = float(proxy.score(ratios))
    except optuna.TrialPruned:
        trial.set_user_attr("seconds", time.perf_counter() - start)
        raise
    except Exception as exc:
        # Stored with the trial (FAIL) so the reason survives; the search goes on.
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    trial.set_user_attr("seconds", time.perf_counter() - start)
    if not math.isfinite(score):
        trial.set_user_attr("error", f"score is {score}")
        raise NaspruneError(f"evaluator returned a non-finite score {score}")
    return score


def make_objective(space: SearchSpace, proxy: Proxy, budget: Budget, objective: str,
                   strategy: str) -> Callable[[optuna.Trial], Any]:
    """The Optuna objective: suggest, project, record, evaluate.

    A warm-start trial (user attr ``warm_start``) is evaluated unprojected — it was built
    to fit the budget — and skipped (PRUNED) when another worker's copy of it came first.
    """
    second = _second_objective(budget)
    exact = objective == "single"

    def run(trial: optuna.Trial) -> Any:
        warm = trial.user_attrs.get(WARM_ATTR)
        if warm is not None and is_repeat(trial, warm):
            raise optuna.TrialPruned(f"warm-start candidate '{warm}' is already in the study")
        raw = np.array([trial.suggest_float(space.param_name(i), float(space.lower[i]),
                                            float(space.upper[i])) for i in range(space.dim)])
        if warm is not None and space.within(raw, budget):
            keep = raw  # a baseline is evaluated as it is: it already fits the budget
        else:
            keep = space.project(raw, budget, exact=exact)
            keep, nudged = _avoid_duplicates(trial, space, budget, raw, keep, exact)
            if nudged:
                trial.set_user_attr("nudged", nudged)
        attrs = _record(trial, space, keep, strategy)
        score = _score(trial, proxy, attrs["prune_ratios"], report=objective == "single")
        if objective == "multi":
            return score, float(attrs[second])
        return score

    return run

__all__ = ["make_objective"]
