"""The experiment's ``nas:<strategy>`` method: :func:`nasprune.search` at the budget.

Trials are stored in a SQLite study in the method's work directory, so an interrupted search
resumes; the model is then pruned to the best ratios found.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from nasprune.methods.registry import Context, Pruned, register_method


def _search(ctx: Context, s: Any, evaluator: Any, space: Any) -> Any:
    from nasprune.search import Budget, search

    return search(ctx.model, ctx.example, ctx.data, strategy=ctx.spec.strategy,
                  target=Budget(macs=ctx.cfg.budget), trials=s.trials,
                  storage=f"sqlite:///{(ctx.work / 'study.db').resolve()}",
                  study=ctx.spec.slug, seed=ctx.seed, objective=s.objective,
                  evaluator=evaluator, space=space, progress=ctx.progress, rungs=s.rungs,
                  **s.options)


@register_method("nas")
def nas(ctx: Context) -> Pruned:
    """``nas:<strategy>``: the strategy's name is ``ctx.spec.strategy``."""
    from nasprune.search import Proxy
    from nasprune.search.rungs import AUTO, as_rungs
    from nasprune.search.spaces import make_space

    s = ctx.settings
    start, cpu_start = time.perf_counter(), time.process_time()
    space = make_space(s.space, ctx.model, ctx.example, min_keep=s.min_keep,
                       round_to=ctx.cfg.round_to)
    evaluator = Proxy(ctx.model, ctx.data, bn_batches=s.bn_batches, val_size=s.val_size,
                      device=ctx.device, example_inputs=ctx.example,
                      criterion=ctx.cfg.criterion, round_to=ctx.cfg.round_to,
                      min_channels=space.min_channels, seed=ctx.seed,
                      rungs=None if as_rungs(s.rungs, auto=True) == AUTO else s.rungs)
    ctx.work.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Optuna's notices about its own deprecated/experimental heartbeat classes are not
        # the user's business in an experiment log.
        warnings.filterwarnings("ignore", category=FutureWarning, module="nasprune.search")
        warnings.filterwarnings("ignore", module="optuna")
        result = _search(ctx, s, evaluator, space)
    model = ctx.prune(result.best.ratios)
    search_info = result.to_dict()
    search_info["candidates"] = [c.to_dict() for c in result.trials]
    # CPU seconds of this process (all its threads): on a shared machine the wall time
    # measures the load, this the work.
    return Pruned(model, search_seconds=time.perf_counter() - start,
                  info={"ratios": result.best.ratios, "proxy_score": result.best.score,
                        "trials": len(result.trials), "strategy": ctx.spec.strategy,
                        "search_cpu_seconds": time.process_time() - cpu_start},
                  artifacts={"search": search_info})


__all__ = ["nas"]
