"""``nasprune demo``: the embedded default, on scikit-learn's digits, with no download.

The demo is a list of steps that share one :class:`DemoState`; each step reads what the
earlier ones left and adds its own results: train the digits CNN with the bundled recipe
(``configs/demo.yaml``), evaluate it, search per-group prune ratios at half the MACs,
prune and fine-tune (``nasprune.search.demo_steps``), write ``results.json`` and print the
before/after table (latency at batch 1, one thread, median).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nasprune.config import TrainConfig, bundled_config, load_config

DEMO_CONFIG = "demo.yaml"


@dataclass
class DemoState:
    """What the steps share: options, the trained baseline and the rows of the table."""

    out: Path
    progress: bool = True
    device: str | None = None
    config: TrainConfig | None = None
    baseline: object = None  # nasprune.train.run.TrainRun after step_train
    search: object = None  # nasprune.search.SearchResult after step_search
    rows: list[dict] = field(default_factory=list)
    results: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def log(self, message: str) -> None:
        print(message, flush=True)


def step_train(state: DemoState) -> None:
    """1. Train the baseline digits CNN (checkpoint in ``OUT/baseline``)."""
    from nasprune.train.run import save_run, train_from_config

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
    head = (f"{'method':<14} {'top-1':>7} {'MACs':>11} {'params':>9} {'MB':>7} "
            f"{'lat. ms':>8} {'train s':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lat = f"{r['latency_ms']:>8.3f}" if r.get("latency_ms") is not None else f"{'-':>8}"
        lines.append(f"{r['method']:<14} {r['top1']:>7.2%} {r['macs']:>11,} {r['params']:>9,} "
                     f"{r['size_mb']:>7.3f} {lat} {r['train_seconds']:>8.1f}")
    return "\n".join(lines)


# Steps 3–4 (search, prune + fine-tune) are owned by the search package.
from nasprune.search.demo_steps import step_prune_finetune, step_search  # noqa: E402

STEPS: list[Callable[[DemoState], None]] = [step_train, step_evaluate, step_search,
                                            step_prune_finetune, step_report]


def run_demo(out: str | Path = "runs/demo", progress: bool = True,
             device: str | None = None) -> dict:
    """Run every step of the demo; returns what ``OUT/results.json`` holds."""
    state = DemoState(out=Path(out), progress=progress, device=device)
    for step in STEPS:
        step(state)
    return state.results
