"""``search()``: find per-group prune ratios that maximise the proxy score at a budget.

The loop is Optuna's: a strategy's sampler proposes one keep ratio per group, the
objective projects the vector onto the budget, scores it with the :class:`Proxy` and
stores what it evaluated (projected keep, prune ratios, MACs, params, seconds) as trial user
attrs. ``trials`` is the number of COMPLETE trials the study should hold when the call
returns — a total, not an increment — so a second call with the same study name continues
where the first stopped, a crashed run resumes by calling again, and several workers given
the same storage, study and target stop together (a worker starts a trial only while
complete + running trials are fewer than the target).
"""

from __future__ import annotations

import time
from typing import Any

from nasprune.errors import NaspruneError
from nasprune.search._optimize import Progress, Propose, optimize
from nasprune.search.budget import Budget
from nasprune.search.objective import make_objective
from nasprune.search.proxy import Proxy
from nasprune.search.result import Candidate, SearchResult, build_result
from nasprune.search.space import SearchSpace
from nasprune.search.strategies import STRATEGIES, Strategy
from nasprune.search.study import budget_dict, open_storage, open_study, quiet_optuna
from nasprune.task import as_task

OBJECTIVES = ("single", "multi")


def _check_args(target: Any, trials: Any, objective: Any, seed: Any) -> None:
    if not isinstance(target, Budget):
        raise NaspruneError(f"target must be a nasprune.Budget, got {type(target).__name__}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise NaspruneError(f"trials must be a positive integer, got {trials!r}")
    if objective not in OBJECTIVES:
        raise NaspruneError(f"objective must be 'single' or 'multi', got {objective!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise NaspruneError(f"seed must be an integer or None, got {seed!r}")


def _attach_latency(space: SearchSpace, target: Budget, model: Any, example_inputs: Any,
                    runtime: Any, cache_dir: Any) -> None:
    """Measure a latency table for a latency or speed-up budget (once per space)."""
    if target.timed and space.latency is None:
        from nasprune.search.latency import LatencyModel

        space.latency = LatencyModel.for_space(space, model, example_inputs,
                                               cache_dir=cache_dir, runtime=runtime)


def _check_proxy_matches(proxy: Proxy, space: SearchSpace) -> None:
    """The proxy must prune with the space's own rounding, or costs would not match."""
    if (proxy.round_to, proxy.min_channels) != (space.round_to, space.min_channels):
        raise NaspruneError("the evaluator's round_to/min_channels differ from the space's: "
                            "the cost model would not match the pruned networks")


def _study_meta(space: SearchSpace, target: Budget, objective: str) -> dict[str, Any]:
    """What a study records about its space, so another call can check it matches."""
    return {
        "version": 1, "groups": list(space.names), "objective": objective,
        "budget": budget_dict(target),
        "bounds": [[float(v) for v in space.lower], [float(v) for v in space.upper]],
        "base_macs": int(space.base_macs), "base_params": int(space.base_params),
    }


def _proposer(strategy: Strategy, space: SearchSpace, proxy: Proxy, target: Budget,
              model: Any, data: Any, seed: int | None, options: dict[str, Any]) -> Propose:
    """Before each trial: the parameters the strategy chooses itself, if it runs itself."""

    def propose(study: Any) -> dict[str, float] | None:
        keep = strategy.propose(study, space, proxy, target, model, data, seed, **options)
        if keep is None:
            return None
        return {space.param_name(i): float(keep[i]) for i in range(space.dim)}

    return propose


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
    evaluator: Proxy | None = None,
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
    score: Any = None,
    runtime: Any = None,
    verify: bool = True,
    **strategy_options: Any,
) -> SearchResult:
    """Search per-group prune ratios for ``model`` at budget ``target`` (default 50 % MACs).

    ``strategy`` names an entry of ``STRATEGIES``; ``strategy_options`` go to it.
    ``storage`` is None (in memory) or a database URL; ``study`` names the study to create
    or continue; ``trials`` is the number of complete trials it should hold at the end (see
    the module docstring). ``objective="multi"`` maximises the proxy score and minimises the
    budgeted cost (the budget is then only an upper bound) and returns the Pareto front.
    ``evaluator`` (a :class:`Proxy`) defaults to adaptive-BN accuracy on ``val_size``
    validation images with ``bn_batches`` BN batches. An exception while evaluating a trial
    fails that trial (its message stored as the ``error`` user attr) and the search goes
    on, unless ``max_failures`` trials fail in a row. Budgets no candidate can meet are
    rejected before anything runs.

    ``data`` is a built-in Dataset, a :class:`~nasprune.task.Task` or any re-iterable of
    batches (a ``DataLoader``, then used for calibration and validation alike); ``score``
    (``score(outputs, batches) -> float``, higher is better) replaces the task's score.

    Latency and speed-up budgets are predicted from a table measured on ``runtime`` (a
    :class:`~nasprune.metrics.runtime.Runtime`; default torch eager on ``device``);
    ``round_to="auto"`` picks the width step at which that runtime is fast (see
    :mod:`.widths`). With ``verify`` the delivered network is then measured there
    (``result.delivery``, see :mod:`.verify`).
    """
    start = time.perf_counter()
    if score is not None:
        data = as_task(data, score=score)
    target = Budget(macs=0.5) if target is None else target
    _check_args(target, trials, objective, seed)
    strat = STRATEGIES.get(strategy)
    runtime, round_to = _timing(target, model, example_inputs, device, runtime, round_to)
    if space is None:
        space = SearchSpace(model, example_inputs, ignored=ignored, min_keep=min_keep,
                            max_keep=max_keep, round_to=round_to)
    _attach_latency(space, target, model, example_inputs, runtime, latency_cache)
    space.check_feasible(target)
    with quiet_optuna():  # experimental-feature warnings of Optuna's samplers
        sampler = strat.sampler(space, seed, **strategy_options)
    if evaluator is None:
        evaluator = Proxy(
            model, data, bn_batches=bn_batches, val_size=val_size, finetune_steps=finetune_steps,
            device=device, example_inputs=example_inputs, round_to=space.round_to,
            min_channels=space.min_channels, ignored=ignored, seed=seed or 0,
            progress=progress)
    _check_proxy_matches(evaluator, space)
    directions = ["maximize"] if objective == "single" else ["maximize", "minimize"]
    st = open_study(open_storage(storage), study, directions, sampler,
                    _study_meta(space, target, objective))
    propose = _proposer(strat, space, evaluator, target, model, data, seed, strategy_options)
    tracker = Progress(st, trials, f"search {strategy}", progress)
    try:
        optimize(st, make_objective(space, evaluator, target, objective, strategy), trials,
                 propose, tracker, max_failures, strategy)
    finally:
        tracker.close()
    result = build_result(st, space, target, strategy, objective,
                          time.perf_counter() - start, tracker.failed)
    if verify and target.timed:
        from nasprune.search.verify import verify_delivery

        result.delivery = verify_delivery(result, model, example_inputs, runtime)
    return result


def _timing(target: Budget, model: Any, example_inputs: Any, device: Any, runtime: Any,
            round_to: Any) -> tuple[Any, Any]:
    """The runtime of a timed budget (default: torch eager on ``device``) and ``round_to``
    (``"auto"``: measured on that runtime)."""
    if target.timed and runtime is None:
        from nasprune.search.latency import default_runtime

        runtime = default_runtime(device)
    if round_to == "auto":
        if runtime is None:
            raise NaspruneError("round_to='auto' measures widths on a runtime: give a "
                                "latency or speed-up budget, or runtime=")
        from nasprune.search.widths import measured_round_to

        round_to, _ = measured_round_to(model, example_inputs, runtime)
    return runtime, round_to


# make_objective: re-exported, it was defined here before search/objective.py.
__all__ = ["OBJECTIVES", "STRATEGIES", "Candidate", "SearchResult", "build_result",
           "make_objective", "search"]
