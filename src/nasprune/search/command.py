"""What ``nasprune search`` does, given a resolved :class:`SearchConfig`.

Loads the model (a checkpoint, or an untrained zoo model for trying the mechanics) and the
data, runs :func:`nasprune.search.search`, optionally checks the proxy, and writes the best
prune ratios as JSON (``{"ratios": {...}, "best": {...}, ...}``, which ``nasprune prune
--ratios`` reads) plus the resolved config next to it — both atomically, and only after the
search succeeded, so a failed or interrupted run leaves no half-written result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nasprune.errors import NaspruneError
from nasprune.search.config import SearchConfig


def _model_and_data(cfg: SearchConfig) -> tuple[Any, Any, dict]:
    from nasprune.data import load_dataset

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


def _budget(cfg: SearchConfig):
    from nasprune.search import Budget

    if cfg.target_macs is None and cfg.target_params is None and cfg.target_latency_ms is None:
        return Budget(macs=0.5)
    return Budget(macs=cfg.target_macs, params=cfg.target_params,
                  latency_ms=cfg.target_latency_ms)


def _proxy_candidates(result, n: int) -> list[dict[str, float]]:
    """``n`` trials spread evenly over the score ranking (the proxy check needs range)."""
    ranked = sorted(result.trials, key=lambda c: c.score)
    idx = np.unique(np.linspace(0, len(ranked) - 1, min(n, len(ranked))).round().astype(int))
    return [ranked[i].ratios for i in idx]


def run_search_command(cfg: SearchConfig, progress: bool = True) -> dict:
    """Run the search ``cfg`` describes; returns the JSON document it wrote."""
    import torch

    from nasprune.checkpoint import write_atomic
    from nasprune.config import save_resolved
    from nasprune.search import Evaluator, check_proxy, search

    out = Path(cfg.out)
    if out.suffix != ".json":
        raise NaspruneError(f"--out must name a .json file, got {cfg.out}")
    if out.exists() and out.is_dir():
        raise NaspruneError(f"--out {cfg.out} is a directory")
    budget = _budget(cfg)
    model, data, _ = _model_and_data(cfg)
    example = torch.randn(1, *data.input_shape)
    evaluator = Evaluator(model, data, bn_batches=cfg.bn_batches, val_size=cfg.val_size,
                          finetune_steps=cfg.finetune_steps, device=cfg.device,
                          example_inputs=example, round_to=cfg.round_to, seed=cfg.seed)
    result = search(model, example, data, strategy=cfg.strategy, target=budget,
                    trials=cfg.trials, storage=cfg.storage, study=cfg.study, seed=cfg.seed,
                    objective=cfg.objective, evaluator=evaluator, min_keep=cfg.min_keep,
                    max_keep=cfg.max_keep, round_to=cfg.round_to, device=cfg.device,
                    progress=progress, **cfg.strategy_options)
    doc = result.to_dict()
    if cfg.check_proxy:
        cands = _proxy_candidates(result, cfg.check_proxy)
        if len(cands) < 2:
            raise NaspruneError("--check-proxy needs at least 2 completed trials")
        doc["proxy_check"] = check_proxy(evaluator, cands, cfg.check_proxy_epochs)
    write_atomic(out, json.dumps(doc, indent=1) + "\n")
    save_resolved(cfg, out.with_suffix(".config.yaml"))
    best = result.best
    print(f"searched {cfg.strategy}: {len(result.trials)} trials in study "
          f"'{result.study.study_name}' ({result.seconds:.1f} s, {result.failed} failed)")
    latency = ("" if best.latency_ms is None
               else f", predicted latency {best.latency_ms:.3g} ms (batch 1)")
    print(f"best score {best.score:.4f} (trial {best.number}): MACs {best.macs:,} "
          f"({best.macs_fraction:.1%}), params {best.params:,} ({best.params_fraction:.1%})"
          f"{latency}")
    if "proxy_check" in doc:
        pc = doc["proxy_check"]
        print(f"proxy check: Spearman {pc['spearman']:.3f} between proxy and "
              f"{cfg.check_proxy_epochs:g}-epoch fine-tuned accuracy on {pc['n']} candidates")
    src = cfg.checkpoint or "DIR"  # a --model search has no checkpoint to name
    dest = f"{src}-pruned" if cfg.checkpoint else "DIR"
    print(f"wrote {out} (prune ratios per group); next: nasprune prune --checkpoint {src} "
          f"--ratios {out} --out {dest}")
    return doc
