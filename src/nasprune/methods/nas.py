"""The experiment's ``nas:<strategy>`` method: :func:`nasprune.search` at the budget.

Trials are stored in a SQLite study in the method's work directory, so an interrupted search
resumes; the model is then pruned to the best ratios found. With the ``speedup`` option the
budget also asks for that speed-up on the experiment's latency runtime, at widths measured
there, and the delivered network is verified on it (its measurement in the method's info).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from nasprune.methods.registry import Context, Pruned, register_method


def _search(ctx: Context, s: Any, evaluator: Any, space: Any, runtime: Any) -> Any:
    from nasprune.search import Budget, search

    return search(ctx.model, ctx.example, ctx.data, strategy=ctx.spec.strategy,
                  target=Budget(macs=ctx.cfg.budget, speedup=s.speedup), trials=s.trials,
                  storage=f"sqlite:///{(ctx.work / 'study.db').resolve()}",
                  study=ctx.spec.slug, seed=ctx.seed, objective=s.objective,
                  evaluator=evaluator, space=space, progress=ctx.progress, rungs=s.rungs,
                  runtime=runtime, **s.options)


def _timing(ctx: Context, s: Any) -> tuple[Any, Any]:
    """The runtime of a speed-up budget (None without one) and the width steps: the
    experiment's ``round_to``, else those measured on that runtime."""
    if s.speedup is None:
        return None, ctx.cfg.round_to
    from nasprune.metrics.runtime import Runtime
    from nasprune.search.group_widths import measured_steps

    lat = ctx.cfg.latency
    runtime = Runtime(lat.runtime, threads=lat.threads, batch_size=1, device=ctx.device.type)
    if ctx.cfg.round_to is not None:
        return runtime, ctx.cfg.round_to
    return runtime, measured_steps(ctx.model, ctx.example, runtime)[0]


@register_method("nas")
def nas(ctx: Context) -> Pruned:
    """``nas:<strategy>``: the strategy's name is ``ctx.spec.strategy``."""
    from nasprune.search import Proxy
    from nasprune.search.rungs import AUTO, as_rungs
    from nasprune.search.spaces import make_space

    s = ctx.settings
    start, cpu_start = time.perf_counter(), time.process_time()
    runtime, round_to = _timing(ctx, s)
    space = make_space(s.space, ctx.model, ctx.example, min_keep=s.min_keep,
                       round_to=round_to)
    evaluator = Proxy(ctx.model, ctx.data, bn_batches=s.bn_batches, val_size=s.val_size,
                      device=ctx.device, example_inputs=ctx.example,
                      criterion=ctx.cfg.criterion, round_to=round_to,
                      min_channels=space.min_channels, seed=ctx.seed,
                      rungs=None if as_rungs(s.rungs, auto=True) == AUTO else s.rungs)
    ctx.work.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Optuna's notices about its own deprecated/experimental heartbeat classes are not
        # the user's business in an experiment log.
        warnings.filterwarnings("ignore", category=FutureWarning, module="nasprune.search")
        warnings.filterwarnings("ignore", module="optuna")
        result = _search(ctx, s, evaluator, space, runtime)
    model = ctx.prune(result.best.ratios, round_to=round_to)
    search_info = result.to_dict()
    search_info["candidates"] = [c.to_dict() for c in result.trials]
    info = {"ratios": result.best.ratios, "proxy_score": result.best.score,
            "trials": len(result.trials), "strategy": ctx.spec.strategy,
            # CPU seconds of this process (all its threads): on a shared machine the
            # wall time measures the load, this the work.
            "search_cpu_seconds": time.process_time() - cpu_start}
    if result.delivery is not None:
        info["delivery"] = result.delivery.to_dict()
        info["round_to"] = round_to
    return Pruned(model, search_seconds=time.perf_counter() - start, info=info,
                  artifacts={"search": search_info})


__all__ = ["nas"]
