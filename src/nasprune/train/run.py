"""One training run from a config: data → model → fit → test metrics → saved results.

This is what ``nasprune train`` and the first step of ``nasprune demo`` do. Outputs go to
one directory: the checkpoint (``spec.json`` + ``weights.safetensors``, with the metrics in
its meta), ``config.yaml`` (the resolved config) and ``results.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from nasprune.config import TrainConfig, save_resolved, to_dict
from nasprune.errors import NaspruneError
from nasprune.train.loop import FitResult, fit

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"


@dataclass
class TrainRun:
    """A finished run: the trained model, its data, the fit record and the test metrics."""

    config: TrainConfig
    model: nn.Module
    data: object
    fit: FitResult
    test: dict

    def summary(self) -> dict:
        """Plain-data results (the content of ``results.json``)."""
        return {
            "model": self.config.model,
            "data": self.config.data,
            "test": self.test,
            "train_seconds": self.fit.train_seconds,
            "images_per_second": self.fit.images_per_second,
            "best_val_acc": self.fit.best_val_acc,
            "history": self.fit.history,
            "config": to_dict(self.config),
        }


def default_out(cfg: TrainConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path("runs") / f"{cfg.model}-{cfg.data}"


def prepare(cfg: TrainConfig, download: bool = False) -> tuple[nn.Module, object]:
    """Load the data set and build a fresh model sized for it (seeded)."""
    from nasprune.data import load_dataset
    from nasprune.models import create_model
    from nasprune.train.seed import seed_everything

    if cfg.data_dir is not None and not download and not Path(cfg.data_dir).exists():
        raise NaspruneError(f"data directory '{cfg.data_dir}' does not exist")
    extra = {"download": True} if download else {}
    data = load_dataset(cfg.data, root=cfg.data_dir, seed=cfg.seed, **extra)
    seed_everything(cfg.seed)
    model = create_model(cfg.model, num_classes=data.num_classes,
                         in_channels=data.input_shape[0])
    return model, data


def train_from_config(cfg: TrainConfig, progress: bool = True, download: bool = False,
                      model: nn.Module | None = None, data=None) -> TrainRun:
    """Train ``cfg.model`` on ``cfg.data`` and evaluate it on the test split."""
    from nasprune.metrics import evaluate

    if model is None or data is None:
        model, data = prepare(cfg, download=download)
    result = fit(model, data, epochs=cfg.epochs, optimizer=cfg.optimizer, lr=cfg.lr,
                 momentum=cfg.momentum, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                 label_smoothing=cfg.label_smoothing, batch_size=cfg.batch_size, seed=cfg.seed,
                 device=cfg.device, bn_l1=cfg.bn_l1, augment=cfg.augment, progress=progress)
    test = evaluate(model, data, split="test")
    return TrainRun(cfg, model, data, result, test)


def save_run(run: TrainRun, out: str | os.PathLike) -> Path:
    """Checkpoint + resolved config + results.json into ``out`` (each file atomic)."""
    from nasprune.checkpoint import save, write_atomic

    out = Path(out)
    summary = run.summary()
    meta = {"data": run.config.data, "seed": run.config.seed,
            "num_classes": run.data.num_classes, "input_shape": list(run.data.input_shape),
            "metrics": {"test": run.test}, "train_seconds": run.fit.train_seconds,
            "images_per_second": run.fit.images_per_second, "config": summary["config"]}
    save(run.model, out, meta=meta)
    save_resolved(run.config, out / CONFIG_FILE)
    write_atomic(out / RESULTS_FILE, json.dumps(summary, indent=1) + "\n")
    return out
