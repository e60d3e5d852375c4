"""The pruning methods compared by ``bench/transformers_prune.py`` (issue 14), each
delivering a network at or below a params target (absolute, counted on the real network):

- ``tp-uniform``: Torch-Pruning's own recipe for HF attention (``MetaPruner`` with
  ``num_heads``, ``prune_num_heads=True``, ``head_pruning_ratio``; the layers writing into
  the residual stream ignored, as its ``--bottleneck`` examples do, so only heads and FFN
  width go; the head-count attributes updated by hand afterwards, as its examples do);
  one ratio for heads and FFN, the largest network under the target;
- ``uniform``: the same uniform heads + FFN ratio through nasprune's own engine (also where
  Torch-Pruning cannot trace the model: HF Llama's grouped-query attention);
- ``minitron``: Minitron-style best uniform width/depth: every (heads per layer, depth)
  pair, FFN width filling the rest of the target, scored on the same proxy the search
  uses (the layers dropped are the least important by nasprune's output-norm score);
- ``blocks``: block drop only (least important first, as many as the target needs);
- ``searched``: ``nasprune.search`` over per-layer heads, FFN width and (``--space blocks``,
  the default) depth, warm-started with the zero-search candidates.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

from torch import nn

import nasprune
from nasprune.metrics import count_params
from nasprune.pruning import groups
from nasprune.pruning.attention import FFN, HEADS, transformer_layers
from nasprune.pruning.layers import output_norm_scores, without_blocks
from nasprune.search.proxy import Proxy
from nasprune.search.rungs import Rung
from nasprune.search.space import SearchSpace

Pruner = Callable[[float], nn.Module]


def layer_params(model: nn.Module) -> int:
    """Parameters inside the Transformer layers (what the methods can remove)."""
    mods = dict(model.named_modules())
    return sum(count_params(mods[n]) for n in transformer_layers(model))


def largest_under(prune_at: Pruner, target: int, steps: int = 14) -> tuple[nn.Module, float]:
    """The least-pruned network of ``prune_at(ratio)`` with at most ``target`` params
    (bisection on the ratio; params fall as the ratio grows)."""
    lo, hi = 0.0, largest_working(prune_at, 0.99)
    best = prune_at(hi)
    if count_params(best) > target:
        raise ValueError(f"even ratio {hi} leaves {count_params(best)} params > {target}")
    best_r = hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        net = prune_at(mid)
        if count_params(net) <= target:
            best, best_r, hi = net, mid, mid
        else:
            lo = mid
    return best, best_r


def largest_working(prune_at: Pruner, hi: float) -> float:
    """``hi``, or the largest ratio below it (to 0.005) at which ``prune_at`` works:
    Torch-Pruning fails outright (ZeroDivisionError) when a ratio removes every head."""
    try:
        prune_at(hi)
        return hi
    except ZeroDivisionError:
        ok, bad = 0.0, hi
    while bad - ok > 0.005:
        mid = (ok + bad) / 2
        try:
            prune_at(mid)
            ok = mid
        except ZeroDivisionError:
            bad = mid
    return ok


def tp_uniform(model: nn.Module, example: Any, ratio: float,
               head_ratio: float | None = None) -> nn.Module:
    """Torch-Pruning's HF recipe: whole heads (``head_pruning_ratio``, default ``ratio``)
    and FFN channels (``pruning_ratio``) uniformly, hidden width kept."""
    import torch_pruning as tp

    model = copy.deepcopy(model).eval()
    num_heads: dict[nn.Module, int] = {}
    attention = []
    for m in model.modules():
        qkv = [getattr(m, a, None) for a in ("query", "key", "value")]
        if not all(isinstance(p, nn.Linear) for p in qkv):
            qkv = [getattr(m, a, None) for a in ("q_proj", "k_proj", "v_proj")]
        if all(isinstance(p, nn.Linear) for p in qkv):
            attention.append((m, qkv[0]))
            for p in qkv:
                num_heads[p] = m.num_attention_heads
    # The layers writing into the residual stream (and the output heads) keep their
    # outputs: the hidden width stays, only heads and FFN width go.
    ends = ("attention.output.dense", "output.dense", "o_proj", "fc2", "classifier", "pooler.dense")
    ignored = [m for n, m in model.named_modules() if n.endswith(ends)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "unwrapped parameters" (position embeddings)
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
            global_pruning=False, pruning_ratio=ratio, ignored_layers=ignored,
            num_heads=num_heads, prune_num_heads=True, prune_head_dims=False,
            head_pruning_ratio=ratio if head_ratio is None else head_ratio, output_transform=lambda out: out.logits.sum())
        pruner.step()
    for m, q in attention:  # as Torch-Pruning's HF examples do after the step
        m.num_attention_heads = pruner.num_heads[q]
        size = q.out_features // m.num_attention_heads
        for attr in ("attention_head_size", "head_dim"):
            if hasattr(m, attr):
                setattr(m, attr, size)
        if hasattr(m, "all_head_size"):
            m.all_head_size = q.out_features
    return model


def unit_groups(model: nn.Module, example: Any) -> dict[str, list]:
    """nasprune's head groups and FFN groups of ``model``."""
    found = groups(model, example)
    return {kind: [g for g in found if g.kind == kind] for kind in (HEADS, FFN)}


def uniform_ratios(units: dict[str, list], heads: float, ffn: float) -> dict[str, float]:
    return {**{g.name: heads for g in units[HEADS]}, **{g.name: ffn for g in units[FFN]}}


def engine_uniform(model: nn.Module, example: Any, units: dict[str, list],
                   ratio: float) -> nn.Module:
    """One ratio for every head group and FFN group, through ``nasprune.prune``."""
    return nasprune.prune(model, example, uniform_ratios(units, ratio, ratio))


def block_order(model: nn.Module, example: Any, task: Any) -> tuple[list[str], dict]:
    """Transformer layers, least important first (nasprune's output-norm score,
    ``‖layer(x) − x‖ / ‖x‖`` on 4 training batches), and the scores."""
    blocks = transformer_layers(model)
    scores = output_norm_scores(model, blocks, example, data=task, batches=4)
    return sorted(blocks, key=lambda b: (scores[b], blocks.index(b))), scores


def drop(model: nn.Module, order: list[str], scores: dict, n: int) -> nn.Module:
    return without_blocks(model, order[:n], "output_norm", scores) if n else model


def blocks_only(model: nn.Module, order: list[str], scores: dict, target: int) -> nn.Module:
    """The fewest least-important layers dropped that meet ``target``."""
    for n in range(1, len(order)):
        net = drop(model, order, scores, n)
        if count_params(net) <= target:
            return net
    raise ValueError("dropping all but one layer still misses the target")


def minitron(model: nn.Module, example: Any, units: dict[str, list], order: list[str],
             scores: dict, target: int, proxy: Proxy) -> tuple[nn.Module, list[dict]]:
    """The best uniform (heads, depth, FFN) network at ``target`` on ``proxy`` (at its top
    rung where it has rungs: the fidelity the search picks its best by)."""
    top = proxy.rungs.top if proxy.rungs is not None else Rung(proxy.val_size,
                                                              proxy.finetune_steps)
    heads_total = units[HEADS][0].channels // units[HEADS][0].divisor
    grid, best, best_score = [], None, -math.inf
    for depth in range(len(order), math.ceil(len(order) / 2) - 1, -1):
        for heads in range(heads_total, 0, -1):
            hr = 1 - heads / heads_total

            def at(f: float, hr: float = hr, depth: int = depth) -> nn.Module:
                net = nasprune.prune(model, example, uniform_ratios(units, hr, f))
                return drop(net, order, scores, len(order) - depth)

            try:
                net, f = (at(0.0), 0.0) if count_params(at(0.0)) <= target else \
                    largest_under(at, target, steps=10)
            except ValueError:
                continue
            score = proxy.score_model(copy.deepcopy(net), top.finetune_steps, top.val_size)
            grid.append({"depth": depth, "heads": heads, "ffn_ratio": round(f, 4),
                         "params": count_params(net), "proxy": score})
            if score > best_score:
                best, best_score = net, score
    return best, grid


def searched(model: nn.Module, example: Any, task: Any, target: int, seed: int, args: Any,
             proxy: Proxy) -> tuple[nn.Module, dict]:
    """``nasprune.search`` at the params target; the best-scoring trial whose real network
    fits. The analytic cost model's base can differ from the real count by a constant (it
    counts HF Llama's tied input/output embedding twice): the target is shifted by that
    offset before it becomes a fraction of the model's predicted params; when no trial
    fits, the fraction is tightened by the smallest overshoot and the search runs again."""
    predicted_base = SearchSpace(model, example).base_params
    frac = (target + predicted_base - count_params(model)) / predicted_base
    t0 = time.perf_counter()
    for _ in range(3):
        result = nasprune.search(
            model, example, task, strategy=args.strategy,
            target=nasprune.Budget(params=min(frac, 1.0)), trials=args.trials, seed=seed,
            evaluator=proxy, progress=False, space=args.space)
        smallest = math.inf
        for cand in sorted(result.trials, key=lambda c: (-c.rung, -c.score)):  # as result.best
            net = nasprune.prune(model, example, cand.ratios)
            real = count_params(net)
            if real <= target:
                return net, {"search_seconds": round(time.perf_counter() - t0, 1),
                             "trials": len(result.trials), "proxy": cand.score,
                             "proxy_best": result.best.score, "trial": cand.number,
                             "warm_start_best": result.warm_start_best,
                             "warm_start_score": result.warm_start_score,
                             "predicted_params": cand.params, "budget_fraction": frac,
                             "predicted_base_params": predicted_base}
            smallest = min(smallest, real)
        frac *= target / smallest * 0.995
    raise RuntimeError("no searched trial meets the params target")
