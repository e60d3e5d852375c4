"""Benchmark: did the task interface slow the built-in in-memory proxy, and how close is a
proxy over torch DataLoaders to it?

(a) Before vs after: the time to score one candidate (``Proxy.score``: prune, adaptive BN
on ``--bn-batches`` training batches, top-1 on ``--val-size`` validation images) on the
built-in in-memory data set, with this tree's code ("after") and with the code of commit
``--before`` (34570c2, before the Task interface) checked out into a temporary worktree
("before"). Each side runs in its own persistent subprocess (data and model loaded once);
every candidate is scored by before, then after, then the DataLoader proxy, candidate by
candidate, round after round, so load changes on a shared machine hit both sides alike;
the ratio is taken per pair and its median reported.

(b) DataLoader vs in-memory: in the "after" process, a second proxy reads the same
normalised images through ``torch.utils.data.DataLoader`` s (a Task of train/val loaders;
the proxy caches its batches once), in the in-memory proxy's order.

Both proxies score the same seeded random candidates (per-group ratios in [0, 0.6]); the
scores are printed so before/after and DataLoader/in-memory can be checked to agree.
Torch runs on one thread so the numbers are stable on a shared machine.

Usage: ``nice .venv/bin/python bench/task_speed.py --checkpoint DIR --data-dir
cifar10-jpg.tar.gz [--rounds 3] [--candidates 3] [--val-size 1000] [--bn-batches 20]
[--nchw]``.
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


class Normalised(torch.utils.data.Dataset):
    """A uint8 split normalised per image with the in-memory loader's arithmetic."""

    def __init__(self, split, mean, std) -> None:
        self.x, self.y = split.x, split.y
        c = self.x.shape[1]
        self.mean = torch.tensor(mean).view(c, 1, 1) * 255.0
        self.std = torch.tensor(std).view(c, 1, 1) * 255.0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return (self.x[i].float() - self.mean) / self.std, self.y[i]


def candidates(model, example, n: int) -> list[dict[str, float]]:
    from nasprune.pruning import groups

    names = [g.name for g in groups(model, example)]
    rng = np.random.default_rng(0)
    return [{k: float(v) for k, v in zip(names, rng.uniform(0.0, 0.6, len(names)),
                                         strict=True)} for _ in range(n)]


def worker(args) -> None:
    """One persistent process: build the proxies, then answer ``<proxy> <candidate>`` lines
    on stdin with ``{"seconds", "score"}`` JSON lines on stdout."""
    torch.set_num_threads(1)
    import nasprune
    from nasprune.data import load_dataset
    from nasprune.search import Evaluator  # the proxy's name on both sides

    data = load_dataset("cifar10", root=args.data_dir, seed=0)
    model = nasprune.load(args.checkpoint).eval()
    example = data.example_input()
    kw = {"bn_batches": args.bn_batches, "val_size": args.val_size, "device": "cpu"}
    proxies = {"memory": Evaluator(model, data, **kw)}
    if args.worker == "after":
        from nasprune.task import Task

        # The in-memory proxy's images in its order (its seeded shuffle, its validation
        # subset), so both proxies see the same batches and must give the same scores.
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
        val = data.val.subset(args.val_size, seed=0)
        loader = torch.utils.data.DataLoader
        task = Task(train=loader(Normalised(data.train, data.mean, data.std), batch_size=64,
                                 sampler=order.tolist()),
                    val=loader(Normalised(val, data.mean, data.std), batch_size=128))
        proxies["loader"] = Evaluator(model, task, example_inputs=example, progress=False,
                                      channels_last=False if args.nchw else None, **kw)
    cands = candidates(model, example, args.candidates)
    for p in proxies.values():
        p.score(cands[0])  # warm-up: first-call allocations and lazy imports
    print("ready", flush=True)
    for line in sys.stdin:
        name, k = line.split()
        t0 = time.perf_counter()
        score = proxies[name].score(cands[int(k)])
        print(json.dumps({"seconds": time.perf_counter() - t0, "score": score}), flush=True)


class Side:
    """A worker process running the code under ``src``."""

    def __init__(self, side: str, src: Path, args) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side,
               "--checkpoint", args.checkpoint, "--data-dir", args.data_dir,
               "--candidates", str(args.candidates), "--val-size", str(args.val_size),
               "--bn-batches", str(args.bn_batches)] + (["--nchw"] if args.nchw else [])
        env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
        self.name = side
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            sys.exit(f"the {side} worker failed to start")

    def score(self, proxy: str, k: int) -> dict:
        self.proc.stdin.write(f"{proxy} {k}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"the {self.name} worker died")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def before_tree(commit: str) -> Path:
    path = Path(f"/tmp/nasprune-before-{commit}")
    if not path.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path),
                        commit], check=True, capture_output=True)
    return path


def report(runs: dict[str, list[dict]], args) -> None:
    sec = {k: [r["seconds"] for r in v] for k, v in runs.items()}
    ratio_a = [a / b for a, b in zip(sec["memory"], sec["before"], strict=True)]
    ratio_b = [a / b for a, b in zip(sec["loader"], sec["memory"], strict=True)]
    score = {k: [r["score"] for r in v] for k, v in runs.items()}
    diff_b = max(abs(a - b) for a, b in zip(score["loader"], score["memory"], strict=True))
    print(f"rounds {args.rounds} x candidates {args.candidates}, val_size {args.val_size}, "
          f"bn_batches {args.bn_batches}; scores {score['memory'][:args.candidates]}")
    print("\n| proxy | median s / candidate | min | max | paired ratio: median (min–max) |")
    print("|---|---|---|---|---|")
    for k, ref, ratios in (("before", "", None), ("memory", "before", ratio_a),
                           ("loader", "memory", ratio_b)):
        rat = (f"{statistics.median(ratios):.3f} vs {ref} ({min(ratios):.3f}–{max(ratios):.3f})"
               if ratios else "-")
        print(f"| {k} | {statistics.median(sec[k]):.3f} | {min(sec[k]):.3f} | "
              f"{max(sec[k]):.3f} | {rat} |")
    print(f"\nbefore == after scores: {score['before'] == score['memory']}; "
          f"max |loader - memory| score: {diff_b:.2e}")


def measure(args) -> dict[str, list[dict]]:
    """Rounds of: each candidate scored by before, after (in-memory), after (DataLoader)."""
    before = Side("before", before_tree(args.before) / "src", args)
    after = Side("after", REPO / "src", args)
    runs: dict[str, list[dict]] = {"before": [], "memory": [], "loader": []}
    try:
        for r in range(args.rounds):
            for k in range(args.candidates):
                runs["before"].append(before.score("memory", k))
                runs["memory"].append(after.score("memory", k))
                runs["loader"].append(after.score("loader", k))
            print(f"round {r + 1}: " + ", ".join(
                f"{n} {statistics.median(x['seconds'] for x in v[-args.candidates:]):.3f} s"
                for n, v in runs.items()), file=sys.stderr)
    finally:
        before.close()
        after.close()
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--before", default="34570c2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--bn-batches", type=int, default=20)
    ap.add_argument("--nchw", action="store_true",
                    help="the DataLoader proxy in NCHW layout (its default: NHWC when the "
                         "model takes it, as the in-memory proxy)")
    ap.add_argument("--worker", choices=("before", "after"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.checkpoint = str(Path(args.checkpoint).resolve())
    args.data_dir = str(Path(args.data_dir).resolve())
    if args.worker:
        return worker(args)
    report(measure(args), args)


if __name__ == "__main__":
    main()
