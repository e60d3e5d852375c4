"""The unpruned model every method starts from: trained (or loaded) once, cached, measured.

It lives in ``<run>/baseline/`` (the model saved with ``nasprune.save`` and
``baseline.json``: its fingerprint, source, training time and history, test metrics and
latency) and is reused by a re-run with the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.experiment._fingerprint import baseline_fingerprint
from nasprune.experiment._measure import latency, measure
from nasprune.experiment._results import MODEL_DIR, log, read_json, write_json
from nasprune.experiment._task import latency_shape, task_model
from nasprune.experiment.config import ExperimentConfig

if TYPE_CHECKING:
    from nasprune.task_loader import LoadedTask


def train_seconds_of(meta: Any) -> float:
    """Training time a checkpoint recorded about itself, if any (0 when unknown)."""
    if not isinstance(meta, dict):
        return 0.0
    for key in ("train_seconds", "seconds"):
        if isinstance(meta.get(key), (int, float)):
            return float(meta[key])
    for sub in ("fit", "train", "result"):
        if isinstance(meta.get(sub), dict):
            v = train_seconds_of(meta[sub])
            if v:
                return v
    return 0.0


def _from_checkpoint(cfg: ExperimentConfig, device: torch.device,
                     progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The config's saved model, and what it records about its training."""
    from nasprune.checkpoint import load, read_spec

    ckpt = Path(cfg.checkpoint)
    if not ckpt.is_dir():
        raise NaspruneError(f"checkpoint directory not found: {ckpt}")
    log(progress, f"baseline: loading {ckpt}")
    model = load(ckpt).to(device)
    return model, {"source": {"checkpoint": str(ckpt)}, "history": [],
                   "train_seconds": train_seconds_of((read_spec(ckpt) or {}).get("meta"))}


def _trained(cfg: ExperimentConfig, data, device: torch.device,
             progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The config's registered model, trained from scratch with the first seed."""
    from nasprune.models import create_model
    from nasprune.train import fit, seed_everything

    b = cfg.baseline
    kwargs = {"num_classes": data.num_classes, "in_channels": data.input_shape[0],
              **cfg.model_kwargs}
    seed_everything(cfg.seeds[0])  # the initial weights too, not only the training
    model = create_model(cfg.model, **kwargs)
    log(progress, f"baseline: training {cfg.model} on {cfg.data} for {b.epochs} epochs")
    res = fit(model, data, epochs=b.epochs, optimizer=b.optimizer, lr=b.lr,
              weight_decay=b.weight_decay, schedule=b.schedule, batch_size=b.batch_size,
              augment=b.augment, seed=cfg.seeds[0], device=device, progress=progress)
    return model, {"source": {"model": cfg.model, "model_kwargs": kwargs},
                   "train_seconds": res.train_seconds, "history": res.history}


def baseline(cfg: ExperimentConfig, data, loaded: LoadedTask | None, example: Any,
             run: Path, device: torch.device, resume: bool,
             progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The trained unpruned model (cached in ``<run>/baseline``) and its measurements.

    ``loaded``: the user's task when the experiment has one (its model is then the
    architecture the cached weights load into); ``example``: one input, for MACs and the
    latency input shape.
    """
    from nasprune.checkpoint import load, save

    folder = run / "baseline"
    fp = baseline_fingerprint(cfg, str(device))
    base = loaded.model if loaded is not None else None
    info = read_json(folder / "baseline.json") if resume else None
    if info and info.get("fingerprint") == fp and (folder / MODEL_DIR / "spec.json").exists():
        log(progress, f"baseline: reusing {folder / MODEL_DIR}")
        return load(folder / MODEL_DIR, base=base).to(device), info

    if loaded is not None:
        model, made = task_model(cfg, loaded, device, progress)
    elif cfg.checkpoint:
        model, made = _from_checkpoint(cfg, device, progress)
    else:
        model, made = _trained(cfg, data, device, progress)
    model.to(device).eval()
    metrics = measure(model, data, example, device)
    (lat,) = latency([model], latency_shape(example), cfg, device)
    info = {"fingerprint": fp, "source": made["source"], "train_seconds": made["train_seconds"],
            "history": made["history"], "metrics": metrics, "latency": lat}
    save(model, folder / MODEL_DIR, meta={"train_seconds": made["train_seconds"],
                                          "metrics": metrics})
    write_json(folder / "baseline.json", info)
    log(progress, f"baseline: test {quality_text(metrics)}, {metrics['macs']:,} MACs")
    return model, info


def quality_text(metrics: dict[str, Any]) -> str:
    """``top-1 97.50%`` on a built-in data set, ``miou3 0.6120`` on a task."""
    if "top1" in metrics:
        return f"top-1 {metrics['top1']:.2%}"
    return f"{metrics['score_name']} {metrics['score']:.4f}"


__all__ = ["baseline", "quality_text", "train_seconds_of"]
