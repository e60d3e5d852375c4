"""The compression methods an experiment compares, each brought to the same MACs budget.

A method takes the trained unpruned model (never modified) and returns a compressed copy;
the experiment runner then gives every copy the same fine-tuning and measures it. How each
one meets the budget (a fraction ``b`` of the unpruned model's MACs):

* ``unpruned``    — the reference: the trained model itself, not fine-tuned further.
* ``threshold``   — unstructured magnitude pruning (masks). Shapes do not change, so the dense
  MACs stay at 100 %; the global sparsity is bisected until the *sparse* MACs (multiplies by
  non-zero weights, what a sparse kernel would do) are at most ``b``.
* ``sensitivity`` — per-group sensitivity analysis (validation split), then
  ``ratios_from_sensitivity`` allocates ratios meeting ``b`` (robust groups lose more).
* ``uniform``     — one ratio for every group, bisected to the largest MACs ≤ ``b``.
* ``global``      — one global channel ranking (group-normalised importance), the global
  fraction bisected to the largest MACs ≤ ``b``.
* ``slimming``    — network slimming: continue training with L1 on BatchNorm γ, then cut
  the smallest |γ| globally (bisected to ≤ ``b``).
* ``layer``       — remove whole residual blocks (least important first) as long as the
  model stays at or above ``b`` and at most ``max_fraction`` of the blocks go; the rest of
  the way is uniform channel pruning. A model without residual blocks (e.g. ``digitscnn``)
  therefore gets uniform channel pruning only.
* ``nas:<strategy>`` — ``nasprune.search`` with that strategy at ``b`` (trials stored in a
  SQLite study in the run directory, so an interrupted search resumes), then pruning to the
  best ratios.

Add a method with ``@register_method("name")`` on a function ``(ctx: Context) -> Pruned``.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.registry import Registry


@dataclass
class Context:
    """What a method gets: the config, its own settings, the trained model and the data."""

    cfg: Any  # ExperimentConfig
    spec: Any  # MethodSpec
    data: Any  # nasprune Dataset
    model: nn.Module  # the trained unpruned model: read only
    example: torch.Tensor
    base_macs: int
    seed: int
    device: torch.device
    work: Path  # scratch directory kept across interrupted runs of this method
    progress: bool = True

    @property
    def settings(self) -> Any:
        return self.spec.settings

    @property
    def target_macs(self) -> float:
        """The budget as an absolute MAC count."""
        return self.cfg.budget * self.base_macs

    def prune(self, ratios: Any, **kw: Any) -> nn.Module:
        """``nasprune.prune`` with the experiment's criterion and rounding."""
        from nasprune.pruning import prune

        kw.setdefault("criterion", self.cfg.criterion)
        kw.setdefault("round_to", self.cfg.round_to)
        return prune(self.model, self.example, ratios, data=self.data, **kw)


@dataclass
class Pruned:
    """A method's compressed model and what it cost to find it."""

    model: nn.Module
    search_seconds: float = 0.0  # analysis / search / bisection time
    extra_train_seconds: float = 0.0  # training besides the common fine-tuning
    finetune: bool = True  # False only for the unpruned reference
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able: ratios, notes
    artifacts: dict[str, Any] = field(default_factory=dict)  # written as <name>.json


Method = Callable[[Context], Pruned]
METHODS: Registry[Method] = Registry("experiment method")


def register_method(name: str) -> Callable[[Method], Method]:
    """Register ``fn(ctx) -> Pruned`` as the experiment method ``name``."""
    return METHODS.register(name)


def _macs(model: nn.Module, example: torch.Tensor) -> int:
    from nasprune.metrics import count_macs

    return count_macs(model, example)


def _ratios_of(model: nn.Module) -> dict[str, float] | None:
    info = getattr(model, "nasprune_pruning", None)
    ratios = info.get("ratios") if isinstance(info, dict) else None
    return {k: float(v) for k, v in ratios.items()} if isinstance(ratios, dict) else None


def smallest_cut(make: Callable[[float], tuple[Any, float]], limit: float, lo: float,
                   hi: float, steps: int = 16, what: str = "") -> tuple[Any, float]:
    """The smallest knob in ``[lo, hi]`` whose cost is ≤ ``limit`` (cost falls as it grows).

    ``make(knob) -> (model, cost)``; returns ``(model, knob)``. Raises NaspruneError when even
    ``hi`` costs too much.
    """
    best, cost = make(hi)
    if cost > limit:
        raise NaspruneError(f"{what} cannot reach the budget: at {hi:.3f} the model still has "
                            f"{cost:,.0f} MACs, the budget is {limit:,.0f}")
    first, cost_lo = make(lo)
    if cost_lo <= limit:
        return first, lo
    knob = hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        m, c = make(mid)
        if c <= limit:
            hi, best, knob = mid, m, mid
        else:
            lo = mid
    return best, knob


@register_method("unpruned")
def unpruned(ctx: Context) -> Pruned:
    return Pruned(copy.deepcopy(ctx.model), finetune=False,
                  info={"note": "the trained model as is (no pruning, no fine-tuning)"})


@register_method("threshold")
def threshold_method(ctx: Context) -> Pruned:
    from nasprune.metrics import sparse_macs
    from nasprune.pruning import threshold

    start = time.perf_counter()
    scope = ctx.settings.scope
    reports: dict[float, Any] = {}

    def make(sparsity: float) -> tuple[nn.Module, float]:
        m = copy.deepcopy(ctx.model)
        reports[sparsity] = threshold(m, sparsity=sparsity, scope=scope)
        return m, float(sparse_macs(m, ctx.example))

    model, sparsity = smallest_cut(make, ctx.target_macs, 0.0, 0.999, steps=20,
                                     what="threshold pruning")
    rep = reports[sparsity]
    return Pruned(model, search_seconds=time.perf_counter() - start, info={
        "sparsity": rep.sparsity, "scope": scope,
        "note": "unstructured: dense MACs unchanged; sparse MACs meet the budget",
    })


@register_method("sensitivity")
def sensitivity_method(ctx: Context) -> Pruned:
    from nasprune.methods import ratios_from_sensitivity, sensitivity
    from nasprune.search import SearchSpace

    s = ctx.settings
    start = time.perf_counter()
    table = sensitivity(ctx.model, ctx.data, ctx.example, levels=s.levels,
                        criterion=ctx.cfg.criterion, bn_batches=s.bn_batches,
                        val_size=s.val_size, round_to=ctx.cfg.round_to)
    space = SearchSpace(ctx.model, ctx.example, round_to=ctx.cfg.round_to)
    ratios = ratios_from_sensitivity(table, space, target_macs=ctx.cfg.budget)
    model = ctx.prune(ratios)
    return Pruned(model, search_seconds=time.perf_counter() - start,
                  info={"ratios": ratios}, artifacts={"sensitivity": table.to_dict()})


def _one_knob(ctx: Context, prune_at: Callable[[float], nn.Module], knob: str,
              what: str) -> Pruned:
    """Structured pruning steered by one number, bisected to the MACs budget."""
    start = time.perf_counter()

    def make(r: float) -> tuple[nn.Module, float]:
        m = prune_at(r)
        return m, float(_macs(m, ctx.example))

    model, value = smallest_cut(make, ctx.target_macs, 0.0, 0.95, steps=14, what=what)
    return Pruned(model, search_seconds=time.perf_counter() - start,
                  info={knob: value, "ratios": _ratios_of(model)})


@register_method("uniform")
def uniform(ctx: Context) -> Pruned:
    return _one_knob(ctx, ctx.prune, "ratio", "uniform pruning")


@register_method("global")
def global_method(ctx: Context) -> Pruned:
    return _one_knob(ctx, lambda r: ctx.prune("global", global_target=r), "global_fraction",
                     "global pruning")


@register_method("slimming")
def slimming(ctx: Context) -> Pruned:
    from nasprune.methods import slim

    s = ctx.settings
    ft = ctx.cfg.finetune
    sparse = copy.deepcopy(ctx.model)
    trained = 0.0
    if s.epochs > 0:
        from nasprune.train import finetune

        res = finetune(sparse, ctx.data, epochs=s.epochs, optimizer=ft.optimizer, lr=ft.lr,
                       weight_decay=ft.weight_decay, schedule=ft.schedule,
                       batch_size=ft.batch_size, augment=ft.augment, bn_l1=s.bn_l1,
                       seed=ctx.seed, device=ctx.device, progress=ctx.progress)
        trained = res.train_seconds
    start = time.perf_counter()
    model = slim(sparse, ctx.example, macs_target=ctx.cfg.budget, max_ratio=s.max_ratio,
                 round_to=ctx.cfg.round_to)
    return Pruned(model, search_seconds=time.perf_counter() - start,
                  extra_train_seconds=trained,
                  info={"bn_l1": s.bn_l1, "sparsity_epochs": s.epochs,
                        "ratios": _ratios_of(model)})


@register_method("layer")
def layer(ctx: Context) -> Pruned:
    from nasprune.methods.gradual import prune_to_macs
    from nasprune.pruning import remove_blocks, residual_blocks

    s = ctx.settings
    start = time.perf_counter()
    blocks = residual_blocks(ctx.model, ctx.example)
    limit = int(s.max_fraction * len(blocks))
    chosen, removed = copy.deepcopy(ctx.model), 0
    for n in range(1, limit + 1):
        m = remove_blocks(ctx.model, ctx.example, n=n, criterion=s.criterion, data=ctx.data)
        if _macs(m, ctx.example) < ctx.target_macs:
            break  # one block too many: the channels close the remaining gap instead
        chosen, removed = m, n
    names = list(getattr(chosen, "nasprune_pruning", {}).get("removed", [])) if removed else []
    if _macs(chosen, ctx.example) > ctx.target_macs:
        chosen = prune_to_macs(chosen, ctx.example, ctx.target_macs,
                               criterion=ctx.cfg.criterion, round_to=ctx.cfg.round_to,
                               data=ctx.data)
    note = (f"removed {removed} of {len(blocks)} residual blocks, then uniform channels"
            if blocks else "no residual blocks in this model: uniform channel pruning only")
    return Pruned(chosen, search_seconds=time.perf_counter() - start,
                  info={"blocks": len(blocks), "removed_blocks": names, "note": note,
                        "ratios": _ratios_of(chosen)})


def _search(ctx: Context, s: Any, evaluator: Any, space: Any) -> Any:
    from nasprune.search import Budget, search

    return search(ctx.model, ctx.example, ctx.data, strategy=ctx.spec.strategy,
                  target=Budget(macs=ctx.cfg.budget), trials=s.trials,
                  storage=f"sqlite:///{(ctx.work / 'study.db').resolve()}",
                  study=ctx.spec.slug, seed=ctx.seed, objective=s.objective,
                  evaluator=evaluator, space=space, progress=ctx.progress, **s.options)


@register_method("nas")
def nas(ctx: Context) -> Pruned:
    """``nas:<strategy>``: the strategy's name is ``ctx.spec.strategy``."""
    from nasprune.search import Proxy, SearchSpace

    s = ctx.settings
    start = time.perf_counter()
    space = SearchSpace(ctx.model, ctx.example, min_keep=s.min_keep, round_to=ctx.cfg.round_to)
    evaluator = Proxy(ctx.model, ctx.data, bn_batches=s.bn_batches, val_size=s.val_size,
                          device=ctx.device, example_inputs=ctx.example,
                          criterion=ctx.cfg.criterion, round_to=ctx.cfg.round_to,
                          min_channels=space.min_channels, seed=ctx.seed)
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
    return Pruned(model, search_seconds=time.perf_counter() - start,
                  info={"ratios": result.best.ratios, "proxy_score": result.best.score,
                        "trials": len(result.trials), "strategy": ctx.spec.strategy},
                  artifacts={"search": search_info})


__all__ = ["METHODS", "Context", "Pruned", "smallest_cut", "register_method"]
