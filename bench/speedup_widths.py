"""Benchmark part of ``bench/speedup.py --compare-widths``: one global measured width step
against per-group measured steps (issue 12, "widths by measurement").

For one network, runtime and batch size:

* **global**: ``nasprune.search.widths.measured_round_to`` (one step for every group,
  chosen by timing whole networks), **per-group**:
  ``nasprune.search.group_widths.measured_steps`` (each group's layers timed alone);
* for each, a :class:`SearchSpace` with those steps and its latency table on the runtime
  (and the ``blocks`` space at the per-group steps: blocks may be dropped too);
  at **50 % of the MACs** the uniform keep vector and ``--trials`` random ones projected
  onto the MACs budget, the one the table predicts fastest; at **speed-up ``--target``**
  the same vectors projected onto the predicted speed-up, the one keeping the most MACs
  (a data-free score: at equal predicted latency, more work is better — what the search
  does with ``MacsScore``);
* Torch-Pruning global L1 at 50 % of the MACs (``peers.tp_to_budget``);
* all of them timed against the unpruned network in one interleaved run (speed-up = median
  of per-round ratios), so the comparison is side by side under the same load.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from peers import tp_to_budget

import nasprune
from nasprune.errors import NaspruneError
from nasprune.metrics import count_macs
from nasprune.metrics.runtime import Runtime, compare_latency
from nasprune.search import Budget, SearchSpace
from nasprune.search.group_widths import describe_steps, measured_steps
from nasprune.search.latency import LatencyModel
from nasprune.search.spaces import make_space
from nasprune.search.widths import measured_round_to


def _candidates(space: SearchSpace, budget: Budget, trials: int, pick: str) -> np.ndarray:
    """Uniform + ``trials`` random keep vectors (+ in a space with blocks, every depth:
    the first or the last ``d`` blocks dropped, full widths) projected onto ``budget``; the
    predicted fastest (``pick="fastest"``) or the one keeping most MACs (``"most_macs"``).

    The depth candidates are there because random block genes rarely drop most blocks at
    once, which on MobileNetV2 in eager PyTorch at batch 1 is the fastest way to 50 % of
    the MACs (measured 2026-12-07: 9 of 10 blocks dropped, 0.92 of the MACs ratio, where
    the best random pick reached 0.75)."""
    rng = np.random.default_rng(1)
    raw = [np.ones(space.dim), *(rng.uniform(0.2, 1.0, space.dim) for _ in range(trials))]
    n = len(getattr(space, "blocks", ()))
    for d in range(1, n + 1):
        for drop in (range(d), range(n - d, n)):
            keep = np.ones(space.dim)
            keep[[space.n_groups + j for j in drop]] = 0.0
            raw.append(keep)
    keeps = [space.project(k, budget) for k in raw]
    if pick == "fastest":
        # Among the networks that fill the MACs budget (within 2 %): dropping every block
        # at full widths is faster still, but far under the budget — another comparison.
        full = [k for k in keeps if space.fractions(k)[0] >= 0.98 * budget.macs]
        return min(full or keeps, key=lambda k: space.latency.predict(space.kept(k)))
    return max(keeps, key=lambda k: space.cost(k)[0])


def _networks(model, x, rt: Runtime, steps: Any, args, cache: str,
              space_kind: str = "per-group") -> dict[str, Any]:
    """The 50 %-MACs and speed-up-target networks at width steps ``steps`` (in the
    ``blocks`` space: blocks may be dropped too)."""
    space = make_space(space_kind, model, x, round_to=steps)
    space.latency = LatencyModel.for_space(space, model, x, cache_dir=cache, runtime=rt)
    out: dict[str, Any] = {}
    for key, budget, pick in (("half", Budget(macs=0.5), "fastest"),
                              ("target", Budget(speedup=args.target), "most_macs")):
        try:
            space.check_feasible(budget)
        except NaspruneError as exc:
            out[key] = {"error": str(exc)}
            continue
        keep = _candidates(space, budget, args.trials, pick)
        net = nasprune.prune(model, x, space.prune_ratios(keep), round_to=steps)
        out[key] = {"net": net, "predicted_speedup":
                    space.latency.base_ms / space.latency.predict(space.kept(keep))}
    return out


def compare_cell(model: torch.nn.Module, x: torch.Tensor, rt: Runtime, args,
                 cache: str) -> dict[str, Any]:
    """Global step vs per-group steps vs Torch-Pruning global, measured side by side."""
    t0 = time.perf_counter()
    step, g_info = measured_round_to(model, x, rt, rounds=args.rounds, repeats=args.repeats)
    t1 = time.perf_counter()
    steps, pg_info = measured_steps(model, x, rt, cache_dir=cache)
    t2 = time.perf_counter()
    arms = {"global": _networks(model, x, rt, step, args, cache),
            "per_group": _networks(model, x, rt, steps, args, cache),
            "blocks": _networks(model, x, rt, steps, args, cache, "blocks")}
    tp_net, _ = tp_to_budget(model, x, 0.5, global_pruning=True)
    named = [(f"{arm}/{key}", v["net"], v["predicted_speedup"])
             for arm, nets in arms.items() for key, v in nets.items() if "net" in v]
    named.append(("tp_global/half", tp_net, None))
    found = compare_latency([model, *(n for _, n, _ in named)], tuple(x.shape[1:]), rt,
                            args.rounds, args.repeats)
    base = count_macs(model, x)
    cell: dict[str, Any] = {
        "global_step": step or 1, "global_relative_ms": g_info["relative_ms"],
        "per_group_steps": steps, "per_group_summary": describe_steps(steps),
        "seconds_global_step": t1 - t0, "seconds_per_group_steps": t2 - t1,
        "base_median_ms": found[0]["median_ms"], "results": {}}
    for (label, net, pred), f in zip(named, found[1:], strict=True):
        ratio = base / count_macs(net, x)
        cell["results"][label] = {"macs_ratio": ratio, "speedup": f["speedup"],
                                  "min_speedup": f["min_speedup"],
                                  "of_macs_ratio": f["speedup"] / ratio,
                                  "median_ms": f["median_ms"], "predicted_speedup": pred}
    for arm, nets in arms.items():
        for key, v in nets.items():
            if "error" in v:
                cell["results"][f"{arm}/{key}"] = {"error": v["error"]}
    return cell


def compare_table(cells: list[dict[str, Any]], target: float) -> str:
    """Markdown: per cell, measured speed-up as median of per-round ratios / ratio of the
    fastest runs (÷ MACs ratio for each) at 50 % MACs, and both at the target."""
    blocks = any("blocks/half" in c["results"] for c in cells)
    rows = ["| network | runtime | batch | load | global step | per-group steps | 50 % MACs: "
            "global | per-group | " + ("blocks | " if blocks else "") + "TP global | speed-up "
            f"{target:g}x: global | per-group |" + (" blocks |" if blocks else ""),
            "|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|" + ("--:|--:|" if blocks else "")]

    def half(r: dict) -> str:
        if "error" in r:
            return "n/a"
        m = r["macs_ratio"]
        return (f"{r['speedup']:.2f}x / {r['min_speedup']:.2f}x "
                f"({r['speedup'] / m:.2f} / {r['min_speedup'] / m:.2f})")

    def tgt(r: dict) -> str:
        if "error" in r:
            return "unreachable"
        return (f"{r['speedup']:.2f}x / {r['min_speedup']:.2f}x at "
                f"{1 / r['macs_ratio']:.1%} MACs")

    for c in cells:
        r = c["results"]
        rows.append(
            f"| {c['net']} | {c['runtime'].split(' (')[0]} | {c['batch']} | {c['load']:.0f} | "
            f"{c['global_step']} | {c['per_group_summary']} | {half(r['global/half'])} | "
            f"{half(r['per_group/half'])} | "
            + (f"{half(r['blocks/half'])} | " if blocks else "")
            + f"{half(r['tp_global/half'])} | "
            f"{tgt(r['global/target'])} | {tgt(r['per_group/target'])} |"
            + (f" {tgt(r['blocks/target'])} |" if blocks else ""))
    return "\n".join(rows)
