"""What an experiment compares methods on: a built-in data set, or a user's task.

With ``experiment.task`` (``module:factory``, see :mod:`nasprune.task_loader`) the
factory's batches, loss and score replace the built-in data set, and its model (or the
checkpoint loaded into a copy of it) is the unpruned model. Everything else in the runner
asks this module, so the two kinds of data meet in one place: the example input (for
tracing, MACs and the latency input shape), the unpruned model of a task, and the test
measurements of a task (its score, named and directed, instead of top-1).
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.experiment._results import log
from nasprune.task import Task, example_inputs, is_dataset, to_device

if TYPE_CHECKING:
    from nasprune.experiment.config import ExperimentConfig
    from nasprune.task_loader import LoadedTask


def load_data(cfg: ExperimentConfig) -> tuple[Any, LoadedTask | None]:
    """``(data, loaded)``: the task (and how it was loaded) or the built-in data set."""
    if cfg.task is not None:
        from nasprune.task_loader import load_task

        loaded = load_task(cfg.task, cfg.task_args)
        if cfg.checkpoint is None:
            loaded.model_from(None)  # no model and no checkpoint: fail before writing
        return loaded.task, loaded
    from nasprune.data import load_dataset

    return load_dataset(cfg.data, root=cfg.data_dir, seed=cfg.seeds[0],
                        **cfg.data_options), None


def example_input(data: Any, device: torch.device) -> Any:
    """One input on ``device``: the data set's, or the first validation batch's inputs
    (training batches when the task has no validation split), cut to one sample."""
    if is_dataset(data):
        return data.example_input(1).to(device)
    return to_device(example_inputs(data), device)


def latency_shape(example: Any) -> tuple[int, ...] | None:
    """One sample's input shape for timing, or None when the input is not one tensor
    (a dict of keyword arguments): such models are compared without latency."""
    return tuple(example.shape[1:]) if isinstance(example, torch.Tensor) else None


def score_name(task: Task) -> str:
    """How the table names the task's score: the score function's name (``top1``,
    ``miou21``, ``negative_perplexity``), or ``score`` for a lambda."""
    name = getattr(task.score, "__name__", "") or ""
    return name if name.isidentifier() else "score"


def task_model(cfg: ExperimentConfig, loaded: LoadedTask, device: torch.device,
               progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The unpruned model of a task: the checkpoint loaded into the factory's model, or a
    copy of the factory's model trained ``baseline.epochs`` epochs on the task's loss (0:
    used as it is, e.g. when the factory loads trained weights itself)."""
    from nasprune.experiment._baseline import train_seconds_of

    source: dict[str, Any] = loaded.record()
    if cfg.checkpoint:
        from nasprune.checkpoint import read_spec

        log(progress, f"baseline: loading {cfg.checkpoint} into the model of {cfg.task}")
        model = loaded.model_from(cfg.checkpoint).to(device)
        meta = (read_spec(cfg.checkpoint) or {}).get("meta")
        return model, {"source": {**source, "checkpoint": str(cfg.checkpoint)},
                       "history": [], "train_seconds": train_seconds_of(meta)}
    model = copy.deepcopy(loaded.model_from(None)).to(device)
    b = cfg.baseline
    if b.epochs == 0:
        return model, {"source": source, "history": [], "train_seconds": 0.0}
    from nasprune.train import fit, seed_everything

    seed_everything(cfg.seeds[0])
    log(progress, f"baseline: training the model of {cfg.task} for {b.epochs} epochs")
    res = fit(model, loaded.task, epochs=b.epochs, optimizer=b.optimizer, lr=b.lr,
              weight_decay=b.weight_decay, schedule=b.schedule, seed=cfg.seeds[0],
              device=device, progress=progress)
    return model, {"source": source, "train_seconds": res.train_seconds,
                   "history": res.history}


def measure_task(model: nn.Module, task: Task, example: Any, device: torch.device) -> dict:
    """Test-split score (named, with its direction) and mean loss of a task, plus cost and
    size counted on ``example``; a non-finite score is refused."""
    from nasprune.metrics import (
        count_macs,
        count_params,
        evaluate,
        model_size_mb,
        sparse_macs,
        sparse_size_mb,
        weight_sparsity,
    )

    res = evaluate(model, task, split="test", device=device, progress=False)
    if not math.isfinite(res["score"]):
        raise NaspruneError(f"the model's test {score_name(task)} is {res['score']} "
                            "(not finite)")
    macs = count_macs(model, example)
    return {"task": task.name, "split": "test", "score": res["score"],
            "score_name": score_name(task), "maximize": res["maximize"], "loss": res["loss"],
            "n": res["n"], "macs": macs, "flops": 2 * macs,
            "sparse_macs": sparse_macs(model, example), "params": count_params(model),
            "size_mb": model_size_mb(model), "sparse_size_mb": sparse_size_mb(model),
            "weight_sparsity": weight_sparsity(model)}


__all__ = ["example_input", "latency_shape", "load_data", "measure_task", "score_name",
           "task_model"]
