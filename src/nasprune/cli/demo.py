"""``nasprune demo``: the embedded default, on scikit-learn's digits, with no download.

The demo is a list of steps that share one :class:`DemoState`; each step reads what the
earlier ones left and adds its own results: train the digits CNN with the bundled recipe
(``configs/demo.yaml``), evaluate it, search per-group prune ratios at half the MACs
(``evolution``, adaptive-BN proxy on the validation split), prune to the best ratios and
fine-tune with the unpruned network as the distillation teacher, write ``results.json``
and print the before/after table (latency at batch 1, one thread, median). Everything is
saved in the output directory: ``baseline/`` and ``pruned/`` (checkpoints),
``search.json``, ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasprune.cli._flags import add_device_threads, add_out, add_quiet, set_threads

if TYPE_CHECKING:
    from nasprune.config import TrainConfig

DEMO_CONFIG = "demo.yaml"

DEMO_SEARCH = {
    "strategy": "evolution",
    "budget": 0.5,  # fraction of the unpruned MACs
    "trials": 30,
    "bn_batches": 10,
    "val_size": 269,  # the whole digits validation split
    "finetune_epochs": 12,
}


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the embedded default: digits data, small CNN, no "
                       "download")
    add_out(p, "DIR", "output directory (default runs/demo)", default="runs/demo")
    # One thread: the digits models' ops are too small to split, and on a busy CPU extra
    # OpenMP threads spin-wait (measured: 22 s vs 143 s for the demo at load 13 on 2 cores).
    add_device_threads(p, default=1, help="CPU threads (default 1, fastest for these small "
                       "models)")
    add_quiet(p, "no progress bars")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    run_demo(out=args.out, progress=not args.quiet, device=args.device)
    return 0


@dataclass
class DemoState:
    """What the steps share: options, the trained baseline and the rows of the table."""

    out: Path
    progress: bool = True
    device: str | None = None
    config: TrainConfig | None = None
    baseline: Any = None  # nasprune.cli.train.TrainRun after step_train
    search: Any = None  # nasprune.search.SearchResult after step_search
    rows: list[dict] = field(default_factory=list)
    results: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def log(self, message: str) -> None:
        print(message, flush=True)


def step_train(state: DemoState) -> None:
    """1. Train the baseline digits CNN (checkpoint in ``OUT/baseline``)."""
    from nasprune.cli.train import save_run, train_from_config
    from nasprune.config import TrainConfig, bundled_config, load_config

    overrides = {"device": state.device, "out": str(state.out / "baseline")}
    state.config = load_config(TrainConfig, bundled_config(DEMO_CONFIG), overrides)
    cfg = state.config
    state.log(f"[1] training {cfg.model} on {cfg.data} ({cfg.epochs} epochs, {cfg.optimizer}, "
              f"{cfg.schedule})")
    state.baseline = train_from_config(cfg, progress=state.progress)
    save_run(state.baseline, cfg.out)


def step_evaluate(state: DemoState) -> None:
    """2. Measure the baseline: test accuracy, MACs, parameters, size."""
    from nasprune.metrics import count_macs, count_params, model_size_mb

    run = state.baseline
    example = run.data.example_input(1)
    model = run.model.cpu().eval()
    state.rows.append({
        "method": "unpruned",
        "top1": run.test["top1"],
        "f1": run.test["f1"],
        "macs": count_macs(model, example),
        "params": count_params(model),
        "size_mb": model_size_mb(model),
        "train_seconds": run.fit.train_seconds,
        "checkpoint": str(Path(state.config.out)),
    })


def _latency_ms(model: Any, shape: tuple[int, ...]) -> float:
    from nasprune.metrics import measure_latency

    r = measure_latency(model, shape, batch_sizes=(1,), device="cpu", warmup=5, repeats=30,
                        num_threads=1)
    return float(r[1]["median_ms"])


def step_search(state: DemoState) -> None:
    """3. Search per-group prune ratios at 50 % of the MACs (evolution, adaptive-BN proxy)."""
    from nasprune.checkpoint import write_atomic
    from nasprune.search import Budget, search

    run = state.baseline
    model, data = run.model.cpu().eval(), run.data
    cfg = DEMO_SEARCH
    state.log(f"[3] searching per-group prune ratios: {cfg['strategy']}, {cfg['trials']} "
              f"trials, MACs ≤ {cfg['budget']:.0%}, proxy = adaptive-BN accuracy on the "
              f"validation split")
    result = search(model, data.example_input(1), data, strategy=cfg["strategy"],
                    target=Budget(macs=cfg["budget"]), trials=cfg["trials"], seed=0,
                    bn_batches=cfg["bn_batches"], val_size=cfg["val_size"], device="cpu",
                    progress=state.progress)
    best = result.best
    state.search = result
    state.log(f"    best proxy {best.score:.2%} (trial {best.number}) at "
              f"{best.macs_fraction:.1%} MACs; {result.seconds:.1f} s")
    write_atomic(state.out / "search.json", json.dumps(result.to_dict(), indent=1) + "\n")


def step_prune_finetune(state: DemoState) -> None:
    """4. Prune to the best ratios, fine-tune with the unpruned model as teacher, evaluate."""
    from nasprune.checkpoint import save
    from nasprune.metrics import count_macs, count_params, evaluate, model_size_mb
    from nasprune.pruning import prune
    from nasprune.train import finetune

    run, result = state.baseline, state.search
    model, data = run.model.cpu().eval(), run.data
    example = data.example_input(1)
    epochs = DEMO_SEARCH["finetune_epochs"]
    pruned = prune(model, example, result.best.ratios)
    state.log(f"[4] pruned to {count_macs(pruned, example):,} MACs; fine-tuning {epochs} "
              "epochs with the unpruned model as teacher")
    start = time.perf_counter()
    fit = finetune(pruned, data, epochs=epochs, teacher=model, progress=state.progress,
                   device=state.device, seed=0)
    pruned = pruned.cpu().eval()
    seconds = time.perf_counter() - start
    test = evaluate(pruned, data, split="test", device="cpu")
    save(pruned, state.out / "pruned", meta={
        "data": data.name, "seed": run.config.seed, "num_classes": data.num_classes,
        "input_shape": list(data.input_shape), "metrics": {"test": test},
        "pruned_from": str(state.config.out), "search": result.to_dict()["best"]})
    shape = tuple(data.input_shape)
    state.rows[0]["latency_ms"] = _latency_ms(model, shape)
    state.rows.append({
        "method": f"nas:{result.strategy}",
        "top1": test["top1"],
        "f1": test["f1"],
        "macs": count_macs(pruned, example),
        "params": count_params(pruned),
        "size_mb": model_size_mb(pruned),
        "latency_ms": _latency_ms(pruned, shape),
        "train_seconds": seconds,
        "search_seconds": result.seconds,
        "best_val_acc": fit.best_val_acc,
        "checkpoint": str(state.out / "pruned"),
    })


def step_report(state: DemoState) -> None:
    """Last: write ``OUT/results.json`` and print the table."""
    from nasprune.checkpoint import write_atomic

    state.results = {
        "test_accuracy": state.rows[0]["top1"],
        "rows": state.rows,
        "seconds": time.perf_counter() - state.started,
        "config": state.baseline.summary()["config"],
    }
    write_atomic(state.out / "results.json", json.dumps(state.results, indent=1) + "\n")
    print(format_table(state.rows))
    print(f"test accuracy {state.results['test_accuracy']:.2%} · "
          f"{state.results['seconds']:.1f} s in all · results in {state.out}")


def format_table(rows: Sequence[dict]) -> str:
    """The before/after table, one row per method."""
    head = (f"{'method':<14} {'top-1':>7} {'MACs':>11} {'params':>9} {'MB':>7} "
            f"{'lat. ms':>8} {'train s':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lat = f"{r['latency_ms']:>8.3f}" if r.get("latency_ms") is not None else f"{'-':>8}"
        lines.append(f"{r['method']:<14} {r['top1']:>7.2%} {r['macs']:>11,} {r['params']:>9,} "
                     f"{r['size_mb']:>7.3f} {lat} {r['train_seconds']:>8.1f}")
    return "\n".join(lines)


STEPS: list[Callable[[DemoState], None]] = [step_train, step_evaluate, step_search,
                                            step_prune_finetune, step_report]


def run_demo(out: str | Path = "runs/demo", progress: bool = True,
             device: str | None = None) -> dict:
    """Run every step of the demo; returns what ``OUT/results.json`` holds."""
    state = DemoState(out=Path(out), progress=progress, device=device)
    for step in STEPS:
        step(state)
    return state.results
