"""``nasprune train``: one training run from flags or a config file.

data → model → fit → test metrics → saved results. This is also the first step of ``nasprune
demo``. Outputs go to one directory: the checkpoint (``spec.json`` + ``weights.safetensors``,
with the metrics in its meta), ``config.yaml`` (the resolved config) and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nasprune.cli._flags import (
    NO_DEFAULTS,
    add_config,
    add_data,
    add_fit_flags,
    add_out,
    add_quiet,
    config_path,
    set_threads,
)
from nasprune.errors import NaspruneError

if TYPE_CHECKING:  # torch and the config module load only when a command runs
    from torch import nn

    from nasprune.config import TrainConfig
    from nasprune.train.loop import FitResult

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a data set, evaluate it on the test "
                       "split and save a checkpoint")
    # Flags default to None = "not given", so a --config file's values are kept.
    p.add_argument("--model", default=None, metavar="NAME", help="model name (default digitscnn)")
    add_data(p, "data set name (default digits)", download=True)
    add_fit_flags(p, NO_DEFAULTS, lr_help="default: the optimizer's own")
    p.add_argument("--bn-l1", type=float, default=None,
                   help="network slimming: L1 penalty on BatchNorm scale factors")
    add_config(p, "train", bundled=" or a bundled config name such as 'demo'")
    add_out(p, "DIR", "output directory (default runs/<model>-<data>)")
    add_quiet(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from nasprune.config import TrainConfig, load_config

    keys = ("model", "data", "data_dir", "epochs", "batch_size", "optimizer", "lr",
            "momentum", "weight_decay", "schedule", "label_smoothing", "bn_l1", "augment",
            "seed", "device", "out")
    cfg = load_config(TrainConfig, config_path(args.config),
                      {k: getattr(args, k) for k in keys})
    set_threads(args.threads)
    out = default_out(cfg)
    cfg = dataclasses.replace(cfg, out=str(out))  # the resolved config names where it went
    run = train_from_config(cfg, progress=not args.quiet, download=args.download)
    from nasprune.train.distributed import is_main

    if not is_main():  # under torchrun only rank 0 saves and reports
        return 0
    save_run(run, out)
    t = run.test
    print(f"trained {cfg.model} on {cfg.data}: {len(run.fit.history)} epochs in "
          f"{run.fit.train_seconds:.1f} s ({run.fit.images_per_second:,.0f} images/s)")
    print(f"test top-1 {t['top1']:.2%}  top-5 {t['top5']:.2%}  F1 {t['f1']:.3f}  "
          f"(n={t['n']})")
    print(f"saved checkpoint, config.yaml and results.json in {out}")
    return 0


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
        from nasprune.config import to_dict

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
    """``--out``, else ``runs/<model>-<data>``."""
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
                      model: nn.Module | None = None, data: object = None) -> TrainRun:
    """Train ``cfg.model`` on ``cfg.data`` and evaluate it on the test split."""
    from nasprune.metrics import evaluate
    from nasprune.train.loop import fit

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
    from nasprune.config import save_resolved

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
