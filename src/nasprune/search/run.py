"""``search()``: find per-group prune ratios that maximise the proxy score at a budget.

The loop is Optuna's: a strategy's sampler proposes one keep ratio per group, the
objective projects the vector onto the budget, scores it with the :class:`Evaluator` and
stores what it evaluated (projected keep, prune ratios, MACs, params, seconds) as trial user
attrs. ``trials`` is the number of COMPLETE trials the study should hold when the call
returns — a total, not an increment — so a second call with the same study name continues
where the first stopped, a crashed run resumes by calling again, and several workers given
the same storage, study and target stop together (a worker starts a trial only while
complete + running trials are fewer than the target).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from nasprune.errors import NaspruneError
from nasprune.search.budget import Budget
from nasprune.search.proxy import Evaluator
from nasprune.search.space import SearchSpace
from nasprune.search.strategies import (
    DIFFERENTIABLE_PROCEDURES,
    STRATEGIES,
    check_strategy,
    make_sampler,
)
from nasprune.search.strategies.learned import seed_for
from nasprune.search.study import (
    budget_dict,
    count,
    fail_stale,
    open_storage,
    open_study,
    quiet_optuna,
)

OBJECTIVES = ("single", "multi")


@dataclass
class Candidate:
    """One evaluated trial: what was pruned, what it costs and its proxy score."""

    number: int
    ratios: dict[str, float]  # prune ratios (fraction removed) per group
    keep: list[float]  # projected keep ratios, in group order
    macs: int
    params: int
    macs_fraction: float
    params_fraction: float
    score: float
    seconds: float
    values: list[float] = field(default_factory=list)
    latency_ms: float | None = None

    @classmethod
    def from_trial(cls, t: FrozenTrial) -> Candidate | None:
        a = t.user_attrs
        if t.state != TrialState.COMPLETE or "keep" not in a or not t.values:
            return None
        return cls(
            number=t.number, ratios=dict(a["prune_ratios"]), keep=list(a["keep"]),
            macs=int(a["macs"]), params=int(a["params"]),
            macs_fraction=float(a["macs_fraction"]), params_fraction=float(a["params_fraction"]),
            score=float(t.values[0]), seconds=float(a.get("seconds", 0.0)),
            values=[float(v) for v in t.values], latency_ms=a.get("latency_ms"))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class SearchResult:
    """The outcome of :func:`search`: the best candidate, all candidates, the study."""

    best: Candidate
    trials: list[Candidate]
    study: optuna.Study
    pareto: list[Candidate]
    seconds: float
    strategy: str
    objective: str
    budget: Budget
    space: SearchSpace
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; ``ratios`` at the top level is what ``nasprune prune`` reads."""
        return {
            "ratios": self.best.ratios,
            "best": self.best.to_dict(),
            "strategy": self.strategy,
            "objective": self.objective,
            "budget": budget_dict(self.budget),
            "study": self.study.study_name,
            "trials": len(self.trials),
            "failed": self.failed,
            "seconds": self.seconds,
            "base_macs": self.space.base_macs,
            "base_params": self.space.base_params,
            "pareto": [c.to_dict() for c in self.pareto],
        }


def _second_objective(budget: Budget) -> str:
    """What a multi-objective search minimises: the budgeted quantity (MACs by default)."""
    if budget.macs is None and budget.params is not None:
        return "params_fraction"
    if budget.macs is None and budget.params is None and budget.latency_ms is not None:
        return "latency_ms"
    return "macs_fraction"


def _check_args(trials: Any, objective: Any, seed: Any) -> None:
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise NaspruneError(f"trials must be a positive integer, got {trials!r}")
    if objective not in OBJECTIVES:
        raise NaspruneError(f"objective must be 'single' or 'multi', got {objective!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise NaspruneError(f"seed must be an integer or None, got {seed!r}")


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
                                            states=(TrialState.COMPLETE, TrialState.RUNNING))
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


def make_objective(space: SearchSpace, evaluator: Evaluator, budget: Budget, objective: str,
                   strategy: str) -> Callable[[optuna.Trial], Any]:
    """The Optuna objective: suggest, project, record, evaluate."""
    second = _second_objective(budget)

    exact = objective == "single"

    def run(trial: optuna.Trial) -> Any:
        raw = np.array([trial.suggest_float(space.param_name(i), float(space.lower[i]),
                                            float(space.upper[i])) for i in range(space.dim)])
        keep = space.project(raw, budget, exact=exact)
        keep, nudged = _avoid_duplicates(trial, space, budget, raw, keep, exact)
        if nudged:
            trial.set_user_attr("nudged", nudged)
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
        start = time.perf_counter()
        try:
            score = float(evaluator.score(attrs["prune_ratios"]))
        except Exception as exc:
            # Stored with the trial (FAIL) so the reason survives; the search goes on.
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        trial.set_user_attr("seconds", time.perf_counter() - start)
        if not math.isfinite(score):
            trial.set_user_attr("error", f"score is {score}")
            raise NaspruneError(f"evaluator returned a non-finite score {score}")
        if objective == "multi":
            return score, float(attrs[second])
        return score

    return run


def search(
    model: Any,
    example_inputs: Any,
    data: Any,
    strategy: str = "evolution",
    target: Budget | None = None,
    trials: int = 50,
    storage: Any = None,
    study: str | None = None,
    seed: int | None = 0,
    objective: str = "single",
    evaluator: Evaluator | None = None,
    *,
    space: SearchSpace | None = None,
    min_keep: float = 0.1,
    max_keep: float = 1.0,
    round_to: int | None = None,
    ignored: Any = None,
    bn_batches: int = 20,
    val_size: int = 1000,
    finetune_steps: int = 0,
    device: Any = None,
    progress: bool = True,
    max_failures: int = 5,
    latency_cache: Any = None,
    **strategy_options: Any,
) -> SearchResult:
    """Search per-group prune ratios for ``model`` at budget ``target`` (default 50 % MACs).

    ``strategy`` names an entry of ``STRATEGIES`` or ``DIFFERENTIABLE_PROCEDURES``;
    ``strategy_options`` go to it. ``storage`` is None (in memory) or a database URL;
    ``study`` names the study to create or continue; ``trials`` is the number of complete
    trials it should hold at the end (see the module docstring). ``objective="multi"``
    maximises the proxy score and minimises the budgeted cost (the budget is then only an
    upper bound) and returns the Pareto front. The evaluator defaults to adaptive-BN
    accuracy on ``val_size`` validation images with ``bn_batches`` BN batches. An
    exception while evaluating a trial fails that trial (its message stored as the
    ``error`` user attr) and the search continues, unless ``max_failures`` trials fail in a
    row. Budgets no candidate can meet are rejected before anything runs.
    """
    start = time.perf_counter()
    target = Budget(macs=0.5) if target is None else target
    if not isinstance(target, Budget):
        raise NaspruneError(f"target must be a nasprune.Budget, got {type(target).__name__}")
    _check_args(trials, objective, seed)
    check_strategy(strategy)
    if space is None:
        space = SearchSpace(model, example_inputs, ignored=ignored, min_keep=min_keep,
                            max_keep=max_keep, round_to=round_to)
    if target.latency_ms is not None and space.latency is None:
        from nasprune.search.latency import LatencyModel

        space.latency = LatencyModel.for_space(space, model, example_inputs, device=device,
                                               cache_dir=latency_cache)
    space.check_feasible(target)
    is_procedure = strategy in DIFFERENTIABLE_PROCEDURES
    if is_procedure:
        procedure = DIFFERENTIABLE_PROCEDURES.get(strategy)
        sampler: Any = optuna.samplers.RandomSampler(seed=seed)  # only enqueued trials run
    else:
        with quiet_optuna():  # experimental-feature warnings of Optuna's samplers
            sampler = make_sampler(strategy, space, seed, **strategy_options)
    if evaluator is None:
        evaluator = Evaluator(model, data, bn_batches=bn_batches, val_size=val_size,
                              finetune_steps=finetune_steps, device=device,
                              example_inputs=example_inputs, round_to=space.round_to,
                              min_channels=space.min_channels, ignored=ignored,
                              seed=seed or 0)
    elif (evaluator.round_to, evaluator.min_channels) != (space.round_to, space.min_channels):
        raise NaspruneError("the evaluator's round_to/min_channels differ from the space's: "
                            "the cost model would not match the pruned networks")
    directions = ["maximize"] if objective == "single" else ["maximize", "minimize"]
    meta = {
        "version": 1, "groups": list(space.names), "objective": objective,
        "budget": budget_dict(target),
        "bounds": [[float(v) for v in space.lower], [float(v) for v in space.upper]],
        "base_macs": int(space.base_macs), "base_params": int(space.base_params),
    }
    st = open_study(open_storage(storage), study, directions, sampler, meta)
    run_trial = make_objective(space, evaluator, target, objective, strategy)

    from tqdm.auto import tqdm

    complete, _, _ = count(st)
    bar = tqdm(total=trials, initial=min(complete, trials), desc=f"search {strategy}",
               disable=not progress, unit="trial", dynamic_ncols=True, leave=True)
    state = {"failed_in_row": 0, "failed": 0, "last_error": ""}

    def on_trial(study_: optuna.Study, t: FrozenTrial) -> None:
        if t.state == TrialState.COMPLETE:
            state["failed_in_row"] = 0
            bar.update(1)
            best = _best_value(study_)
            bar.set_postfix(trial=t.number, best=f"{best:.4f}" if best is not None else "-",
                            macs=f"{t.user_attrs.get('macs_fraction', float('nan')):.1%}")
        elif t.state == TrialState.FAIL:
            state["failed_in_row"] += 1
            state["failed"] += 1
            state["last_error"] = t.user_attrs.get("error", "unknown error")

    try:
        with quiet_optuna():
            while True:
                fail_stale(st)
                complete, running, waiting = count(st)
                if complete >= trials:
                    break
                if complete + running >= trials:
                    # Other workers' trials finish the count — or go stale if their
                    # process died, and are then failed and queued again (heartbeats).
                    time.sleep(1.0)
                    continue
                if is_procedure:
                    n = len(st.get_trials(deepcopy=False))
                    keep = np.asarray(procedure(space, evaluator, target, model, data,
                                                seed_for(seed, n) if seed is not None else None,
                                                **strategy_options), dtype=float)
                    if keep.shape != (space.dim,) or not np.all(np.isfinite(keep)):
                        raise NaspruneError(f"procedure '{strategy}' returned no valid keep "
                                            f"vector (shape {keep.shape})")
                    keep = np.clip(keep, space.lower, space.upper)
                    st.enqueue_trial({space.param_name(i): float(keep[i])
                                      for i in range(space.dim)},
                                     user_attrs={"procedure": strategy})
                st.optimize(run_trial, n_trials=1, catch=(Exception,), callbacks=[on_trial],
                            gc_after_trial=False, show_progress_bar=False)
                if state["failed_in_row"] >= max_failures:
                    raise NaspruneError(
                        f"{state['failed_in_row']} trials in a row failed; last error: "
                        f"{state['last_error']}")
    finally:
        bar.close()
    return build_result(st, space, target, strategy, objective, time.perf_counter() - start,
                        state["failed"])


def _best_value(study: optuna.Study) -> float | None:
    done = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values]
    return max(done) if done else None


def build_result(st: optuna.Study, space: SearchSpace, budget: Budget, strategy: str,
                 objective: str, seconds: float, failed: int = 0) -> SearchResult:
    """Collect a :class:`SearchResult` from everything the study holds."""
    cands = [c for t in st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if (c := Candidate.from_trial(t)) is not None]
    if not cands:
        raise NaspruneError(f"study '{st.study_name}' has no completed trials")
    cands.sort(key=lambda c: c.number)
    if objective == "multi":
        numbers = {t.number for t in st.best_trials}
        pareto = sorted((c for c in cands if c.number in numbers), key=lambda c: c.values[1])
        best = max(pareto, key=lambda c: (c.score, -c.values[1], -c.number))
    else:
        pareto = []
        best = max(cands, key=lambda c: (c.score, -c.number))  # earliest of equal scores
    return SearchResult(best=best, trials=cands, study=st, pareto=pareto, seconds=seconds,
                        strategy=strategy, objective=objective, budget=budget, space=space,
                        failed=failed)


__all__ = ["OBJECTIVES", "STRATEGIES", "Candidate", "SearchResult", "build_result",
           "make_objective", "search"]
