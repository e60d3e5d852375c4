"""Benchmark: did the task interface slow the built-in in-memory proxy, and how close is a
proxy over torch DataLoaders to it?

(a) Before vs after: the time to score one candidate (``Proxy.score``: prune, adaptive BN
on ``--bn-batches`` training batches, top-1 on ``--val-size`` validation images) on the
built-in in-memory data set, with this tree's code ("after") and with the code of commit
``--before`` (34570c2, before the Task interface) checked out into a temporary worktree
("before"). Each side runs in its own subprocess; rounds alternate before, after, before,
after ...; the ratio is taken per round (paired) and its median reported.

(b) DataLoader vs in-memory: in each "after" process, a second proxy reads the same
normalised images through ``torch.utils.data.DataLoader`` s (a Task of train/val loaders;
the proxy caches its batches once); the two proxies score the candidates alternately.

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


def timed(proxy, ratios) -> tuple[float, float]:
    t0 = time.perf_counter()
    score = proxy.score(ratios)
    return time.perf_counter() - t0, score


def worker(args) -> None:
    """One process: build the proxies, score every candidate, print JSON on stdout."""
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
    out = {k: {"seconds": [], "scores": []} for k in proxies}
    for ratios in cands:
        for name, p in proxies.items():
            s, v = timed(p, ratios)
            out[name]["seconds"].append(s)
            out[name]["scores"].append(v)
    print(json.dumps(out))


def run_side(side: str, src: Path, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side,
           "--checkpoint", args.checkpoint, "--data-dir", args.data_dir,
           "--candidates", str(args.candidates), "--val-size", str(args.val_size),
           "--bn-batches", str(args.bn_batches)]
    if args.nchw:
        cmd.append("--nchw")
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"{side} worker failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def before_tree(commit: str) -> Path:
    path = Path(f"/tmp/nasprune-before-{commit}")
    if not path.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path),
                        commit], check=True, capture_output=True)
    return path


def report(rounds: list[dict], args) -> None:
    med = {k: [statistics.median(r[k]["seconds"]) for r in rounds]
           for k in ("before", "memory", "loader")}
    ratio_a = [a / b for a, b in zip(med["memory"], med["before"], strict=True)]
    ratio_b = [a / b for a, b in zip(med["loader"], med["memory"], strict=True)]
    same_a = all(r["before"]["scores"] == r["memory"]["scores"] for r in rounds)
    diff_b = max(abs(a - b) for r in rounds
                 for a, b in zip(r["loader"]["scores"], r["memory"]["scores"], strict=True))
    print(f"rounds {len(rounds)}, candidates {args.candidates}, val_size {args.val_size}, "
          f"bn_batches {args.bn_batches}; scores {rounds[0]['memory']['scores']}")
    print("\n| path | median s / candidate (per round) | median | paired ratio (median) |")
    print("|---|---|---|---|")
    for k, ref, ratios in (("before", None, None), ("memory", "before", ratio_a),
                           ("loader", "memory", ratio_b)):
        per = ", ".join(f"{v:.3f}" for v in med[k])
        rat = (f"{statistics.median(ratios):.3f} vs {ref} ({', '.join(f'{v:.3f}' for v in ratios)})"
               if ratios else "-")
        print(f"| {k} | {per} | {statistics.median(med[k]):.3f} | {rat} |")
    print(f"\nbefore == after scores: {same_a}; max |loader - memory| score: {diff_b:.2e}")


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
    old = before_tree(args.before) / "src"
    rounds = []
    for i in range(args.rounds):
        b = run_side("before", old, args)["memory"]
        a = run_side("after", REPO / "src", args)
        rounds.append({"before": b, **a})
        print(f"round {i + 1}: before {statistics.median(b['seconds']):.3f} s, after "
              f"{statistics.median(a['memory']['seconds']):.3f} s, loader "
              f"{statistics.median(a['loader']['seconds']):.3f} s", file=sys.stderr)
    report(rounds, args)


if __name__ == "__main__":
    main()
