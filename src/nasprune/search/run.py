"""``search()``: find per-group prune ratios that maximise the proxy score at a budget.

The loop is Optuna's: a strategy's sampler proposes one keep ratio per group, the
objective projects the vector onto the budget, scores it with the :class:`Proxy` and
stores what it evaluated (projected keep, prune ratios, MACs, params, seconds) as trial user
attrs. ``trials`` is the number of finished trials (complete, or stopped early at a
multi-fidelity rung, :mod:`nasprune.search.rungs`) the study should hold when the call
returns — a total, not an increment — so a second call with the same study name continues
where the first stopped, a crashed run resumes by calling again, and several workers given
the same storage, study and target stop together (a worker starts a trial only while
complete + running trials are fewer than the target). Unless ``warm_start=False``, a
study's first trials are the zero-search baselines (:mod:`nasprune.search.warm_start`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from nasprune.errors import NaspruneError
from nasprune.search import warm_start as warm
from nasprune.search._optimize import Progress, Propose, optimize
from nasprune.search.budget import Budget
from nasprune.search.config import DEFAULT_STRATEGY
from nasprune.search.objective import make_objective
from nasprune.search.proxy import Proxy
from nasprune.search.result import Candidate, SearchResult, build_result
from nasprune.search.rungs import AUTO, AUTO_BELOW, Rungs, as_rungs, auto_rungs
from nasprune.search.space import SearchSpace
from nasprune.search.spaces import make_space
from nasprune.search.strategies import STRATEGIES, Strategy
from nasprune.search.study import budget_dict, count, open_storage, open_study, quiet_optuna
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


def _check_proxy_matches(proxy: Proxy, space: SearchSpace, asked: Rungs | None,
                         objective: str) -> None:
    """The proxy must prune with the space's own rounding, or costs would not match, and
    score in the rungs asked for."""
    if (proxy.round_to, proxy.min_channels) != (space.round_to, space.min_channels):
        raise NaspruneError("the evaluator's round_to/min_channels differ from the space's: "
                            "the cost model would not match the pruned networks")
    if asked is not None and getattr(proxy, "rungs", None) != asked:
        raise NaspruneError(f"rungs={asked.text()!r} differ from the evaluator's rungs: give "
                            "them to the Proxy (Proxy(..., rungs=...)) or let search build it")
    if objective == "multi" and getattr(proxy, "rungs", None) is not None:
        raise NaspruneError("rungs (multi-fidelity scoring) need objective='single': a "
                            "Pareto front of scores from different rungs would mix fidelities")


def _study_meta(space: SearchSpace, target: Budget, objective: str,
                rungs: Rungs | None) -> dict[str, Any]:
    """What a study records about its space, so another call can check it matches."""
    # "space" only for a lower-dimensional one, so studies from before it still match.
    kind = {} if space.kind == "per-group" else {"space": space.kind}
    return {
        "version": 1, "groups": list(space.names), "objective": objective, **kind,
        "budget": budget_dict(target),
        "bounds": [[float(v) for v in space.lower], [float(v) for v in space.upper]],
        "base_macs": int(space.base_macs), "base_params": int(space.base_params),
        # Rung scores of another setting are not comparable (None: single fidelity).
        "rungs": None if rungs is None else {"levels": rungs.text(), "eta": rungs.eta},
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


def _warm_start(st: Any, space: SearchSpace, trials: int,
                candidates: Callable[[], list[tuple[str, Any]]]) -> None:
    """Enqueue the warm-start candidates once per study (not again on resume or per worker)."""
    complete, running, waiting = count(st)
    warm.start(st, space, trials - complete - running - waiting, candidates)


def search(
    model: Any,
    example_inputs: Any,
    data: Any,
    strategy: str = DEFAULT_STRATEGY,
    target: Budget | None = None,
    trials: int = 50,
    storage: Any = None,
    study: str | None = None,
    seed: int | None = 0,
    objective: str = "single",
    evaluator: Proxy | None = None,
    *,
    space: SearchSpace | str | None = None,
    min_keep: float = 0.1,
    max_keep: float = 1.0,
    round_to: int | dict[str, int] | str | None = None,
    ignored: Any = None,
    bn_batches: int = 20,
    val_size: int = 1000,
    finetune_steps: int = 0,
    finetune_optimizer: str = "sgd",
    finetune_lr: float | None = None,
    distill: bool = False,
    device: Any = None,
    progress: bool = True,
    max_failures: int = 5,
    latency_cache: Any = None,
    score: Any = None,
    warm_start: bool = True,
    rungs: Rungs | str | None = AUTO,
    runtime: Any = None,
    verify: bool = True,
    **strategy_options: Any,
) -> SearchResult:
    """Search per-group prune ratios for ``model`` at budget ``target`` (default 50 % MACs).

    ``strategy`` names an entry of ``STRATEGIES`` (default: ``DEFAULT_STRATEGY``, chosen
    by measurement); ``strategy_options`` go to it. ``space``
    is a :class:`SearchSpace` or the name of one (``"per-group"``, the default, or
    ``"stage"``: one ratio per stage, see :mod:`nasprune.search.spaces`).
    ``storage`` is None (in memory) or a database URL; ``study`` names the study to create
    or continue; ``trials`` is the number of complete trials it should hold at the end (see
    the module docstring). ``objective="multi"`` maximises the proxy score and minimises the
    budgeted cost (the budget is then only an upper bound) and returns the Pareto front.
    ``evaluator`` (a :class:`Proxy`) defaults to adaptive-BN accuracy on ``val_size``
    validation images with ``bn_batches`` BN batches, after ``finetune_steps`` steps of
    ``finetune_optimizer`` at ``finetune_lr`` (``distill``: from the unpruned model; see
    :class:`~nasprune.search.proxy_finetune.FinetuneRecipe`). An exception while evaluating a trial
    fails that trial (its message stored as the ``error`` user attr) and the search goes
    on, unless ``max_failures`` trials fail in a row. Budgets no candidate can meet are
    rejected before anything runs.

    ``data`` is a built-in Dataset, a :class:`~nasprune.task.Task` or any re-iterable of
    batches (a ``DataLoader``, then used for calibration and validation alike); ``score``
    (``score(outputs, batches) -> float``, higher is better) replaces the task's score.

    ``warm_start`` (default on) makes a study's first trials the zero-search baselines at
    the same budget (:mod:`nasprune.search.warm_start`: uniform, nasprune's and
    Torch-Pruning's global ranking), so the best is never below them on the proxy; the
    result names the best of them and how far the search improved on it.
    ``rungs`` (``"1000:0,4000:50"``, a :class:`~nasprune.search.rungs.Rungs`, or None for
    one fidelity; or the ``evaluator``'s own) scores in multi-fidelity rungs: every
    candidate at the first, the best ``1/eta`` so far at each next one after more
    fine-tuning steps on more validation images, the rest stopped early (PRUNED trials,
    counted in ``trials``, never picked); the best is the best at the highest rung reached.
    ``"auto"`` (the default) scores the warm-start candidates and the unpruned model first
    and uses rungs ``1000:0,4000:30`` only when the best candidate keeps less than 60 % of
    the unpruned score (:func:`~nasprune.search.rungs.auto_rungs`; without a warm start,
    or with an evaluator that already fine-tunes or has rungs, one fidelity).
    Latency and speed-up budgets are predicted from a table measured on ``runtime`` (a
    :class:`~nasprune.metrics.runtime.Runtime`; default torch eager on ``device``);
    ``round_to`` is one width step, a dict group name → step, or ``"auto"``: each group's
    step at which that runtime's kernels are fast, measured (see :mod:`.group_widths`). With ``verify`` the delivered network is then measured there
    (``result.delivery``, see :mod:`.verify`).
    """
    start = time.perf_counter()
    if score is not None:
        data = as_task(data, score=score)
    target = Budget(macs=0.5) if target is None else target
    _check_args(target, trials, objective, seed)
    if not isinstance(warm_start, bool):
        raise NaspruneError(f"warm_start must be True or False, got {warm_start!r}")
    asked = as_rungs(rungs, auto=True)
    strat = STRATEGIES.get(strategy)
    runtime, round_to = _timing(target, model, example_inputs, device, runtime, round_to,
                                latency_cache)
    if space is None or isinstance(space, str):
        space = make_space(space or "per-group", model, example_inputs, ignored=ignored,
                           min_keep=min_keep, max_keep=max_keep, round_to=round_to)
    _attach_latency(space, target, model, example_inputs, runtime, latency_cache)
    space.check_feasible(target)
    with quiet_optuna():  # experimental-feature warnings of Optuna's samplers
        sampler = strat.sampler(space, seed, **strategy_options)
    if evaluator is None:
        evaluator = Proxy(
            model, data, bn_batches=bn_batches, val_size=val_size, finetune_steps=finetune_steps,
            finetune_optimizer=finetune_optimizer, finetune_lr=finetune_lr, distill=distill,
            device=device, example_inputs=example_inputs, round_to=space.round_to,
            min_channels=space.min_channels, ignored=ignored, seed=seed or 0,
            progress=progress, rungs=None if asked == AUTO else asked)
    criterion = getattr(evaluator, "criterion", "l1")
    # Built once: the auto rungs score them, then the warm start enqueues them.
    candidates = functools.cache(lambda: warm.candidates(
        space, target, model, example_inputs, criterion=criterion, ignored=ignored,
        data=data, seed=seed or 0))
    if asked == AUTO and warm_start:
        evaluator = _auto_rungs(evaluator, space, candidates, objective, progress)
    _check_proxy_matches(evaluator, space, None if asked == AUTO else asked, objective)
    rungs = getattr(evaluator, "rungs", None)
    directions = ["maximize"] if objective == "single" else ["maximize", "minimize"]
    st = open_study(open_storage(storage), study, directions, sampler,
                    _study_meta(space, target, objective, rungs))
    if warm_start:
        _warm_start(st, space, trials, candidates)
    propose = _proposer(strat, space, evaluator, target, model, data, seed, strategy_options)
    tracker = Progress(st, trials, f"search {strategy}", progress)
    try:
        optimize(st, make_objective(space, evaluator, target, objective, strategy), trials,
                 propose, tracker, max_failures, strategy)
    finally:
        tracker.close()
    result = build_result(st, space, target, strategy, objective,
                          time.perf_counter() - start, tracker.failed)
    result.rungs = None if rungs is None else rungs.text()
    if verify and target.timed:
        from nasprune.search.verify import verify_delivery

        result.delivery = verify_delivery(result, model, example_inputs, runtime,
                                          evaluator=evaluator)
    return result


def _auto_rungs(evaluator: Any, space: SearchSpace,
                candidates: Callable[[], list[tuple[str, Any]]], objective: str,
                progress: bool) -> Any:
    """``rungs="auto"``: ``evaluator``, or the same proxy in rungs when the best warm-start
    candidate keeps too little of the unpruned model's score (:func:`auto_rungs`).

    Deterministic given the space (the proxy is; a latency budget's table is cached per
    device), so a resumed or parallel call decides the same and its study's recorded rung
    setting matches. Only a plain single-fidelity :class:`Proxy` (not
    a subclass with its own scoring) of a single-objective search is considered."""
    if (objective != "single" or type(evaluator) is not Proxy
            or evaluator.rungs is not None or evaluator.finetune_steps):
        return evaluator
    found = candidates()
    if not found:
        return evaluator
    try:
        unpruned = evaluator.score({})
        best = max(evaluator.score(space.prune_ratios(keep)) for _, keep in found)
    except Exception:  # noqa: BLE001 -- the study records a failing candidate as its trial
        return evaluator
    chosen = auto_rungs(evaluator.val_size, unpruned, best)
    if chosen is None:
        return evaluator
    why = (f"the best one-knob network scores {best:.4g}, {best / unpruned:.0%} of the "
           f"unpruned model's {unpruned:.4g}")
    try:
        in_rungs = evaluator.with_rungs(chosen)
    except NaspruneError as exc:  # the top rung's samples exceed the proxy's cache_mb
        if progress:
            print(f"rungs off: {why}, but the rungs {chosen.text()} cannot be cached ({exc})")
        return evaluator
    if progress:
        print(f"rungs {chosen.text()}: {why} (rungs='auto' switches them on below "
              f"{AUTO_BELOW:.0%}; rungs=None turns them off)")
    return in_rungs


def _timing(target: Budget, model: Any, example_inputs: Any, device: Any, runtime: Any,
            round_to: Any, cache_dir: Any) -> tuple[Any, Any]:
    """The runtime of a timed budget (default: torch eager on ``device``) and ``round_to``
    (``"auto"``: each group's step, measured on that runtime)."""
    if target.timed and runtime is None:
        from nasprune.search.latency import default_runtime

        runtime = default_runtime(device)
    if round_to == "auto":
        if runtime is None:
            raise NaspruneError("round_to='auto' measures widths on a runtime: give a "
                                "latency or speed-up budget, or runtime=")
        from nasprune.search.group_widths import measured_steps

        round_to, _ = measured_steps(model, example_inputs, runtime, cache_dir=cache_dir)
    return runtime, round_to


# make_objective: re-exported, it was defined here before search/objective.py.
__all__ = ["OBJECTIVES", "STRATEGIES", "Candidate", "SearchResult", "build_result",
           "make_objective", "search"]
