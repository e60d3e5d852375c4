"""Benchmark: do the search strategies learn? A synthetic objective on real search spaces.

The score of a keep vector is ``-‖keep - k*‖²`` (k* uniform in [0.3, 0.9] per group, one per
seed) — no network is evaluated, so a 40-trial search takes seconds and the numbers show the
samplers' learning alone, free of proxy noise. The search spaces (bounds, group count,
features, cost model) are the real ones of the named models. Every strategy gets the same
seeds (sampler seed = seed, k* from seed) and its default options unless ``--options`` says
otherwise; ``random`` is the baseline. Reports the best score after ``--trials`` trials
(mean ± std over seeds) and the CPU seconds one search spends in the sampler.

Usage: ``nice .venv/bin/python bench/bench_learned.py [--models digitscnn,resnet20]
[--strategies random,rl,gan,predictor] [--seeds 6] [--trials 40] [--options JSON]``.
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import optuna
import torch

import nasprune
from nasprune.search.space import SearchSpace
from nasprune.search.strategies import STRATEGIES


def build_space(model: str) -> SearchSpace:
    inch = 1 if model == "digitscnn" else 3
    size = 8 if model == "digitscnn" else 32
    net = nasprune.create_model(model, in_channels=inch)
    return SearchSpace(net, torch.zeros(1, inch, size, size))


def best_of(space: SearchSpace, sampler, target: np.ndarray, trials: int) -> float:
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        keep = np.array([trial.suggest_float(space.param_name(i), space.lower[i], space.upper[i])
                         for i in range(space.dim)])
        trial.set_user_attr("keep", keep.tolist())  # what the samplers learn from
        return -float(((keep - target) ** 2).sum())

    study.optimize(objective, n_trials=trials)
    return study.best_value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="digitscnn,resnet20")
    ap.add_argument("--strategies", default="random,rl,gan,predictor")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--options", default="{}", help='JSON {"strategy": {options}}')
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = json.loads(args.options)
    rows = []
    for model in args.models.split(","):
        space = build_space(model)
        for name in args.strategies.split(","):
            bests, cpu = [], []
            for seed in range(args.seeds):
                target = np.random.default_rng(100 + seed).uniform(0.3, 0.9, space.dim)
                sampler = STRATEGIES.get(name)(space, seed, **options.get(name, {}))
                c0 = time.process_time()
                bests.append(best_of(space, sampler, target, args.trials))
                cpu.append(time.process_time() - c0)
            rows.append((model, space.dim, name, bests, cpu))
            print(f"{model} {name}: {np.round(bests, 4).tolist()}", flush=True)
    print(f"\n{args.trials} trials, seeds 0..{args.seeds - 1}, {platform.machine()}, Python "
          f"{platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}\n")
    print("| model (groups) | strategy | best −‖keep − k*‖² (mean ± std) | CPU s / search |")
    print("|---|---|---|---|")
    for model, dim, name, bests, cpu in rows:
        print(f"| {model} ({dim}) | {name} | {statistics.mean(bests):.4f} ± "
              f"{statistics.pstdev(bests):.4f} | {statistics.mean(cpu):.1f} |")


if __name__ == "__main__":
    main()
