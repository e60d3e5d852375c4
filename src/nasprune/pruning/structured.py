"""Structured pruning: physically remove the least important channels of every group.

``prune`` copies the model, scores each dependency group's channels with a criterion,
picks how many each group keeps with ``kept_channels`` (the rounding rule the search's
cost model shares) and lets Torch-Pruning cut them from every coupled layer at once.
``plan`` returns the same choice without cutting, so tests can mask exactly those channels.

Exactness: removing channels gives the same outputs as zeroing them in the original (eval
mode) for convs, linears, BatchNorm, residual adds, concatenations, depthwise and grouped
convs (same offsets cut from every conv group), squeeze-excitation gates and multi-head
attention (every head loses the same number of dims; queries are rescaled so the softmax
temperature 1/sqrt(head_dim) is unchanged). LayerNorm/GroupNorm groups are pruned but not
exactly: their statistics run over the channels that remain.
Transformer attention layers (:mod:`nasprune.pruning.attention`) lose whole heads: the
pruned layer equals the original with those heads' q/k/v rows zeroed.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.attention import FFN, HEADS, select_heads, sync_config, sync_heads
from nasprune.pruning.conv1d import sync_conv1d, sync_conv1d_config
from nasprune.pruning.criteria import CRITERIA, ScoreContext
from nasprune.pruning.criteria.taylor import NEEDS_DATA
from nasprune.pruning.gqa import sync_gqa_config
from nasprune.pruning.graph import (
    ChannelGroup,
    Steps,
    build_graph,
    check_steps,
    ignored_names,
    iter_tp_groups,
    members,
    output_shapes,
)
from nasprune.pruning.grouping import cut_group
from nasprune.pruning.layers import split_dropped_blocks, without_blocks
from nasprune.pruning.mha import pack_attention, split_attention
from nasprune.registry import did_you_mean

Ratios = float | Mapping[str, float] | str


@dataclass
class GroupPlan:
    """What pruning does to one group: channels kept and the group channels removed.

    ``out_channels`` maps every layer whose outputs shrink (convs, linears, norms, attention)
    to its own removed channel indices (they differ from ``removed`` after a concat).
    """

    group: ChannelGroup
    ratio: float
    keep: int
    removed: list[int]
    out_channels: dict[str, list[int]] = field(default_factory=dict)


def _check_ratio(value: object, where: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or math.isnan(float(value)) or not 0.0 <= float(value) < 1.0:  # type: ignore[arg-type]
        raise NaspruneError(
            f"prune ratio for {where} must be a number in [0, 1) (the fraction of channels "
            f"removed), got {value!r}"
        )
    return float(value)  # type: ignore[arg-type]


def _check_options(criterion: str, round_to: Steps, min_channels: int, data=None) -> None:
    CRITERIA.get(criterion)  # unknown names fail here with a did-you-mean hint
    if criterion == "taylor" and data is None:
        # Checked up front so the answer does not depend on whether any channel is removed.
        raise NaspruneError(f"criterion 'taylor' needs training data: {NEEDS_DATA}")
    check_steps(round_to)
    if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 1:
        raise NaspruneError(f"min_channels must be a positive integer, got {min_channels!r}")


def _requested(ratios: Ratios, names: list[str], global_target: float | None) -> dict | None:
    """Per-group prune ratios from a float or a dict; None for global pruning."""
    if isinstance(ratios, str):
        if ratios != "global":
            raise NaspruneError(f"ratios must be a float, a dict or 'global', got {ratios!r}")
        if global_target is None:
            raise NaspruneError("ratios='global' needs global_target (fraction of channels)")
        _check_ratio(global_target, "global_target")
        return None
    if global_target is not None:
        raise NaspruneError("global_target is only used with ratios='global'")
    if isinstance(ratios, Mapping):
        unknown = [k for k in ratios if k not in names]
        if unknown:
            raise NaspruneError(
                f"no prunable group named '{unknown[0]}': {did_you_mean(str(unknown[0]), names)}"
            )
        return {n: _check_ratio(ratios.get(n, 0.0), f"group '{n}'") for n in names}
    r = _check_ratio(ratios, "all groups")
    return {n: r for n in names}


def select(scores: torch.Tensor, keep: int, divisor: int = 1, aligned: bool = False) -> list[int]:
    """The group channels to remove: the lowest-scoring ``channels - keep``.

    With ``divisor`` > 1 each of the ``divisor`` equal blocks (conv groups, attention heads)
    loses the same number; ``aligned`` also removes the same offsets in every block.
    """
    channels = scores.numel()
    n = channels - keep
    if n <= 0:
        return []
    if divisor == 1:
        return sorted(torch.argsort(scores, stable=True)[:n].tolist())
    block, per = channels // divisor, n // divisor
    s = scores.view(divisor, block)
    base = (torch.arange(divisor) * block)[:, None]
    if aligned:
        picked = torch.argsort(s.sum(0), stable=True)[:per][None, :] + base
    else:
        picked = torch.argsort(s, dim=1, stable=True)[:, :per] + base
    return sorted(picked.flatten().tolist())


def _global_ratios(scored: list[tuple[ChannelGroup, torch.Tensor]], target: float,
                   round_to: Steps, min_channels: int) -> dict[str, float]:
    """Per-group ratios that remove ``target`` of all channels, lowest scores first.

    Scores are normalised by their group mean so groups compare fairly (Torch-Pruning's
    global ranking); every group keeps at least what ``kept_channels`` allows at ratio → 1.
    """
    entries, cap = [], {}
    for g, s in scored:
        cap[g.name] = g.channels - g.kept(1.0 - 1e-9, round_to, min_channels)
        mean = s.mean()
        entries += [(v, g.name) for v in (s / mean if mean > 0 else s).tolist()]
    todo = int(round(target * sum(g.channels for g, _ in scored)))
    taken = dict.fromkeys(cap, 0)
    for _, name in sorted(entries, key=lambda e: e[0]):
        if todo <= 0:
            break
        if taken[name] < cap[name]:
            taken[name] += 1
            todo -= 1
    return {g.name: taken[g.name] / g.channels for g, _ in scored}


def _plan(model: nn.Module, example_inputs, ratios: Ratios, criterion: str,
          round_to: Steps, min_channels: int, ignored, data, global_target, seed: int):
    """Score and choose on ``model`` (may set its ``.grad``): (graph, [(GroupPlan, tp_group)])."""
    _check_options(criterion, round_to, min_channels, data)
    graph = build_graph(model, example_inputs)
    pairs = list(iter_tp_groups(model, graph, example_inputs, ignored))
    requested = _requested(ratios, [g.name for g, _ in pairs], global_target)
    check_steps(round_to, [g.name for g, _ in pairs])
    score = CRITERIA.get(criterion)
    ctx = ScoreContext(model, example_inputs, data, seed)
    scored = []
    for info, tp_group in pairs:
        group_members = members(model, graph, tp_group)
        if requested is not None and requested[info.name] == 0.0:
            scored.append((info, group_members, None))
            continue
        s = score(group_members, info.channels, ctx).double()
        scored.append((info, group_members, s))
    if requested is None:
        requested = _global_ratios([(g, s) for g, _, s in scored], global_target, round_to,
                                   min_channels)
    plans = []
    for (info, group_members, s), (_, tp_group) in zip(scored, pairs, strict=True):
        ratio = requested[info.name]
        keep = info.kept(ratio, round_to, min_channels)
        if s is None:
            removed = []
        elif info.kind == HEADS:
            removed = select_heads(s, keep, info.divisor)
        else:
            removed = select(s, keep, info.divisor, info.aligned)
        gone = set(removed)
        outs = {m.name: sorted(int(i) for i, r in zip(m.idx.tolist(), m.root.tolist(),
                                                      strict=True) if r in gone)
                for m in group_members if m.role == "out"}
        plans.append((GroupPlan(info, ratio, keep, removed, outs), tp_group))
    return graph, plans


def plan(model: nn.Module, example_inputs, ratios: Ratios, criterion: str = "l1",
         round_to: Steps = None, min_channels: int = 1,
         ignored: Iterable[str | nn.Module] | None = None, data=None,
         global_target: float | None = None, seed: int = 0) -> list[GroupPlan]:
    """What ``prune`` with the same arguments removes, without touching ``model``."""
    ignored = ignored_names(model, ignored)  # module objects do not survive the copy
    ratios, _ = split_dropped_blocks(model, example_inputs, ratios)
    work = split_attention(copy.deepcopy(model))
    _, plans = _plan(work, example_inputs, ratios, criterion, round_to, min_channels, ignored,
                     data, global_target, seed)
    return [p for p, _ in plans]


def removed_channels(model: nn.Module, example_inputs, ratios: Ratios, **kw) -> dict[str, list[int]]:
    """Group name → group channels ``prune`` would remove (same arguments as ``prune``)."""
    return {p.group.name: p.removed for p in plan(model, example_inputs, ratios, **kw)}


@torch.no_grad()
def _rescale_attention(heads_before: list[tuple[nn.MultiheadAttention, int]]) -> None:
    """Keep attention logits unchanged after heads got narrower.

    PyTorch scales q·k by 1/sqrt(head_dim); removing dims shrinks head_dim, so the queries are
    multiplied by sqrt(new/old) — the pruned layer then equals the original with those dims
    zeroed (Torch-Pruning leaves the scale wrong).
    """
    for mha, old in heads_before:
        new = mha.embed_dim // mha.num_heads
        if new != old:
            s = math.sqrt(new / old)
            mha.in_proj_weight[: mha.embed_dim].mul_(s)
            if mha.in_proj_bias is not None:
                mha.in_proj_bias[: mha.embed_dim].mul_(s)


def prune(
    model: nn.Module,
    example_inputs,
    ratios: Ratios,
    criterion: str = "l1",
    round_to: Steps = None,
    min_channels: int = 1,
    ignored: Iterable[str | nn.Module] | None = None,
    data=None,
    global_target: float | None = None,
    seed: int = 0,
) -> nn.Module:
    """A physically smaller copy of ``model`` with the least important channels removed.

    ``ratios``: one prune ratio for every group (0.5 removes half the channels), a dict
    group name → ratio (groups not named keep everything; names from ``groups()``; 1.0
    keyed by a block's name from ``residual_blocks`` drops that block whole, after the cut),
    or ``"global"``: remove ``global_target`` of all prunable channels (summed over groups),
    choosing the lowest group-normalised importance across the whole network, so each group
    gets its own ratio. ``criterion`` names an entry of ``CRITERIA``; ``taylor`` needs
    ``data`` (a built-in Dataset, a :class:`~nasprune.task.Task` or a ``DataLoader``: its
    gradients come from the task's loss on its first training batches). ``round_to`` keeps channel counts multiples of it (a dict group name → step: each group
    its own step, e.g. measured by :mod:`nasprune.search.widths`); every group keeps at least
    ``min_channels``. The output layer and ``ignored`` layers are never pruned. ``seed``
    seeds the ``random`` criterion and the batches ``taylor`` draws. The input
    model is untouched; the copy keeps its train/eval mode and ``nasprune_arch`` and records
    how it was pruned in ``nasprune_pruning``. ``example_inputs`` may be a tensor, a tuple
    of positional inputs or a dict of keyword arguments. ``ignored`` takes layer names or
    module objects; a container (a block, a head) leaves every layer inside it alone. A
    model with no prunable group is an error, never a silent unpruned copy.
    """
    ignored = ignored_names(model, ignored)  # module objects do not survive the copy
    ratios, dropped = split_dropped_blocks(model, example_inputs, ratios)
    # nn.MultiheadAttention loses whole heads: converted first, packed back if untouched.
    pruned = split_attention(copy.deepcopy(model))
    graph, plans = _plan(pruned, example_inputs, ratios, criterion, round_to, min_channels,
                         ignored, data, global_target, seed)
    if not plans:
        raise NaspruneError(
            f"no prunable channel group found in {type(model).__name__}: every layer is an "
            "output layer, ignored, or in a layout nasprune cannot cut exactly")
    # Surgery replaces parameters with new ones (requires_grad=True): remember frozen ones.
    frozen = {n for n, p in pruned.named_parameters() if not p.requires_grad}
    _cut(pruned, graph, plans)
    heads = sync_heads(pruned)
    pack_attention(pruned)
    sync_conv1d(pruned)
    sync_conv1d_config(pruned)
    sync_gqa_config(pruned)
    sync_config(pruned, heads, [p.group.out_layers[0] for p, _ in plans if p.group.kind == FFN])
    if criterion == "taylor":
        pruned.zero_grad(set_to_none=True)
    for n, p in pruned.named_parameters():
        if n in frozen:
            p.requires_grad_(False)
    _verify(pruned, example_inputs, graph.nasprune_output_shapes)
    record = _record(plans, criterion, round_to, min_channels)
    if isinstance(ratios, str):
        record["global_target"] = float(global_target)  # type: ignore[arg-type]
    if getattr(model, "nasprune_pruning", None):
        record["previous"] = model.nasprune_pruning
    pruned.nasprune_pruning = record
    # Whole blocks go after the cut: group names (and so the ratios' keys) stay the same.
    return without_blocks(pruned, dropped, "ratio", {}) if dropped else pruned


def _cut(pruned: nn.Module, graph, plans: list) -> None:
    """Remove each plan's channels from ``pruned`` (in place) through its Torch-Pruning group."""
    for p, tp_group in plans:
        if not p.removed:
            continue
        attn = [(m, m.embed_dim // m.num_heads) for m in pruned.modules()
                if isinstance(m, nn.MultiheadAttention) and m in graph.module2node]
        try:
            cut_group(graph, tp_group, p.removed)
        except Exception as exc:  # Torch-Pruning asserts on layouts it cannot cut
            raise NaspruneError(
                f"cannot prune group '{p.group.name}': {type(exc).__name__}: {exc}; "
                f"pass one of its layers in ignored= to leave it alone"
            ) from exc
        _rescale_attention(attn)


def _record(plans: list, criterion: str, round_to: Steps,
            min_channels: int) -> dict[str, Any]:
    """The ``nasprune_pruning`` record of a structured prune (ratios and widths per group)."""
    return {
        "method": "structured",
        "criterion": criterion,
        "ratios": {p.group.name: p.ratio for p, _ in plans},
        "round_to": dict(round_to) if isinstance(round_to, Mapping) else round_to,
        "min_channels": min_channels,
        "channels": {p.group.name: [p.group.channels, p.keep] for p, _ in plans},
    }


def _verify(pruned: nn.Module, example_inputs, expected: list[tuple[int, ...]]) -> None:
    """The pruned model must run and return the same output shapes."""
    try:
        shapes = output_shapes(pruned, example_inputs)
    except Exception as exc:
        raise NaspruneError(
            f"the pruned model no longer runs ({type(exc).__name__}: {exc}); this layout is "
            f"not supported: pass the layers involved in ignored="
        ) from exc
    if shapes != expected:
        raise NaspruneError(
            f"pruning changed the output shapes {expected} → {shapes}; pass the output layers "
            f"in ignored="
        )
