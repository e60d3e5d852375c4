"""Benchmark: ask for a speed-up, get it measured (issue 12).

For each network (ResNet-20, ResNet-56, MobileNetV2; CIFAR shapes), runtime (torch eager,
ONNX Runtime CPU; ``--threads`` threads) and batch size (1 and 64):

1. **Delivered speed-up at ``--target`` (2.0).** ``nasprune.search`` with
   ``Budget(speedup=target)``, ``round_to="auto"`` (width step measured on the runtime),
   ``--trials`` random-strategy trials, then the built-in delivery check (the chosen
   network timed interleaved with the unpruned one; fallback to other candidates when it
   misses by > 5 %). Without ``--checkpoint``/``--data-dir`` candidates are scored by the
   fraction of MACs they keep (a data-free score: at equal predicted latency, more work is
   better), so only latency is benchmarked here, not accuracy.
2. **Latency model error.** ``--candidates`` (20) random keep vectors (uniform in
   [0.3, 1]) at the measured width step: predicted against measured speed-up over the
   unpruned network (fastest runs, interleaved); median and worst relative error.
3. **At 50 % MACs.** The latency-aware network (of the uniform and ``--trials`` random
   keep vectors projected onto 50 % of the MACs at the measured width step, the one the
   latency table predicts fastest) and Torch-Pruning global L1 at 50 % (``bench/peers.py``'s
   bisection), both measured against the unpruned network: measured speed-up and its ratio
   to the MACs ratio (goal ≥ 0.85).

Resumable: every finished (network, runtime, batch) cell is stored in ``--json``
(default ``bench/results/speedup.json``) and skipped on a re-run. Prints a Markdown table
(also written next to the JSON as ``.md``) ready for BENCHMARKS.md.

Usage: ``nice .venv/bin/python bench/speedup.py [--quick] [--nets resnet20,resnet56,
mobilenetv2] [--runtimes torch,onnxruntime] [--batches 1,64] [--threads 1]``. ``--quick``:
ResNet-20, batch 1, 3 trials, 5 candidates, short timing (a smoke run, not a measurement).
``--compare-widths``: instead, one global measured width step against per-group measured
steps against Torch-Pruning global, at 50 % of the MACs and at ``--target``
(:mod:`speedup_widths`); ``--cache DIR`` keeps tables and steps between runs.
``--delivery``: part 1 only, at the per-group steps the search measures itself
(``round_to="auto"``), tabled with the search's first choice, the budget's correction by
measurement (:mod:`nasprune.search.verify`) and what was delivered.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peers import cpu_name, tp_to_budget

import nasprune
from nasprune.errors import NaspruneError
from nasprune.metrics import count_macs
from nasprune.metrics.runtime import Runtime, compare_latency
from nasprune.search import Budget, SearchSpace, search
from nasprune.search.group_widths import measured_steps
from nasprune.search.latency import LatencyModel
from nasprune.search.widths import measured_round_to


class MacsScore:
    """A data-free proxy: the fraction of the unpruned MACs a candidate keeps."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, round_to: int | None) -> None:
        self.model, self.x, self.round_to, self.min_channels = model, x, round_to, 1
        self.base = count_macs(model, x)
        self.calls = 0

    def score(self, ratios: dict[str, float]) -> float:
        self.calls += 1
        net = nasprune.prune(self.model, self.x, ratios, round_to=self.round_to)
        return count_macs(net, self.x) / self.base


def network(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nasprune.create_model(name, num_classes=10).eval(), torch.randn(1, 3, 32, 32)


def delivered(model, x, rt: Runtime, args, cache: str) -> dict[str, Any]:
    """Part 1: a speed-up-budgeted search and its delivery check (with ``--delivery``: at
    the per-group steps the search measures itself, ``round_to="auto"``)."""
    if args.delivery:  # what round_to="auto" measures (cached in ``cache``)
        step, widths = measured_steps(model, x, rt, cache_dir=cache)[0], None
    else:
        step, widths = measured_round_to(model, x, rt, rounds=args.rounds,
                                         repeats=args.repeats)
    start = time.perf_counter()
    try:
        result = search(model, x, None, strategy="random", target=Budget(speedup=args.target),
                        space=args.space, trials=args.trials,
                        evaluator=MacsScore(model, x, step),
                        round_to=step, runtime=rt, latency_cache=cache, progress=False,
                        seed=0)
    except NaspruneError as exc:  # e.g. the target is out of reach on this runtime
        return {"round_to": step, "widths": widths, "error": str(exc)}
    d = result.delivery
    return {"round_to": result.space.round_to, "widths": widths,
            "seconds": time.perf_counter() - start,
            "macs_fraction": result.best.macs_fraction, **d.to_dict()}


def model_error(model, x, rt: Runtime, step: int | None, args, cache: str) -> dict[str, Any]:
    """Part 2: predicted vs measured speed-up of random candidates."""
    space = SearchSpace(model, x, round_to=step)
    lat = LatencyModel.for_space(space, model, x, cache_dir=cache, runtime=rt)
    rng = np.random.default_rng(0)
    keeps = [rng.uniform(0.3, 1.0, space.dim) for _ in range(args.candidates)]
    nets = [model, *(nasprune.prune(model, x, space.prune_ratios(k), round_to=step)
                     for k in keeps)]
    found = compare_latency(nets, tuple(x.shape[1:]), rt, args.rounds, args.repeats)[1:]
    pred = np.array([lat.base_ms / lat.predict(space.kept(k)) for k in keeps])
    meas = np.array([f["min_speedup"] for f in found])
    err = np.abs(pred / meas - 1)
    return {"median_error": float(np.median(err)), "worst_error": float(err.max()),
            "predicted": pred.tolist(), "measured": meas.tolist()}


def at_half_macs(model, x, rt: Runtime, step: int | None, args,
                 cache: str) -> dict[str, Any]:
    """Part 3: the latency-aware network and Torch-Pruning global at 50 % of the MACs.

    Latency-aware: of the uniform vector and ``--trials`` random ones, each projected onto
    50 % of the MACs at the measured width step, the one predicted fastest.
    """
    space = SearchSpace(model, x, round_to=step)
    lat = LatencyModel.for_space(space, model, x, cache_dir=cache, runtime=rt)
    rng = np.random.default_rng(1)
    raw = [np.ones(space.dim), *(rng.uniform(0.2, 1.0, space.dim) for _ in range(args.trials))]
    keeps = [space.project(k, Budget(macs=0.5)) for k in raw]
    keep = min(keeps, key=lambda k: lat.predict(space.kept(k)))
    ours = nasprune.prune(model, x, space.prune_ratios(keep), round_to=step)
    tp_net, _ = tp_to_budget(model, x, 0.5, global_pruning=True)
    base = count_macs(model, x)
    found = compare_latency([model, ours, tp_net], tuple(x.shape[1:]), rt, args.rounds,
                            args.repeats)
    out = {}
    for key, net, f in (("ours", ours, found[1]), ("tp_global", tp_net, found[2])):
        ratio = base / count_macs(net, x)
        out[key] = {"macs_ratio": ratio, "speedup": f["speedup"],
                    "min_speedup": f["min_speedup"], "of_macs_ratio": f["speedup"] / ratio}
    return out


def run_cell(name: str, runtime: str, batch: int, args, cache: str) -> dict[str, Any]:
    model, x = network(name)
    rt = Runtime(runtime, threads=args.threads, batch_size=batch)
    cell: dict[str, Any] = {"net": name, "runtime": rt.describe(), "batch": batch,
                            "space": args.space}
    cell["delivery"] = delivered(model, x, rt, args, cache)
    if args.delivery:
        return cell
    step = cell["delivery"]["round_to"]
    cell["model_error"] = model_error(model, x, rt, step, args, cache)
    cell["half_macs"] = at_half_macs(model, x, rt, step, args, cache)
    return cell


def delivery_table(cells: list[dict[str, Any]], target: float) -> str:
    """``--delivery``: the search's choice, the correction and what was delivered."""
    rows = [f"| network | runtime | batch | search's choice: predicted → measured | corrected "
            f"limit (predicted) | delivered: predicted → measured | p90 ms | MACs kept | "
            f"met {target:g}x ±5 % | networks timed | s |",
            "|---|---|--:|--:|--:|--:|--:|--:|:-:|--:|--:|"]
    for c in cells:
        d = c["delivery"]
        net = c["net"] + ("" if c.get("space", "per-group") == "per-group" else
                          f" ({c['space']})")
        head = f"| {net} | {c['runtime'].split(' (')[0]} | {c['batch']} |"
        if "error" in d:
            rows.append(f"{head} {d['error'][:160]} | | | | | no | | |")
            continue
        first = d["checked"][0]
        fix = d["corrected"] or {}
        met = "yes" if d["met"] else f"no (−{d['miss']:.1%})"
        rows.append(
            f"{head} {first['predicted_speedup']:.2f}x → {first['speedup']:.2f}x | "
            + (f"{fix['speedup']:.2f}x |" if fix else "— |"))
        rows[-1] += (f" {d['predicted_speedup']:.2f}x → {d['measured_speedup']:.2f}x | "
                     f"{d['p90_ms']:.3g} | {d['macs_fraction']:.1%} | {met} | "
                     f"{len(d['checked'])} | {d['seconds']:.0f} |")
    return "\n".join(rows)


def table(cells: list[dict[str, Any]], target: float) -> str:
    rows = [f"| network | runtime | batch | step | predicted | measured (median) | p90 ms | "
            f"met {target:g}x ±5 % | model error median / worst | 50 % MACs: ours / TP "
            "global speed-up (÷ MACs ratio) |",
            "|---|---|--:|--:|--:|--:|--:|:-:|--:|--:|"]
    for c in cells:
        d, e, h = c["delivery"], c["model_error"], c["half_macs"]
        if "error" in d:  # the search refused the target: say so in the row
            rows.append(f"| {c['net']} | {c['runtime'].split(' (')[0]} | {c['batch']} | "
                        f"{d['round_to'] or 1} | {d['error'][:140]} | | | no | "
                        f"{e['median_error']:.1%} / {e['worst_error']:.1%} | |")
            continue
        met = "yes" if d["met"] else f"no (-{d['miss']:.1%})"
        rows.append(
            f"| {c['net']} | {c['runtime'].split(' (')[0]} | {c['batch']} | "
            f"{d['round_to'] or 1} | {d['predicted_speedup']:.2f}x | "
            f"{d['measured_speedup']:.2f}x | {d['p90_ms']:.3g} | "
            f"{met} | "
            f"{e['median_error']:.1%} / {e['worst_error']:.1%} | "
            f"{h['ours']['speedup']:.2f}x ({h['ours']['of_macs_ratio']:.2f}) / "
            f"{h['tp_global']['speedup']:.2f}x ({h['tp_global']['of_macs_ratio']:.2f}) |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", default="resnet20,resnet56,mobilenetv2")
    p.add_argument("--runtimes", default="torch,onnxruntime")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target", type=float, default=2.0)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="a smoke run (see the docstring)")
    p.add_argument("--space", default="per-group",
                   help="the search space of part 1 (per-group, stage, blocks)")
    p.add_argument("--delivery", action="store_true",
                   help="part 1 only, at the search's own per-group steps (round_to='auto'); "
                        "cells stored under 'delivery' in --json")
    p.add_argument("--compare-widths", action="store_true",
                   help="global vs per-group measured width steps vs TP global "
                        "(bench/speedup_widths.py); cells stored under 'widths' in --json")
    p.add_argument("--cpu-time", action="store_true",
                   help="time runs by the calling thread's CPU time, not wall clock (1 "
                        "thread only: on a machine so loaded that runs are preempted)")
    p.add_argument("--cache", default=None,
                   help="latency tables and width steps cache (default: a temporary one)")
    p.add_argument("--json", default="bench/results/speedup.json")
    args = p.parse_args(argv)
    if args.quick:
        args.nets, args.batches, args.trials, args.candidates = "resnet20", "1", 3, 5
        args.rounds, args.repeats = 3, 5
        args.json = args.json.replace(".json", "-quick.json")
    torch.set_num_threads(args.threads)
    out = Path(args.json)
    doc = json.loads(out.read_text()) if out.exists() else {"cells": {}}
    doc["machine"] = {"cpu": cpu_name(), "cores": __import__("os").cpu_count(),
                      "python": platform.python_version(), "torch": torch.__version__}
    if args.cpu_time:
        use_cpu_time(args.threads)
    cache = args.cache or tempfile.mkdtemp(prefix="nasprune-speedup-")
    if args.compare_widths:
        return compare_widths(args, doc, out, cache, argv)
    cells = doc.setdefault("delivery" if args.delivery else "cells", {})
    for name in args.nets.split(","):
        for runtime in args.runtimes.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                key = f"{name}/{runtime}/{args.threads}t/b{batch}" + (
                    "" if args.space == "per-group" else f"/{args.space}")
                if key in cells:
                    print(f"{key}: done before, skipped", file=sys.stderr)
                    continue
                start = time.perf_counter()
                cells[key] = {**run_cell(name, runtime, batch, args, cache),
                              "date": datetime.date.today().isoformat(),
                              "seconds": time.perf_counter() - start}
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(doc, indent=1) + "\n")  # resumable: after each cell
                print(f"{key}: {cells[key]['seconds']:.0f} s", file=sys.stderr)
    md = (delivery_table if args.delivery else table)(list(cells.values()), args.target)
    out.with_suffix(".md").write_text(md + "\n")
    print(f"`{' '.join(['bench/speedup.py', *(argv or sys.argv[1:])])}` on "
          f"{doc['machine']['cpu']} ({doc['machine']['cores']} cores), torch "
          f"{torch.__version__}, {args.threads} thread(s):\n")
    print(md)
    return 0


def use_cpu_time(threads: int) -> None:
    """Every timing loop (tables, width steps, comparisons) measures the calling thread's
    CPU time: with one thread, torch and ONNX Runtime compute on that thread, and the time
    spent preempted by other processes is left out."""
    import nasprune.metrics.runtime as runtime_mod

    if threads != 1:
        raise SystemExit("--cpu-time needs --threads 1 (other threads' time is not counted)")

    def cpu_ms(run, repeats: int, warmup: int = 0) -> np.ndarray:
        for _ in range(warmup):
            run()
        out = np.empty(repeats)
        for i in range(repeats):
            t0 = time.thread_time()
            run()
            out[i] = (time.thread_time() - t0) * 1e3
        return out

    runtime_mod.time_ms = cpu_ms  # fastest_ms and compare_latency call it


def compare_widths(args, doc: dict, out: Path, cache: str, argv: list[str] | None) -> int:
    """``--compare-widths``: one resumable cell per (network, runtime, batch)."""
    from speedup_widths import compare_cell, compare_table

    cells = doc.setdefault("widths", {})
    for name in args.nets.split(","):
        for runtime in args.runtimes.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                key = f"{name}/{runtime}/{args.threads}t/b{batch}"
                if key in cells:
                    print(f"widths {key}: done before, skipped", file=sys.stderr)
                    continue
                model, x = network(name)
                rt = Runtime(runtime, threads=args.threads, batch_size=batch)
                start = time.perf_counter()
                cells[key] = {"net": name, "runtime": rt.describe(), "batch": batch,
                              **compare_cell(model, x, rt, args, cache),
                              "date": datetime.date.today().isoformat(),
                              "load": __import__("os").getloadavg()[0],
                              "seconds": time.perf_counter() - start}
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(doc, indent=1) + "\n")  # resumable: after each cell
                print(f"widths {key}: {cells[key]['seconds']:.0f} s", file=sys.stderr)
    md = compare_table(list(cells.values()), args.target)
    out.with_name(out.stem + "-widths.md").write_text(md + "\n")
    print(f"`{' '.join(['bench/speedup.py', *(argv or sys.argv[1:])])}` on "
          f"{doc['machine']['cpu']} ({doc['machine']['cores']} cores), torch "
          f"{torch.__version__}, {args.threads} thread(s):\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
