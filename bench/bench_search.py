"""Benchmark: the search core.

``--part strategies``: on digits at 50 % MACs, ``--trials`` trials and ``--seeds`` seeds,
every registered strategy searches the same trained digits CNN (the demo's recipe) with the
same proxy (adaptive BN on ``--bn-batches`` training batches, accuracy on the whole digits
validation split); reports the best proxy score (mean ± std over seeds), the mean score of
the last 10 trials (does the strategy concentrate on good regions?) and the wall time.

``--part cost``: microseconds per analytic ``SearchSpace.cost()`` call and milliseconds per
budget projection for ResNet-56 (32×32), next to counting a really pruned model.

``--part latency``: the latency model's prediction (per-layer table measured once, batch 1,
fastest of repeated runs) against the measured latency of really pruned ResNet-20s.

``--part cifar``: seconds per candidate evaluation on CPU for a CIFAR-10 ResNet-20 checkpoint
(``--checkpoint``; 1,000 validation images, 20 BN batches of 64) and the Spearman correlation
between the proxy and ``--finetune-epochs`` of fine-tuning on ``--candidates`` candidates.

Usage: ``nice .venv/bin/python bench/bench_search.py --part strategies [--trials 40]
[--seeds 0,1,2] [--strategies a,b] [--option KEY=VALUE] [--threads 1] [--json F]``. Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

import nasprune
from nasprune.search import Budget, SearchSpace, search, strategy_names


def machine() -> str:
    import os

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{os.cpu_count()}-core {platform.machine()} CPU, {torch.get_num_threads()} torch "
            f"thread(s), Python {platform.python_version()}, torch {torch.__version__}, "
            f"load average {load}")


def baseline_digits():
    """The demo's baseline: the bundled recipe, seed 0 (deterministic on CPU)."""
    from nasprune.cli.train import train_from_config
    from nasprune.config import TrainConfig, bundled_config, load_config

    cfg = load_config(TrainConfig, bundled_config("demo.yaml"), {"device": "cpu"})
    run = train_from_config(cfg, progress=False)
    return run.model.cpu().eval(), run.data, run.test["top1"]


def options(items: list[str] | None) -> dict:
    """``--option KEY=VALUE`` strategy options (YAML values: true, 5, 0.1)."""
    import yaml

    return {k: yaml.safe_load(v) for k, _, v in (i.partition("=") for i in items or [])}


def part_strategies(args) -> dict:
    model, data, test_acc = baseline_digits()
    x = data.example_input(1)
    space = SearchSpace(model, x)
    from nasprune.search import Proxy

    full = Proxy(model, data, bn_batches=args.bn_batches, val_size=10_000, device="cpu")
    unpruned = full.accuracy(model)
    names = strategy_names() if args.strategies == "all" else args.strategies.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {}
    for name in names:
        bests, lasts, secs = [], [], []
        for seed in seeds:
            ev = Proxy(model, data, bn_batches=args.bn_batches, val_size=10_000,
                           device="cpu", seed=0)  # same proxy for every strategy and seed
            t0 = time.perf_counter()
            r = search(model, x, data, strategy=name, target=Budget(macs=args.budget),
                       trials=args.trials, seed=seed, evaluator=ev, space=space,
                       progress=False, **options(args.option))
            secs.append(time.perf_counter() - t0)
            bests.append(r.best.score)
            lasts.append(float(np.mean([c.score for c in r.trials[-10:]])))
            print(f"{name:15s} seed {seed}: best {r.best.score:.4f} last10 {lasts[-1]:.4f} "
                  f"{secs[-1]:.1f} s", flush=True)
        rows[name] = {"best": bests, "last10": lasts, "seconds": secs}
    table = ["| strategy | best proxy (mean ± std) | per seed | mean of last 10 trials "
             "| wall s / search |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        table.append(
            f"| {name} | {statistics.mean(r['best']):.4f} ± {statistics.pstdev(r['best']):.4f} "
            f"| {', '.join(f'{b:.4f}' for b in r['best'])} "
            f"| {statistics.mean(r['last10']):.4f} | {statistics.mean(r['seconds']):.1f} |")
    print("\n".join(table))
    return {"rows": rows, "unpruned_val_acc": unpruned, "test_acc": test_acc,
            "val_images": full.val_count, "trials": args.trials, "seeds": seeds,
            "budget": args.budget, "bn_batches": args.bn_batches, "table": table}


def part_cost(args) -> dict:
    import timeit

    from nasprune.metrics import count_macs, count_params
    from nasprune.pruning import prune

    model, x = nasprune.create_model("resnet56"), torch.randn(1, 3, 32, 32)
    t0 = time.perf_counter()
    space = SearchSpace(model, x)
    build = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    keeps = rng.uniform(0.1, 1.0, size=(200, space.dim))
    it = iter(np.tile(keeps, (100, 1)))
    cost_us = min(timeit.repeat(lambda: space.cost(next(it)), number=2000, repeat=5)) / 2000 * 1e6
    t0 = time.perf_counter()
    for k in keeps[:100]:
        space.project(k, Budget(macs=0.5))
    project_ms = (time.perf_counter() - t0) / 100 * 1e3
    t0 = time.perf_counter()
    for k in keeps[:5]:
        p = prune(model, x, space.prune_ratios(k))
        count_macs(p, x), count_params(p)
    real_ms = (time.perf_counter() - t0) / 5 * 1e3
    gaps = projection_gaps(space, keeps[:100])
    model_d = nasprune.create_model("digitscnn", in_channels=1)
    gaps_d = projection_gaps(SearchSpace(model_d, torch.randn(1, 1, 8, 8)), None)
    table = ["| ResNet-56, 32×32 | value |", "|---|---|",
             f"| groups (search dimensions) | {space.dim} |",
             f"| build SearchSpace (trace + groups + cost model), s | {build:.2f} |",
             f"| `cost(keep)` µs per call (best of 5 × 2000) | {cost_us:.1f} |",
             f"| `project(keep, Budget(macs=0.5))` ms per call (mean of 100) | {project_ms:.2f} |",
             f"| prune + count_macs/params of the real model, ms (mean of 5) | {real_ms:.0f} |",
             "", "| projection: largest gap under the budget, relative (100 random vectors) "
             "| MACs 50 % | MACs 25 % | params 30 % |", "|---|---|---|---|",
             f"| ResNet-56 | {gaps['macs=0.5']:.3%} | {gaps['macs=0.25']:.3%} "
             f"| {gaps['params=0.3']:.3%} |",
             f"| digits CNN | {gaps_d['macs=0.5']:.3%} | {gaps_d['macs=0.25']:.3%} "
             f"| {gaps_d['params=0.3']:.3%} |"]
    print("\n".join(table))
    return {"dim": space.dim, "build_s": build, "cost_us": cost_us, "project_ms": project_ms,
            "real_prune_count_ms": real_ms, "projection_gap_resnet56": gaps,
            "projection_gap_digits": gaps_d, "table": table}


def projection_gaps(space: SearchSpace, keeps) -> dict[str, float]:
    """Worst relative shortfall under the budget after projection (over/under: a bug)."""
    if keeps is None:
        keeps = np.random.default_rng(0).uniform(0.1, 1.0, size=(100, space.dim))
    out = {}
    for key, budget in (("macs=0.5", Budget(macs=0.5)), ("macs=0.25", Budget(macs=0.25)),
                        ("params=0.3", Budget(params=0.3))):
        worst = 0.0
        for k in keeps:
            macs_f, params_f = space.fractions(space.project(k, budget))
            frac, limit = (macs_f, budget.macs) if budget.macs else (params_f, budget.params)
            assert frac <= limit
            worst = max(worst, 1 - frac / limit)
        out[key] = worst
    return out


def part_latency(args) -> dict:
    """Predicted (per-layer table) vs measured latency of really pruned ResNet-20s, batch 1."""
    import tempfile

    from nasprune.metrics import measure_latency
    from nasprune.pruning import prune
    from nasprune.search.latency import LatencyModel

    model, x = nasprune.create_model("resnet20").eval(), torch.randn(1, 3, 32, 32)
    space = SearchSpace(model, x)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        lat = LatencyModel.for_space(space, model, x, device="cpu", cache_dir=cache,
                                     num_threads=args.threads)
    table_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    rows = []
    for keep in [np.ones(space.dim)] + list(rng.uniform(0.1, 1.0, size=(args.candidates,
                                                                         space.dim))):
        pruned = prune(model, x, space.prune_ratios(keep))
        measured = min(measure_latency(pruned, (3, 32, 32), batch_sizes=(1,), repeats=30,
                                       num_threads=args.threads)[1]["min_ms"]
                       for _ in range(3))
        rows.append((space.fractions(keep)[0], lat.predict(space.kept(keep)), measured))
    err = [p / m - 1 for _, p, m in rows]
    print(f"table built in {table_s:.1f} s; predicted/measured - 1: median "
          f"{np.median(np.abs(err)):.1%}, worst {max(err, key=abs):+.1%} over {len(rows)} nets")
    return {"table_seconds": table_s, "rows": rows, "relative_errors": err}


def part_cifar(args) -> dict:
    from nasprune.checkpoint import load, read_spec
    from nasprune.data import load_dataset
    from nasprune.search import Proxy, check_proxy
    from nasprune.search.proxy_check import spearman

    meta = read_spec(args.checkpoint).get("meta") or {}
    data = load_dataset("cifar10", root=args.data_dir, seed=int(meta.get("seed", 0)))
    model = load(args.checkpoint).eval()
    x = torch.randn(1, 3, 32, 32)
    space = SearchSpace(model, x)
    ev = Proxy(model, data, bn_batches=20, val_size=1000, batch_size=64, device="cpu")
    unpruned = ev.accuracy(model)
    rng = np.random.default_rng(0)
    cands, secs = [], []
    budgets = [float(b) for b in args.budgets.split(",")]
    of_budget = [budgets[i % len(budgets)] for i in range(args.candidates)]
    for b in of_budget:
        keep = space.project(rng.uniform(0.1, 1, space.dim), Budget(macs=b))
        cands.append(space.prune_ratios(keep))
    for c in cands[:6]:
        t0 = time.perf_counter()
        ev.score(c)
        secs.append(time.perf_counter() - t0)
    out = {"unpruned_val_acc": unpruned, "seconds_per_candidate": secs,
           "median_s": float(np.median(secs)), "min_s": float(np.min(secs)),
           "machine_before": machine()}
    print(f"CIFAR-10 ResNet-20: {np.median(secs):.2f} s per candidate (median of {len(secs)}, "
          f"fastest {np.min(secs):.2f} s); unpruned val acc {unpruned:.4f}", flush=True)
    if args.finetune_epochs > 0:
        pc = check_proxy(ev, cands, finetune_epochs=args.finetune_epochs,
                         device=args.finetune_device or "cpu")
        # Across budgets, bigger networks win under both measures; what a search relies on
        # is the agreement among candidates of one budget, reported per budget as well.
        pc["budgets"] = of_budget
        rows = list(zip(of_budget, pc["proxy"], pc["finetuned"], strict=True))
        pc["spearman_within"] = {
            str(b): spearman([p for c, p, _ in rows if c == b], [f for c, _, f in rows if c == b])
            for b in budgets if of_budget.count(b) >= 3}
        out["proxy_check"] = pc
        print(f"Spearman {pc['spearman']:.3f} on {pc['n']} candidates "
              f"({args.finetune_epochs} fine-tune epochs); within one budget: "
              + ", ".join(f"{b}: {r:.3f}" for b, r in pc["spearman_within"].items()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("strategies", "cost", "latency", "cifar"), required=True)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strategies", default="all")
    ap.add_argument("--option", action="append", default=None, metavar="KEY=VALUE",
                    help="strategy option for every strategy searched (repeatable)")
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--bn-batches", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--candidates", type=int, default=12)
    ap.add_argument("--budgets", default="0.3,0.5,0.7",
                    help="MACs budgets the CIFAR candidates are projected onto, in turn")
    ap.add_argument("--finetune-epochs", type=float, default=1.0)
    ap.add_argument("--finetune-device", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    t0 = time.perf_counter()
    result = {"part_strategies": part_strategies, "part_cost": part_cost,
              "part_latency": part_latency, "part_cifar": part_cifar}[f"part_{args.part}"](args)
    result.update({"machine": machine(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
                   "seconds": time.perf_counter() - t0, "args": vars(args)})
    print(f"machine: {result['machine']}; {result['date']}; {result['seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
