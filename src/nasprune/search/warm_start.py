"""Warm start: the zero-search candidates every study evaluates before its strategy runs.

A search that cannot beat the one-knob baselines wastes its trials, so every study first
evaluates, at the search's own budget:

- ``uniform``: one prune ratio for every group;
- ``global``: one ranking of all channels under nasprune's score (the proxy's criterion,
  each layer's norms divided by their mean before a group averages them) — the ranking
  ``nasprune.prune(model, x, "global")`` and the experiment's ``global`` method use;
- ``tp-global``: the same ranking under Torch-Pruning's raw-mean L1 score (a group's raw
  per-layer norms averaged, then divided by their mean), its ``MetaPruner`` default.

On a Transformer (a space with both attention-head and FFN groups) one more:

- ``ffn``: every head kept, one prune ratio for every FFN width — Minitron's width axis
  without the heads, where its best uniform network usually lies.

In the blocks space (:mod:`nasprune.search.block_space`) all of them keep every block, and
Minitron's depth axis joins them:

- ``uniform-depth<d>`` (and ``ffn-depth<d>`` on a Transformer): the ``n - d`` blocks whose
  residual branch changes its input least (``‖block(x) − x‖ / ‖x‖`` on a few training
  batches) dropped, the rest as ``uniform`` (``ffn``), for every depth ``d`` from ``n - 1``
  down to half the ``n`` blocks.

Each is one knob (the ratio, the number of channels the ranking removes) bisected on the
space's cost model to the largest network at or below the budget, as the baselines
bisect theirs, and is written as a keep vector in the space's bounds. The vectors are
enqueued (``study.enqueue_trial``) with the user attr ``warm_start`` = name, so they are
the study's first trials, every sampler (Optuna's and nasprune's learned ones) learns from
them like from any other trial, and the search's best is never below them on the proxy.
Candidates that round to the same channel counts are enqueued once, under the first name.

A sensitivity-derived candidate is not among them: its analysis (one proxy score per group
and level) costs as much as many trials, and its allocation lives in
:mod:`nasprune.methods`, which builds on this package.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from torch import nn

from nasprune.pruning.attention import FFN, HEADS
from nasprune.pruning.criteria import CRITERIA, ScoreContext, to_group, weight_rows
from nasprune.pruning.graph import build_graph, ignored_names, iter_tp_groups, members
from nasprune.pruning.layers import output_norm_scores
from nasprune.pruning.mha import split_attention
from nasprune.pruning.structured import _global_ratios  # the ranking prune("global") uses
from nasprune.search.budget import Budget
from nasprune.search.space import SearchSpace

ATTR = "warm_start"  # the trial user attr naming a warm-start candidate
NAMES = ("uniform", "global", "tp-global")


def raw_mean_l1(group_members: list, channels: int) -> torch.Tensor:
    """Torch-Pruning's group L1 score: raw per-layer norms averaged, then divided by the mean.

    nasprune's criteria divide each layer by its own mean first (``combine``), so a wide
    layer cannot dominate; this is the other choice, for the ``tp-global`` candidate.
    """
    per_layer = [to_group(m, rows.detach().abs().sum(1), channels)
                 for m in group_members if (rows := weight_rows(m)) is not None]
    if not per_layer:
        return torch.zeros(channels, dtype=torch.float64)
    s = torch.stack(per_layer).mean(0)
    return s / s.mean() if s.mean() > 0 else s


def channel_scores(model: nn.Module, example_inputs: Any, ignored: Any, criterion: str,
                   data: Any, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Per ranking ("global", "tp-global"): group name → channel scores (higher = keep)."""
    names = ignored_names(model, ignored)  # module objects do not survive the copy
    # A data-driven criterion (taylor) writes gradients; attention heads as pruning sees them.
    work = split_attention(copy.deepcopy(model))
    graph = build_graph(work, example_inputs)
    score = CRITERIA.get(criterion)
    ctx = ScoreContext(work, example_inputs, data, seed)
    out: dict[str, dict[str, torch.Tensor]] = {"global": {}, "tp-global": {}}
    for info, tp_group in iter_tp_groups(work, graph, example_inputs, names):
        group_members = members(work, graph, tp_group)
        out["global"][info.name] = score(group_members, info.channels, ctx).double()
        out["tp-global"][info.name] = raw_mean_l1(group_members, info.channels)
    return out


def uniform_keep(space: SearchSpace, budget: Budget, kinds: set[str] | None = None,
                 genes: np.ndarray | None = None, steps: int = 40) -> np.ndarray | None:
    """One prune ratio for every group (of ``kinds``, the others kept whole): the smallest
    whose network fits the budget.

    The point is built from per-group ratios (``nearest_keep``), so a space with more than
    widths keeps its other coordinates whole — every block of the blocks space stays —
    unless ``genes`` gives them (the blocks space's keep/drop genes)."""
    chosen = np.array([kinds is None or g.kind in kinds for g in space.groups])

    def at(r: float) -> np.ndarray:
        point = space.nearest_keep(np.where(chosen, 1.0 - r, 1.0))
        return point if genes is None else np.concatenate([point[: len(chosen)], genes])

    return _smallest_fitting(at, space, budget, 0.0, 1.0, steps, integer=False)


def _width_axes(space: SearchSpace) -> list[tuple[str, set[str] | None]]:
    """``("uniform", every group)``, and ``("ffn", FFN groups)`` on a Transformer."""
    kinds = {g.kind for g in space.groups}
    return [("uniform", None)] + ([("ffn", {FFN})] if {HEADS, FFN} <= kinds else [])


def depth_keeps(space: SearchSpace, budget: Budget, model: nn.Module, example_inputs: Any,
                data: Any) -> list[tuple[str, np.ndarray]]:
    """The ``uniform-depth<d>`` (``ffn-depth<d>``) candidates of a space with blocks (none
    for the others)."""
    blocks: list[str] = getattr(space, "blocks", [])
    if not blocks:
        return []
    scores = output_norm_scores(model, blocks, example_inputs, data=data)
    order = sorted(blocks, key=lambda b: (scores[b], blocks.index(b)))
    out = []
    for depth in range(len(blocks) - 1, (len(blocks) - 1) // 2, -1):
        gone = set(order[: len(blocks) - depth])
        genes = np.array([0.0 if b in gone else 1.0 for b in blocks])
        for axis, kinds in _width_axes(space):
            keep = uniform_keep(space, budget, kinds, genes)
            if keep is not None:
                out.append((f"{axis}-depth{depth}", keep))
    return out


def ranking_keep(space: SearchSpace, budget: Budget,
                 scores: dict[str, torch.Tensor]) -> np.ndarray | None:
    """One channel ranking over all groups: the fewest removals whose network fits."""
    if any(n not in scores for n in space.names):
        return None  # a space built with other groups than the model's (e.g. ignored=)
    scored = [(g, scores[g.name]) for g in space.groups]
    total = int(space.channels.sum())

    def at(k: float) -> np.ndarray:
        ratios = _global_ratios(scored, k / total, space.round_to, space.min_channels)
        return np.clip(space.keep_from_ratios(ratios), space.lower, space.upper)

    return _smallest_fitting(at, space, budget, 0, total, total.bit_length() + 1,
                             integer=True)


def _smallest_fitting(at: Callable[[float], np.ndarray], space: SearchSpace, budget: Budget,
                      lo: float, hi: float, steps: int, integer: bool) -> np.ndarray | None:
    """``at(knob)`` for the smallest knob in ``[lo, hi]`` that fits (cost falls as it grows)."""
    if space.within(at(lo), budget):
        return at(lo)
    if not space.within(at(hi), budget):
        return None
    for _ in range(steps):
        if hi - lo <= (1 if integer else 0):
            break
        mid = (lo + hi) // 2 if integer else (lo + hi) / 2
        lo, hi = (lo, mid) if space.within(at(mid), budget) else (mid, hi)
    return at(hi)


def candidates(space: SearchSpace, budget: Budget, model: nn.Module, example_inputs: Any,
               criterion: str = "l1", ignored: Any = None, data: Any = None,
               seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """The warm-start candidates as ``(name, keep vector)``, distinct in channel counts."""
    found = [("uniform", uniform_keep(space, budget))]
    for name, scores in channel_scores(model, example_inputs, ignored, criterion, data,
                                       seed).items():
        found.append((name, ranking_keep(space, budget, scores)))
    found += [(axis, uniform_keep(space, budget, kinds))
              for axis, kinds in _width_axes(space)[1:]]
    found += depth_keeps(space, budget, model, example_inputs, data)
    out, seen = [], set()
    for name, keep in found:
        if keep is None:
            continue
        kept = tuple(space.kept(keep))
        if kept not in seen:
            seen.add(kept)
            out.append((name, keep))
    return out


def enqueue(study: optuna.Study, space: SearchSpace,
            found: list[tuple[str, np.ndarray]]) -> None:
    """Queue the candidates as the study's next trials, named by the ``warm_start`` attr."""
    for name, keep in found:
        params = {space.param_name(i): float(keep[i]) for i in range(space.dim)}
        study.enqueue_trial(params, user_attrs={ATTR: name})


def start(study: optuna.Study, space: SearchSpace, room: int,
          make: Callable[[], list[tuple[str, np.ndarray]]]) -> None:
    """Enqueue the candidates ``make()`` builds that the study lacks, at most ``room``.

    The study records the candidates' names (user attr ``warm_start``) the first time, so
    a resumed call that finds them all among its trials (in any state: a failed candidate
    is not retried forever) builds nothing; one resumed after fewer trials than candidates
    enqueues the rest. ``room`` (trials still to start) keeps a short search from leaving
    queued trials behind in its storage.
    """
    have = {t.user_attrs.get(ATTR) for t in study.get_trials(deepcopy=False)}
    planned = study.user_attrs.get(ATTR)
    if room <= 0 or (planned is not None and set(planned) <= have):
        return
    found = make()
    if planned is None:
        study.set_user_attr(ATTR, [name for name, _ in found])
    enqueue(study, space, [(n, k) for n, k in found if n not in have][:room])


def is_repeat(trial: optuna.Trial, name: str) -> bool:
    """Whether an earlier trial already holds (or will run) warm-start candidate ``name``.

    Two workers opening a fresh study at the same instant may both enqueue the warm start;
    the later copy is then skipped. A failed earlier copy does not count (this one retries).
    """
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    return any(t.number < trial.number and t.user_attrs.get(ATTR) == name
               for t in trial.study.get_trials(deepcopy=False, states=live))


__all__ = ["ATTR", "NAMES", "candidates", "channel_scores", "depth_keeps", "enqueue", "is_repeat",
           "ranking_keep", "raw_mean_l1", "start", "uniform_keep"]
