"""``nasprune search``: NAS over per-group prune ratios at a budget.

Loads the model (a checkpoint, or an untrained zoo model for trying the mechanics) and the
data, runs :func:`nasprune.search.search`, optionally checks the proxy, and writes the best
prune ratios as JSON (``{"ratios": {...}, "best": {...}, ...}``, which ``nasprune prune
--ratios`` reads) plus the resolved config next to it — both atomically, and only after the
search succeeded, so a failed or interrupted run leaves no half-written result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasprune.cli._flags import (
    add_checkpoint,
    add_config,
    add_data,
    add_device_threads,
    add_out,
    add_quiet,
    add_runtime,
    add_task,
    config_path,
    make_runtime,
    parse_options,
    set_threads,
)
from nasprune.errors import NaspruneError

if TYPE_CHECKING:
    from nasprune.search.config import SearchConfig


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search per-group prune ratios at a MACs/params/latency "
                       "budget and write them as JSON for `nasprune prune --ratios`")
    # Flags default to None = "not given", so a --config file's values are kept.
    p.add_argument("--model", default=None, metavar="NAME",
                   help="an untrained zoo model (to try the mechanics)")
    add_checkpoint(p, "a trained, saved model", required=False)
    add_data(p, "data set (default: the checkpoint's)")
    add_task(p)
    p.add_argument("--strategy", default=None, metavar="NAME",
                   help="random, evolution, bayes, tpe, rl, gan, predictor, differentiable "
                   "(default bayes: the best proxy per CPU-minute and the best fine-tuned "
                   "accuracy on ResNet-20 at 50 %% and 30 %% of the MACs, BENCHMARKS.md)")
    p.add_argument("--option", action="append", default=None, metavar="KEY=VALUE",
                   help="a strategy option, e.g. --option population=16 (repeatable)")
    p.add_argument("--space", default=None, metavar="NAME",
                   help="per-group (default: one ratio per channel group), stage (one "
                   "ratio per stage: fewer dimensions, learns in fewer trials) or blocks "
                   "(per-group plus a keep/drop gene per Transformer layer/residual block)")
    p.add_argument("--target-macs", type=float, default=None, metavar="F",
                   help="keep at most this fraction of the MACs (default 0.5)")
    p.add_argument("--target-params", type=float, default=None, metavar="F")
    p.add_argument("--target-latency-ms", type=float, default=None, metavar="MS",
                   help="predicted latency (per-layer table measured once per runtime)")
    p.add_argument("--target-speedup", type=float, default=None, metavar="X",
                   help="run X times faster than the unpruned model on --runtime; the "
                   "delivered network is measured to check it")
    add_runtime(p)
    p.add_argument("--allow-miss", action="store_true", default=None,
                   help="exit 0 even if the measured latency misses the target by > 5 %%")
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help="complete trials the study should hold at the end (default 50)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="sqlite:///FILE or postgresql://... (default: in memory)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="study name: an existing one is continued")
    p.add_argument("--objective", default=None, choices=("single", "multi"))
    p.add_argument("--min-keep", type=float, default=None, metavar="F")
    p.add_argument("--max-keep", type=float, default=None, metavar="F")
    p.add_argument("--round-to", type=int, default=None, metavar="N",
                   help="widths in multiples of N (default: 1, or with a latency/speed-up "
                   "target each group's step the runtime is measured fast at)")
    p.add_argument("--bn-batches", type=int, default=None, metavar="N",
                   help="training batches for adaptive BN (default 20)")
    p.add_argument("--val-size", type=int, default=None, metavar="N",
                   help="validation images per candidate (default 1000)")
    p.add_argument("--finetune-steps", type=int, default=None, metavar="K")
    p.add_argument("--finetune-optimizer", default=None, metavar="NAME",
                   help="the proxy's fine-tuning optimizer, for --finetune-steps and the "
                   "rungs (default sgd at lr 0.01, measured for CNNs; adamw suits a "
                   "Transformer)")
    p.add_argument("--finetune-lr", type=float, default=None, metavar="LR",
                   help="its learning rate (default: 0.01 for sgd, else the optimizer's)")
    p.add_argument("--distill", action="store_const", const=True, default=None,
                   help="the proxy fine-tunes by distillation from the unpruned model")
    p.add_argument("--rungs", default=None, metavar="N:K,...",
                   help="multi-fidelity scoring, e.g. 1000:0,4000:50: every candidate on N "
                   "validation images after K fine-tuning steps, the best 1/ETA so far go on "
                   "to the next rung, the rest stop early (replaces --val-size and "
                   "--finetune-steps for the search); 'off': one fidelity; default 'auto': "
                   "rungs 1000:0,4000:30 when the best warm-start network keeps less than 60 "
                   "%% of the unpruned model's proxy score (measured: they pay at 30 %% of "
                   "ResNet-20's MACs, not at 50 %%)")
    p.add_argument("--rungs-eta", type=float, default=None, metavar="ETA",
                   help="the best 1/ETA of each rung advance (default 3)")
    p.add_argument("--check-proxy", type=int, default=None, metavar="N",
                   help="fine-tune N candidates briefly and report the proxy's Spearman "
                   "correlation")
    p.add_argument("--check-proxy-epochs", type=float, default=None, metavar="E")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-warm-start", dest="warm_start", action="store_const", const=False,
                   default=None, help="skip the warm start (by default a study's first trials "
                   "are the uniform, global and Torch-Pruning-global baselines at the budget)")
    add_device_threads(p)
    add_config(p, "search")
    add_out(p, "FILE.json", "best prune ratios (default search.json)")
    add_quiet(p)
    p.set_defaults(func=cmd_search)


def search_config_from_args(args: argparse.Namespace) -> SearchConfig:
    """The resolved :class:`SearchConfig` of parsed ``nasprune search`` flags (YAML < flags)."""
    from nasprune.config import load_config
    from nasprune.search.config import SearchConfig

    keys = ("model", "checkpoint", "data", "data_dir", "strategy", "space", "target_macs",
            "target_params", "target_latency_ms", "target_speedup", "runtime",
            "latency_threads", "latency_batch", "allow_miss", "trials", "storage", "study",
            "objective",
            "min_keep", "max_keep", "round_to", "bn_batches", "val_size", "finetune_steps",
            "finetune_optimizer", "finetune_lr", "distill", "rungs", "rungs_eta",
            "check_proxy", "check_proxy_epochs", "seed", "device", "out", "task", "warm_start")
    overrides = {k: getattr(args, k) for k in keys}
    overrides["strategy_options"] = parse_options(args.option)
    overrides["task_args"] = parse_options(args.task_arg, "--task-arg")
    return load_config(SearchConfig, config_path(args.config), overrides)


def cmd_search(args: argparse.Namespace) -> int:
    cfg = search_config_from_args(args)
    set_threads(args.threads)
    doc = run_search_command(cfg, progress=not args.quiet)
    delivery = doc.get("delivery")
    if delivery and not delivery["met"] and not cfg.allow_miss:
        print(f"miss: the delivered network misses the target by {delivery['miss']:.1%} "
              "when measured (see above); exit 1 (--allow-miss accepts it)", file=sys.stderr)
        return 1
    return 0


def model_and_data(cfg: SearchConfig) -> tuple[Any, Any, dict]:
    """The model to search (in eval mode), its data set (or the user's task) and the
    checkpoint's meta (the task's import path and arguments with ``--task``)."""
    from nasprune.data import load_dataset

    if cfg.task is not None:
        return _model_and_task(cfg)
    if cfg.task_args:
        raise NaspruneError("--task-arg needs --task MODULE:FUNCTION")
    if (cfg.model is None) == (cfg.checkpoint is None):
        raise NaspruneError("give exactly one of --model NAME or --checkpoint DIR")
    meta: dict = {}
    if cfg.checkpoint is not None:
        from nasprune.checkpoint import load, recorded_dataset

        if not Path(cfg.checkpoint).is_dir():
            raise NaspruneError(f"checkpoint directory not found: {cfg.checkpoint}")
        # The split seed the model was trained with: its validation images stay unseen.
        data, meta = recorded_dataset(cfg.checkpoint, cfg.data, cfg.data_dir,
                                      fallback_seed=cfg.seed)
        model = load(cfg.checkpoint)
    else:
        from nasprune.models import create_model

        if cfg.data is None:
            raise NaspruneError("--model needs --data NAME")
        data = load_dataset(cfg.data, root=cfg.data_dir, seed=cfg.seed)
        model = create_model(cfg.model, num_classes=data.num_classes,
                             in_channels=data.input_shape[0])
        print(f"note: searching an untrained {cfg.model}: scores are near chance; pass "
              "--checkpoint DIR of a trained model for a meaningful search", file=sys.stderr)
    return model.eval(), data, meta


def _model_and_task(cfg: SearchConfig) -> tuple[Any, Any, dict]:
    """``--task``: the factory's task, and its model or the checkpoint's."""
    from nasprune.task_loader import load_task

    if cfg.data is not None:
        raise NaspruneError("give --task or --data, not both: the task brings its own data")
    if cfg.model is not None:
        raise NaspruneError("--model NAME builds a zoo model for a built-in data set: with "
                            "--task, return (task, model) from the function or pass "
                            "--checkpoint DIR")
    loaded = load_task(cfg.task, cfg.task_args)
    return loaded.model_from(cfg.checkpoint), loaded.task, loaded.record()


def _budget(cfg: SearchConfig) -> Any:
    from nasprune.search import Budget

    if all(v is None for v in (cfg.target_macs, cfg.target_params, cfg.target_latency_ms,
                               cfg.target_speedup)):
        return Budget(macs=0.5)
    return Budget(macs=cfg.target_macs, params=cfg.target_params,
                  latency_ms=cfg.target_latency_ms, speedup=cfg.target_speedup)


def _proxy_candidates(result: Any, n: int) -> list[dict[str, float]]:
    """``n`` trials spread evenly over the score ranking (the proxy check needs range); with
    rungs, over the first rung's ranking of all trials, those stopped early included."""
    import numpy as np

    ranked = sorted(result.trials + result.stopped,
                    key=lambda c: c.rung_scores[0] if c.rung_scores else c.score)
    idx = np.unique(np.linspace(0, len(ranked) - 1, min(n, len(ranked))).round().astype(int))
    return [ranked[i].ratios for i in idx]


def run_search_command(cfg: SearchConfig, progress: bool = True) -> dict:
    """Run the search ``cfg`` describes; returns the JSON document it wrote."""
    import torch

    from nasprune.checkpoint import write_atomic
    from nasprune.config import save_resolved
    from nasprune.search import Proxy, check_proxy, search
    from nasprune.search.rungs import AUTO, as_rungs

    out = Path(cfg.out)
    if out.suffix != ".json":
        raise NaspruneError(f"--out must name a .json file, got {cfg.out}")
    if out.exists() and out.is_dir():
        raise NaspruneError(f"--out {cfg.out} is a directory")
    budget = _budget(cfg)
    # a bad spelling fails before any loading
    rungs = as_rungs(cfg.rungs, cfg.rungs_eta, auto=True)
    if rungs not in (None, AUTO) and cfg.objective == "multi":
        raise NaspruneError("--rungs needs --objective single")
    runtime = (make_runtime(cfg.runtime, cfg.latency_threads, cfg.latency_batch, cfg.device)
               if budget.timed else None)  # a missing onnxruntime fails before the data
    model, data, meta = model_and_data(cfg)
    # A task's example inputs come from its first validation batch (the proxy's).
    example = None if cfg.task else torch.randn(1, *data.input_shape)
    round_to = cfg.round_to
    if round_to is None and runtime is not None and example is not None:
        from nasprune.search.group_widths import describe_steps, measured_steps

        round_to, _ = measured_steps(model, example, runtime)
        print(f"widths: per-group steps measured on {runtime.describe()}: "
              f"{describe_steps(round_to)} (--round-to N overrides)")
    evaluator = Proxy(model, data, bn_batches=cfg.bn_batches, val_size=cfg.val_size,
                      finetune_steps=cfg.finetune_steps,
                      finetune_optimizer=cfg.finetune_optimizer, finetune_lr=cfg.finetune_lr,
                      distill=cfg.distill, device=cfg.device,
                      example_inputs=example, round_to=round_to, seed=cfg.seed,
                      rungs=None if rungs == AUTO else rungs)
    if example is None:  # the proxy's copy lives on its device; the search traces the model
        from nasprune.metrics.evaluate import model_device
        from nasprune.task import to_device

        example = to_device(evaluator.example_inputs, model_device(model))
    result = search(model, example, data, strategy=cfg.strategy, target=budget,
                    trials=cfg.trials, storage=cfg.storage, study=cfg.study, seed=cfg.seed,
                    objective=cfg.objective, evaluator=evaluator, min_keep=cfg.min_keep,
                    max_keep=cfg.max_keep, round_to=round_to, device=cfg.device,
                    space=cfg.space, progress=progress, warm_start=cfg.warm_start,
                    runtime=runtime, rungs=rungs, **cfg.strategy_options)
    doc = result.to_dict()
    doc["round_to"] = round_to  # `nasprune prune --ratios` prunes to the same widths
    if cfg.task:
        doc.update(meta)  # the import path and arguments: a re-run rebuilds the same task
    if cfg.check_proxy:
        cands = _proxy_candidates(result, cfg.check_proxy)
        if len(cands) < 2:
            raise NaspruneError("--check-proxy needs at least 2 completed trials")
        doc["proxy_check"] = check_proxy(evaluator, cands, cfg.check_proxy_epochs)
    write_atomic(out, json.dumps(doc, indent=1) + "\n")
    save_resolved(cfg, out.with_suffix(".config.yaml"))
    _print_result(cfg, result, doc, out)
    return doc


def _print_result(cfg: SearchConfig, result: Any, doc: dict, out: Path) -> None:
    """The summary lines: the study, the best trial, the proxy check and what to run next."""
    best = result.best
    print(f"searched {cfg.strategy}: {len(result.trials)} trials in study "
          f"'{result.study.study_name}' ({result.seconds:.1f} s, {result.failed} failed"
          + (f", {len(result.stopped)} stopped early at a rung)" if result.rungs else ")"))
    latency = ("" if best.latency_ms is None
               else f", predicted latency {best.latency_ms:.3g} ms")
    print(f"best score {best.score:.4f} (trial {best.number}): MACs {best.macs:,} "
          f"({best.macs_fraction:.1%}), params {best.params:,} ({best.params_fraction:.1%})"
          f"{latency}")
    if result.warm_start_best is not None:
        print(f"warm start: best baseline {result.warm_start_best} scored "
              f"{result.warm_start_score:.4f}; the search improved on it by "
              f"{result.improvement:+.4f}")
    if result.delivery is not None:
        print(result.delivery.describe())
    if "proxy_check" in doc:
        pc = doc["proxy_check"]
        print(f"proxy check: Spearman {pc['spearman']:.3f} between proxy and "
              f"{cfg.check_proxy_epochs:g}-epoch fine-tuned accuracy on {pc['n']} candidates"
              " of this budget" + (" (top rung)" if "rungs" in pc else ""))
        for i, r in enumerate(pc.get("rungs", ())):
            print(f"  rung {i} ({r['val_size']} images, {r['finetune_steps']} steps): "
                  f"Spearman {r['spearman']:.3f}")
    if cfg.task:  # `nasprune prune` cannot rebuild a task's own model: prune it in Python
        print(f"wrote {out} (prune ratios per group); next, in Python: "
              f"nasprune.prune(model, example_inputs, json.load(open('{out}'))['ratios'])")
        return
    src = cfg.checkpoint or "DIR"  # a --model search has no checkpoint to name
    dest = f"{src}-pruned" if cfg.checkpoint else "DIR"
    print(f"wrote {out} (prune ratios per group); next: nasprune prune --checkpoint {src} "
          f"--ratios {out} --out {dest}")
