"""Benchmark: are nasprune's uniform/global L1 networks as good as Torch-Pruning's, before
any fine-tuning?

For one trained checkpoint and several MACs budgets, prune four ways — nasprune's uniform
ratio and global ranking (bisected to at most the budget, as ``nasprune experiment`` does)
and Torch-Pruning's ``MetaPruner`` with L1 magnitude, uniform and global (bisected as in
``bench/peers.py``: the closest ratio, at most 1 % over the budget) — and score every
network with the same proxy: BatchNorm statistics re-estimated on ``--bn-batches`` training
batches, then top-1 on ``--val-size`` validation images. This separates the pruning itself
from the fine-tuning noise of the peer benchmark.

Usage: ``nice .venv/bin/python bench/proxy_vs_tp.py --checkpoint DIR --data cifar10
--data-dir data/cifar10 [--budgets 0.3,0.5,0.7] [--val-size 10000] [--bn-batches 20]
[--variants]``.
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterator

import torch
from fastnas import available as fastnas_available
from fastnas import fastnas_to_budget
from peers import cpu_name, tp_to_budget
from torch import nn

import nasprune
import nasprune.pruning.criteria.base as criteria_base
from nasprune.checkpoint import load, read_spec
from nasprune.data import load_dataset
from nasprune.errors import NaspruneError
from nasprune.methods import smallest_cut
from nasprune.metrics import count_macs
from nasprune.search import Proxy


def ours_at(model: nn.Module, x: torch.Tensor, budget: float, how: str) -> nn.Module:
    """nasprune's ``uniform`` or ``global`` experiment method at ``budget`` of the MACs."""
    limit = budget * count_macs(model, x)

    def make(r: float) -> tuple[nn.Module, float]:
        m = (nasprune.prune(model, x, r) if how == "uniform"
             else nasprune.prune(model, x, "global", global_target=r))
        return m, float(count_macs(m, x))

    return smallest_cut(make, limit, 0.0, 0.95, steps=14, what=how)[0]


def raw_mean(per_layer: list[torch.Tensor], channels: int) -> torch.Tensor:
    """Torch-Pruning's way to combine a group's layers: average the raw norms, then divide
    by the mean (nasprune's ``combine`` divides each layer by its mean before averaging)."""
    if not per_layer:
        return torch.zeros(channels, dtype=torch.float64)
    s = torch.stack(per_layer).mean(0)
    return s / s.mean() if s.mean() > 0 else s


@contextlib.contextmanager
def combining(how: Callable[[list[torch.Tensor], int], torch.Tensor]) -> Iterator[None]:
    """A what-if for ``--variants``: nasprune's criteria with another ``combine``."""
    saved = criteria_base.combine
    criteria_base.combine = how
    try:
        yield
    finally:
        criteria_base.combine = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--budgets", default="0.3,0.4,0.5,0.6,0.7")
    ap.add_argument("--val-size", type=int, default=10000)
    ap.add_argument("--bn-batches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--variants", action="store_true",
                    help="also nasprune's uniform and global with Torch-Pruning's way of "
                    "combining a group's layers (raw mean), as a what-if")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    seed = int((read_spec(args.checkpoint).get("meta") or {}).get("seed", 0))
    data = load_dataset(args.data, root=args.data_dir, seed=seed)
    model = load(args.checkpoint).eval()
    x = data.example_input(1)
    base = count_macs(model, x)
    ev = Proxy(model, data, bn_batches=args.bn_batches, val_size=args.val_size,
                   device="cpu", example_inputs=x, seed=seed)
    makers: dict[str, Callable[[float], nn.Module]] = {
        "nasprune uniform": lambda b: ours_at(model, x, b, "uniform"),
        "nasprune global": lambda b: ours_at(model, x, b, "global"),
        "TP uniform": lambda b: tp_to_budget(model, x, b, global_pruning=False)[0],
        "TP global": lambda b: tp_to_budget(model, x, b, global_pruning=True)[0],
    }
    if fastnas_available():  # in the benchmark environment of bench/fastnas_env.sh
        # Its score_func is the proxy nasprune's search uses by default (1,000 validation
        # images), so its pick is re-scored on --val-size images like the searches' picks.
        search_proxy = Proxy(model, data, bn_batches=args.bn_batches, val_size=1000,
                             device="cpu", example_inputs=x, seed=seed, channels_last=False)
        makers["FastNAS"] = lambda b: fastnas_to_budget(model, x, b, search_proxy)[0]
    if args.variants:
        for how in ("uniform", "global"):
            def make(b: float, how: str = how) -> nn.Module:
                with combining(raw_mean):
                    return ours_at(model, x, b, how)
            makers[f"nasprune {how}, raw mean"] = make
    start, rows = time.time(), []
    for budget in (float(b) for b in args.budgets.split(",")):
        for name, make in makers.items():
            try:
                net = copy.deepcopy(make(budget))
            except NaspruneError as exc:  # e.g. Torch-Pruning's uniform ratio cannot get there
                rows.append({"budget": budget, "method": name, "error": str(exc)})
                print(f"{budget:.2f} {name:17s} {exc}", flush=True)
                continue
            ev.recalibrate(net)
            rows.append({"budget": budget, "method": name, "macs": count_macs(net, x) / base,
                         "proxy": ev.accuracy(net)})
            print(f"{budget:.2f} {name:17s} MACs {rows[-1]['macs']:.2%} "
                  f"proxy {rows[-1]['proxy']:.2%}", flush=True)
    print(f"\n{cpu_name()}, torch {torch.__version__}, {args.threads} threads, "
          f"{time.time() - start:.0f} s; proxy = top-1 on {args.val_size} validation images "
          f"after {args.bn_batches} BN batches\n")
    names = list(makers)
    print("| MACs budget | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for budget in dict.fromkeys(r["budget"] for r in rows):
        cells = [next(f"{r['proxy']:.2%} ({r['macs']:.1%})" if "proxy" in r else "cannot"
                      for r in rows if r["budget"] == budget and r["method"] == n)
                 for n in names]
        print(f"| {budget:.0%} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
