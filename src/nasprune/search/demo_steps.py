"""The demo's search → prune → fine-tune steps (they run between evaluate and report).

``step_search`` searches per-group prune ratios for the trained digits CNN at half its MACs
with the ``evolution`` strategy (adaptive-BN proxy on the validation split);
``step_prune_finetune`` physically prunes to the best ratios, fine-tunes with the unpruned
network as the distillation teacher, and adds the pruned model's row (test accuracy,
MACs, params, size, latency) to the demo's before/after table. Everything is saved in the
demo's output directory: ``search.json``, ``pruned/`` (checkpoint).
"""

from __future__ import annotations

import json
import time
from typing import Any

DEMO_SEARCH = {
    "strategy": "evolution",
    "budget": 0.5,  # fraction of the unpruned MACs
    "trials": 30,
    "bn_batches": 10,
    "val_size": 269,  # the whole digits validation split
    "finetune_epochs": 12,
}


def _latency_ms(model: Any, shape: tuple[int, ...]) -> float:
    from nasprune.metrics import measure_latency

    r = measure_latency(model, shape, batch_sizes=(1,), device="cpu", warmup=5, repeats=30,
                        num_threads=1)
    return float(r[1]["median_ms"])


def step_search(state: Any) -> None:
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


def step_prune_finetune(state: Any) -> None:
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
