"""Benchmark: does multi-fidelity scoring (rungs) rank and pick candidates better?

For one trained model and one MACs budget, ``--candidates`` random keep vectors are
projected onto the budget. Each is scored the way a rung chain scores it (one pruned copy,
fine-tuned in segments to each of ``--steps``, BN re-estimated and scored on the first
``--val-sizes`` validation images after each segment), then fine-tuned for
``--finetune-epochs`` (``nasprune.finetune``, as ``--check-proxy`` does) and measured on
``--truth-size`` *test* images: the ground truth, on images no score saw, so its noise is
independent of theirs. Reports the Spearman correlation of every fidelity with the ground
truth within the budget, the seconds each costs, and — replaying successive halving offline
over ``--orders`` random candidate orders — the ground truth of the candidate each setting
(one fidelity for all, or ``--rungs`` settings with ``--eta``) would pick, with its cost.

Usage: ``nice .venv/bin/python bench/bench_rungs.py --data digits [--budget 0.25]``, or
``--data cifar10 --checkpoint ../shared/baselines/resnet20-cifar10 --data-dir
../shared/data/cifar10-jpg.tar.gz``. Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch
from bench_search import baseline_digits, machine

import nasprune
from nasprune.search import Budget, Proxy, SearchSpace, spearman


def load(args) -> tuple:
    """(model, data) — the demo's digits baseline, or a checkpoint with its split seed."""
    if args.data == "digits":
        model, data, _ = baseline_digits()
        return model, data
    from nasprune.checkpoint import load as load_ckpt
    from nasprune.checkpoint import read_spec

    meta = read_spec(args.checkpoint).get("meta") or {}
    data = nasprune.load_dataset(args.data, root=args.data_dir, seed=int(meta.get("seed", 0)))
    return load_ckpt(args.checkpoint).eval(), data


def score_table(proxy: Proxy, ratios: dict, steps: list[int], sizes: list[int]) -> tuple:
    """Scores [step level][val size] of one candidate along one rung chain, and seconds
    [step level][val size] each cell costs on its own (its segment + BN + its images)."""
    pruned = proxy.prune(ratios)
    scores, secs, done = [], [], 0
    for k in steps:
        t0 = time.perf_counter()
        proxy.finetune(pruned, k - done, first_step=done)
        proxy.recalibrate(pruned)
        base = time.perf_counter() - t0
        done = k
        row, row_s = [], []
        for n in sizes:
            t1 = time.perf_counter()
            row.append(proxy.accuracy(pruned, n))
            row_s.append(base + time.perf_counter() - t1)
        scores.append(row)
        secs.append(row_s)
    return scores, secs


def truth(model, data, ratios: dict, x, args) -> float:
    """Top-1 on ``--truth-size`` test images after ``--finetune-epochs`` of fine-tuning."""
    from nasprune.metrics import evaluate

    pruned = nasprune.prune(model, x, ratios)
    epochs = max(1, int(np.ceil(args.finetune_epochs)))
    # A fraction of an epoch: that many steps of a one-epoch schedule (as --check-proxy).
    steps = (None if args.finetune_epochs >= 1
             else max(1, int(args.finetune_epochs * len(data.train) / 128)))
    nasprune.finetune(pruned, data, epochs=epochs, max_steps=steps, batch_size=128, seed=0,
                      device="cpu", progress=False)
    test = data.test.subset(args.truth_size, seed=1)
    return float(evaluate(pruned, data, split=test, progress=False)["top1"])


def halving(order: list[int], chain: list[np.ndarray], eta: float) -> tuple[int, list[int]]:
    """Successive halving over ``order`` as the search runs it (nasprune.search.rungs):
    returns the pick (best at the highest rung reached) and the rung each one reached."""
    seen: list[list[float]] = [[] for _ in chain]
    reached = {}
    for c in order:
        r = 0
        while True:
            s = chain[r][c]
            better = sum(v > s for v in seen[r])
            seen[r].append(s)
            if r + 1 == len(chain) or better >= int(np.ceil(len(seen[r]) / eta)):
                break
            r += 1
        reached[c] = r
    top = max(reached.values())
    pick = max((c for c in order if reached[c] == top), key=lambda c: chain[top][c])
    return pick, [reached[c] for c in range(len(chain[0]))]


def replay(settings: dict, table: np.ndarray, cost: np.ndarray, gt: np.ndarray,
           idx: dict, args) -> list[dict]:
    """Mean ground truth of the pick and mean seconds per search, per setting."""
    rng = np.random.default_rng(0)
    orders = [list(rng.permutation(len(gt))) for _ in range(args.orders)]
    rows = []
    for name, chain in settings.items():
        cells = [idx[c] for c in chain]
        scores = [table[:, i, j] for i, j in cells]
        picks, secs = [], []
        for order in orders:
            pick, reached = halving(order, scores, args.eta)
            picks.append(gt[pick])
            # A candidate pays each rung it reached (segments are cumulative, BN + images
            # per rung).
            secs.append(sum(cost[c, i, j] for c, r in enumerate(reached)
                            for (i, j) in cells[:r + 1]))
        rows.append({"setting": name, "pick_truth": float(np.mean(picks)),
                     "pick_truth_min": float(np.min(picks)), "seconds": float(np.mean(secs))})
    return rows


def replay_saved(args) -> None:
    """``--replay``: successive halving with ``--rungs``/``--eta`` over a saved run."""
    saved = json.load(open(args.replay))
    steps = [int(s) for s in saved["args"]["steps"].split(",")]
    sizes = [int(s) for s in saved["args"]["val_sizes"].split(",")]
    idx = {f"{n}:{k}": (i, j) for (i, k), (j, n) in
           itertools.product(enumerate(steps), enumerate(sizes))}
    settings = {f"{t} (eta {args.eta:g})": t.split(",") for t in args.rungs or ()}
    rows = replay(settings, np.array(saved["table"]), np.array(saved["cost"]),
                  np.array(saved["truth"]), idx, args)
    for p in rows:
        print(f"| {p['setting']} | {p['pick_truth']:.4f} ({p['pick_truth_min']:.4f}) | "
              f"{p['seconds']:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--candidates", type=int, default=24)
    ap.add_argument("--steps", default="0,20,60", help="fine-tuning step levels (a chain)")
    ap.add_argument("--val-sizes", default="100,269", help="validation images per score")
    ap.add_argument("--bn-batches", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=float, default=3.0)
    ap.add_argument("--truth-size", type=int, default=10_000)
    ap.add_argument("--rungs", action="append", default=None,
                    help="a rung setting to replay, e.g. 100:0,269:20 (repeatable)")
    ap.add_argument("--eta", type=float, default=3.0)
    ap.add_argument("--orders", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--replay", default=None, metavar="JSON",
                    help="replay the --rungs settings on a saved run's scores (no scoring)")
    args = ap.parse_args()
    if args.replay:
        return replay_saved(args)
    torch.set_num_threads(args.threads)
    steps = [int(s) for s in args.steps.split(",")]
    sizes = [int(s) for s in args.val_sizes.split(",")]
    start = time.perf_counter()
    model, data = load(args)
    x = torch.randn(1, *data.input_shape)
    space = SearchSpace(model, x)
    proxy = Proxy(model, data, bn_batches=args.bn_batches, val_size=max(sizes),
                  finetune_steps=max(steps), device="cpu", progress=False)
    rng = np.random.default_rng(0)
    cands = [space.prune_ratios(space.project(rng.uniform(0.1, 1, space.dim),
                                              Budget(macs=args.budget)))
             for _ in range(args.candidates)]
    table, cost, gt = [], [], []
    for i, ratios in enumerate(cands):
        s, c = score_table(proxy, ratios, steps, sizes)
        table.append(s)
        cost.append(c)
        gt.append(truth(model, data, ratios, x, args))
        print(f"candidate {i}: {np.round(s, 4).tolist()} truth {gt[-1]:.4f}", flush=True)
    table, cost, gt = np.array(table), np.array(cost), np.array(gt)
    idx = {f"{n}:{k}": (i, j) for (i, k), (j, n) in
           itertools.product(enumerate(steps), enumerate(sizes))}
    fidelity = [{"fidelity": f, "spearman": spearman(table[:, i, j], gt),
                 "seconds": float(np.median(cost[:, i, j]))} for f, (i, j) in idx.items()]
    settings = {f: [f] for f in idx}
    for text in args.rungs or ():
        settings[f"{text} (eta {args.eta:g})"] = text.split(",")
    picks = replay(settings, table, cost, gt, idx, args)
    print(f"\n{args.candidates} candidates at {args.budget:.0%} MACs; truth: top-1 on "
          f"{min(args.truth_size, len(data.test))} test images after {args.finetune_epochs:g} "
          f"epoch(s) of fine-tuning: {gt.min():.4f}-{gt.max():.4f} (best {gt.max():.4f}); "
          f"{machine()}; {time.perf_counter() - start:.0f} s\n")
    print("| fidelity (images:steps) | Spearman with truth | s / candidate (median) |")
    print("|---|--:|--:|")
    for f in fidelity:
        print(f"| {f['fidelity']} | {f['spearman']:.3f} | {f['seconds']:.2f} |")
    print(f"\n| setting | truth of the pick, mean of {args.orders} orders (worst) | "
          "s / search |")
    print("|---|--:|--:|")
    for p in picks:
        print(f"| {p['setting']} | {p['pick_truth']:.4f} ({p['pick_truth_min']:.4f}) | "
              f"{p['seconds']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "table": table.tolist(), "cost": cost.tolist(),
                       "truth": gt.tolist(), "fidelity": fidelity, "picks": picks,
                       "machine": machine()}, f, indent=1)


if __name__ == "__main__":
    main()
