"""Benchmark: does the stage space (one keep ratio per stage) learn faster than per-group?

For one trained checkpoint, each MACs budget, strategy, space and seed: ``nasprune.search``
with the default proxy (adaptive BN on 20 training batches, top-1 on 1,000 validation
images) for ``--trials`` trials; then the pick is re-scored on ``--rescore`` validation
images (the same BN re-estimation), so a lucky 1,000-image score does not decide. Reports
the best proxy after every ``--every`` trials, the re-scored pick, wall and CPU seconds per
trial (the machine is shared: CPU seconds are the fairer cost). Run with one space and
several strategies it compares the strategies by the proxy they reach per CPU-minute.

Usage: ``nice .venv/bin/python bench/space.py --checkpoint ../shared/baselines/resnet20-cifar10
--data-dir ../shared/data/cifar10-jpg.tar.gz [--budgets 0.3,0.5] [--strategies evolution,tpe]
[--spaces per-group,stage] [--trials 30] [--every 10] [--seeds 0] [--rungs off] [--json FILE]``.
Prints one line per search and a Markdown table for BENCHMARKS.md; ``--json`` is rewritten
after every search, and a re-run with the same file skips the searches it holds. ``--projection
resnet20,resnet56,mobilenetv2`` instead times both spaces' budget projection (CPU ms per
projection, worst fit to the budget) on untrained zoo models.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import nasprune
from nasprune.checkpoint import load, read_spec
from nasprune.data import load_dataset
from nasprune.metrics import count_macs
from nasprune.search import Budget, Proxy, search


def best_so_far(result: nasprune.search.SearchResult, every: int) -> list[float]:
    """The best proxy score after every ``every`` trials (in trial order)."""
    scores = [c.score for c in sorted(result.trials, key=lambda c: c.number)]
    run = np.maximum.accumulate(scores)
    return [float(run[min(i, len(run)) - 1]) for i in range(every, len(run) + 1, every)]


def one_search(model, x, data, proxy, rescore, budget, strategy, space, seed, trials,
               every: int, rungs: str) -> dict:
    """One search and its re-scored pick."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = search(model, x, data, strategy=strategy, target=Budget(macs=budget),
                    trials=trials, seed=seed, evaluator=proxy, space=space, progress=False,
                    rungs=rungs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    net = nasprune.prune(model, x, result.best.ratios)
    rescore.recalibrate(net)
    return {
        "budget": budget, "strategy": strategy, "space": space, "seed": seed,
        "rungs": result.rungs, "trials": len(result.trials), "proxy": float(result.best.score),
        "curve": best_so_far(result, every), "every": every, "rescored": float(rescore.accuracy(net)),
        "macs": count_macs(net, x) / count_macs(model, x),
        "wall_s_per_trial": wall / len(result.trials), "cpu_s_per_trial": cpu / len(result.trials),
    }


def table(rows: list[dict]) -> str:
    """Markdown: one row per (budget, strategy, space), seeds averaged."""
    every = rows[0].get("every", 10) if rows else 10
    marks = " / ".join(f"@{every * (i + 1)}" for i in range(len(rows[0]["curve"]) if rows else 0))
    out = [f"| MACs | strategy | space | seeds | best proxy {marks} (1k images) | "
           "pick re-scored (10k images) | MACs kept | wall s / trial | CPU s / trial | "
           "CPU s / search |",
           "|---:|---|---|---:|---|---:|---:|---:|---:|---:|"]
    keys = dict.fromkeys((r["budget"], r["strategy"], r["space"]) for r in rows)
    for b, st, sp in keys:
        rs = [r for r in rows if (r["budget"], r["strategy"], r["space"]) == (b, st, sp)]
        curve = np.mean([r["curve"] for r in rs], axis=0)
        out.append(
            f"| {b:.0%} | {st} | {sp} | {len(rs)} | "
            + " / ".join(f"{v:.2%}" for v in curve)
            + f" | {np.mean([r['rescored'] for r in rs]):.2%} "
            f"| {np.mean([r['macs'] for r in rs]):.1%} "
            f"| {np.mean([r['wall_s_per_trial'] for r in rs]):.1f} "
            f"| {np.mean([r['cpu_s_per_trial'] for r in rs]):.1f} "
            f"| {np.mean([r['cpu_s_per_trial'] * r['trials'] for r in rs]):.0f} |")
    return "\n".join(out)


def projection_table(models: list[str], n: int = 40) -> str:
    """Markdown: ms per projection and the worst fit (MACs / budget) of ``n`` random vectors
    at 50 % and 30 % MACs, per space, on untrained zoo models (costs need no weights)."""
    from nasprune.search.spaces import make_space

    out = ["| model | space | dim | ms / projection | worst MACs / budget |", "|---|---|---:|---:|---:|"]
    for name in models:
        model = nasprune.create_model(name)
        x = torch.randn(1, 3, 32, 32)
        for kind in ("per-group", "stage"):
            space = make_space(kind, model, x)
            raws = np.random.default_rng(0).uniform(0.1, 1.0, (n, space.dim))
            start, worst = time.process_time(), 1.0
            for b in (0.5, 0.3):
                for raw in raws[: n // 2]:
                    worst = min(worst, space.fractions(space.project(raw, Budget(macs=b)))[0] / b)
            ms = (time.process_time() - start) / n * 1000
            out.append(f"| {name} | {kind} | {space.dim} | {ms:.1f} | {worst:.4f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projection", default=None, metavar="MODELS",
                    help="only time the projection of both spaces on these zoo models "
                    "(comma-separated; no checkpoint or data needed)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--budgets", default="0.3,0.5")
    ap.add_argument("--strategies", default="evolution,tpe")
    ap.add_argument("--spaces", default="per-group,stage")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--every", type=int, default=10, help="best proxy after every N trials")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--rungs", default="auto",
                    help="the search's rungs (default auto, as nasprune.search; 'off': one "
                         "fidelity, so every search scores on the same proxy)")
    ap.add_argument("--rescore", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.projection:
        print(projection_table(args.projection.split(",")))
        return
    if args.checkpoint is None:
        ap.error("--checkpoint is required (or --projection MODELS)")

    split_seed = int((read_spec(args.checkpoint).get("meta") or {}).get("seed", 0))
    data = load_dataset(args.data, root=args.data_dir, seed=split_seed)
    model = load(args.checkpoint).eval()
    x = data.example_input(1)
    proxy = Proxy(model, data, bn_batches=20, val_size=args.val_size, device="cpu",
                  example_inputs=x, seed=split_seed, progress=False)
    rescore = Proxy(model, data, bn_batches=20, val_size=args.rescore, device="cpu",
                    example_inputs=x, seed=split_seed, progress=False)
    rows: list[dict] = []
    if args.json and Path(args.json).exists():  # resume: keep the finished searches
        rows = json.loads(Path(args.json).read_text(encoding="utf-8"))
    done = {(r["budget"], r["strategy"], r["space"], r["seed"], r["trials"]) for r in rows}
    for budget in (float(b) for b in args.budgets.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            for strategy in args.strategies.split(","):
                for space in args.spaces.split(","):
                    if (budget, strategy, space, seed, args.trials) in done:
                        continue
                    rows.append(one_search(model, x, data, proxy, rescore, budget, strategy,
                                           space, seed, args.trials, args.every, args.rungs))
                    r = rows[-1]
                    print(f"{budget:.0%} {strategy:9s} {space:9s} seed {seed}: proxy "
                          f"{r['proxy']:.2%} curve {[round(c, 4) for c in r['curve']]} "
                          f"re-scored {r['rescored']:.2%} MACs {r['macs']:.1%} "
                          f"{r['cpu_s_per_trial']:.1f} CPU s/trial", flush=True)
                    if args.json:
                        with open(args.json, "w") as f:
                            json.dump(rows, f, indent=1)
    print(f"\ntorch {torch.__version__}, {args.threads} thread(s), {args.trials} trials, "
          f"proxy {args.val_size} images, re-scored on {args.rescore}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
