"""Benchmark: structured pruning of ResNet-56 on CPU.

1. Time to build the dependency groups and to prune ResNet-56 to ~50 % of its MACs with a
   uniform ratio, nasprune next to Torch-Pruning's own ``MetaPruner`` (L1 magnitude), both
   measured in the same process, alternating, median of several repeats.
2. CPU latency of ResNet-56 before and after pruning to ~50 % MACs, batch 1 and 64, with
   ``round_to=8`` and without.

Usage: ``nice .venv/bin/python bench/bench_prune.py [--repeats 5] [--rounds 7] [--threads 1]
[--json F]``.
Prints a Markdown table to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch
import torch_pruning as tp

import nasprune
from nasprune.metrics import count_macs, count_params, measure_latency
from nasprune.pruning import groups, prune


def _seconds(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def ratio_for_macs(model, x, target: float, round_to: int | None) -> tuple[float, float]:
    """The smallest uniform ratio whose pruned MACs are ≤ target (bisection): (ratio, MACs%)."""
    base = count_macs(model, x)
    lo, hi = 0.0, 0.9
    for _ in range(12):
        mid = (lo + hi) / 2
        frac = count_macs(prune(model, x, mid, round_to=round_to), x) / base
        lo, hi = (mid, hi) if frac > target else (lo, mid)
    return hi, count_macs(prune(model, x, hi, round_to=round_to), x) / base


def tp_prune(model, x, ratio: float):
    """Torch-Pruning's documented recipe: MetaPruner + L1 magnitude, classifier ignored."""
    net = copy.deepcopy(model)
    pruner = tp.pruner.MetaPruner(
        net, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
        ignored_layers=[net.fc],
    )
    pruner.step()
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nasprune.create_model("resnet56").eval()
    x = torch.randn(1, 3, 32, 32)
    base_macs, base_params = count_macs(model, x), count_params(model)
    ratio, frac = ratio_for_macs(model, x, 0.5, None)

    # --- 1. pruning time, alternating the two libraries so load changes hit both ---------
    times: dict[str, list[float]] = {k: [] for k in
                                     ("nas_groups", "nas_prune", "tp_graph", "tp_prune")}
    for _ in range(args.repeats):
        times["nas_groups"].append(_seconds(lambda: groups(model, x))[0])
        t, ours = _seconds(lambda: prune(model, x, ratio))
        times["nas_prune"].append(t)
        times["tp_graph"].append(_seconds(
            lambda: tp.DependencyGraph().build_dependency(copy.deepcopy(model), x))[0])
        t, theirs = _seconds(lambda: tp_prune(model, x, ratio))
        times["tp_prune"].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    ours_macs, theirs_macs = count_macs(ours, x) / base_macs, count_macs(theirs, x) / base_macs

    # --- 2. latency before/after, with and without round_to=8 -----------------------------
    r8, frac8 = ratio_for_macs(model, x, 0.5, 8)
    variants = {"original": model, "pruned": prune(model, x, ratio),
                "pruned, round_to=8": prune(model, x, r8, round_to=8)}
    # Interleaved rounds: on a shared machine the load drifts, so every variant is measured
    # in every round and the reported number is the median over rounds of each round's median.
    rounds: dict[str, dict[int, list[float]]] = {n: {1: [], 64: []} for n in variants}
    for _ in range(args.rounds):
        for name, net in variants.items():
            for batch, reps in ((1, 20), (64, 3)):
                r = measure_latency(net, (3, 32, 32), batch_sizes=(batch,), warmup=2,
                                    repeats=reps, num_threads=args.threads)
                rounds[name][batch].append(r[batch]["median_ms"])
    lat = {n: {b: {"median_ms": statistics.median(v)} for b, v in d.items()}
           for n, d in rounds.items()}

    print(f"ResNet-56 (CIFAR, {base_macs:,} MACs, {base_params:,} params); "
          f"{args.threads} intra-op thread(s); times: median of {args.repeats} repeats; "
          f"latency: median over {args.rounds} interleaved rounds of per-round medians\n")
    print("| step | nasprune | Torch-Pruning | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| build groups / dependency graph | {med['nas_groups']:.3f} s | "
          f"{med['tp_graph']:.3f} s | {med['nas_groups'] / med['tp_graph']:.2f} |")
    print(f"| prune to ~50 % MACs (copy + graph + L1 + surgery), ratio {ratio:.3f} | "
          f"{med['nas_prune']:.3f} s | {med['tp_prune']:.3f} s | "
          f"{med['nas_prune'] / med['tp_prune']:.2f} |")
    print(f"| MACs kept | {ours_macs:.1%} | {theirs_macs:.1%} | |\n")
    print("| model | MACs kept | params kept | batch 1 median ms | × | batch 64 median ms | × |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    b1, b64 = lat["original"][1]["median_ms"], lat["original"][64]["median_ms"]
    for name, net in variants.items():
        m, p = count_macs(net, x) / base_macs, count_params(net) / base_params
        l1, l64 = lat[name][1]["median_ms"], lat[name][64]["median_ms"]
        print(f"| {name} | {m:.1%} | {p:.1%} | {l1:.2f} | {b1 / l1:.2f} | {l64:.1f} | "
              f"{b64 / l64:.2f} |")
    print(f"\nuniform ratios: {ratio:.3f} (no rounding, {frac:.1%} MACs), "
          f"{r8:.3f} (round_to=8, {frac8:.1%} MACs); python {platform.python_version()}, "
          f"torch {torch.__version__}, torch-pruning {tp.__version__}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"times": times, "median": med, "latency": rounds, "ratio": ratio,
                       "ratio_round8": r8}, f, indent=1)


if __name__ == "__main__":
    main()
