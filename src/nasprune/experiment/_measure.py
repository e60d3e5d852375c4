"""Measuring a model the same way for every method: test metrics, cost, latency, widths.

Latency is timed in interleaved rounds with the unpruned model (:func:`latency`), so both
run under the same machine load; :func:`measure` refuses a non-finite result.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.experiment.config import ExperimentConfig


def latency(models: list[nn.Module], input_shape: tuple[int, ...] | None,
            cfg: ExperimentConfig, device: torch.device) -> list[dict | None]:
    """Latency of each model at batch 1 and N on inputs of one sample's ``input_shape``,
    measured in interleaved rounds (None for each when there is no shape to time).

    Every round times every model once (``measure_latency``: median of ``repeats`` runs);
    the result per batch size is the median of the round medians. Interleaving puts the
    models under the same machine load, which on shared cores moves by seconds. With
    ``latency.runtime: onnxruntime`` the models run as ONNX Runtime sessions instead.
    """
    import statistics

    from nasprune.metrics import measure_latency

    if input_shape is None:
        return [None for _ in models]
    lat = cfg.latency
    if lat.runtime != "torch":
        return _runtime_latency(models, input_shape, cfg)
    rounds: list[list[dict]] = [[] for _ in models]
    for _ in range(lat.rounds):
        for i, m in enumerate(models):
            rounds[i].append(measure_latency(m, input_shape, batch_sizes=(1, lat.batch),
                                             device=device, warmup=lat.warmup,
                                             repeats=lat.repeats, num_threads=lat.threads))
    out = []
    for per_model in rounds:
        table = {}
        for b in per_model[0]:
            medians = [r[b]["median_ms"] for r in per_model]
            table[str(b)] = {"median_ms": statistics.median(medians), "min_ms": min(
                r[b]["min_ms"] for r in per_model), "round_medians_ms": medians,
                "repeats": lat.repeats}
        out.append(table)
    return out


def _runtime_latency(models: list[nn.Module], input_shape: tuple[int, ...],
                     cfg: ExperimentConfig) -> list[dict]:
    """:func:`latency` on another runtime (CPU), in the same interleaved rounds."""
    import numpy as np

    from nasprune.metrics.runtime import Runtime, compare_latency

    lat = cfg.latency
    out: list[dict] = [{} for _ in models]
    for b in (1, lat.batch):
        rt = Runtime(lat.runtime, threads=lat.threads or 1, batch_size=b)
        found = compare_latency(models, input_shape, rt, lat.rounds, lat.repeats,
                                lat.warmup, per_round=True)
        for table, f in zip(out, found, strict=True):
            table[str(b)] = {"median_ms": float(np.median(f["round_medians_ms"])),
                             "min_ms": f["min_ms"], "round_medians_ms": f["round_medians_ms"],
                             "repeats": lat.repeats, "runtime": rt.describe()}
    return out


def measure(model: nn.Module, data, example, device: torch.device) -> dict:
    """Test-split quality, cost and size, finite or failed: ``nasprune.metrics.summarize``
    on a built-in data set, the task's named score (:func:`measure_task`) on a task."""
    from nasprune.metrics import summarize
    from nasprune.task import is_dataset

    if not is_dataset(data):
        from nasprune.experiment._task import measure_task

        return measure_task(model, data, example, device)
    m = summarize(model, data, split="test", device=device)
    m.pop("latency", None)
    bad = [k for k in ("top1", "loss") if not math.isfinite(float(m[k]))]
    if bad:
        raise NaspruneError(f"the model's test {bad[0]} is {m[bad[0]]} (not finite)")
    return m


def kept_channels_of(model: nn.Module, groups: list) -> dict[str, int]:
    """Channels each of the unpruned model's groups keeps in ``model`` (0: layer removed).

    Read from the group's first output layer (conv ``out_channels``, linear
    ``out_features``), or its first input layer when it has none.
    """
    named = dict(model.named_modules())
    out: dict[str, int] = {}
    for g in groups:
        n = 0
        for name in g.out_layers:
            m = named.get(name)
            if m is not None:
                n = getattr(m, "out_channels", getattr(m, "out_features", g.channels))
                break
        else:
            for name in g.in_layers:
                m = named.get(name)
                if m is not None:
                    n = getattr(m, "in_channels", getattr(m, "in_features", g.channels))
                    break
        out[g.name] = int(n)
    return out


def finite_weights(model: nn.Module) -> None:
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise NaspruneError(f"the compressed model has non-finite values in '{name}'")


__all__ = ["finite_weights", "kept_channels_of", "latency", "measure"]
