"""Every metric of one model on one data split, as a JSON-ready dict and a readable table.

This is what ``nasprune evaluate`` prints and writes; experiments and reports reuse it so a
model is always described by the same numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nasprune._io import replace_file
from nasprune.errors import NaspruneError
from nasprune.metrics.cost import count_macs, count_params, sparse_macs
from nasprune.metrics.evaluate import evaluate, model_device
from nasprune.metrics.latency import measure_latency
from nasprune.metrics.size import model_size_mb, sparse_size_mb, weight_sparsity

if TYPE_CHECKING:  # a type only: metrics must not depend on data (data builds scored tasks)
    from nasprune.data.base import Dataset


def summarize(
    model: nn.Module,
    data: Dataset,
    split: str = "test",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    latency: bool = False,
    latency_batch_sizes: tuple[int, ...] = (1, 64),
    latency_threads: int | None = None,
) -> dict[str, Any]:
    """Quality (``evaluate``), cost (MACs, FLOPs = 2 × MACs, params), size and optionally
    latency of ``model`` on ``split`` of ``data``; cost is counted for one input of the data
    set's shape. Keys of :func:`~nasprune.metrics.evaluate.evaluate` appear unchanged.
    """
    example = data.example_input(1).to(model_device(model))
    try:
        macs = count_macs(model, example)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NaspruneError(
            f"the model does not accept '{data.name}' inputs of shape "
            f"{tuple(data.input_shape)}: {first}") from exc
    out: dict[str, Any] = {
        "data": data.name,
        "split": split,
        "input_shape": list(data.input_shape),
    }
    out.update(evaluate(model, data, split=split, batch_size=batch_size, device=device))
    out.update({
        "macs": macs,
        "flops": 2 * macs,
        "sparse_macs": sparse_macs(model, example),
        "params": count_params(model),
        "size_mb": model_size_mb(model),
        "sparse_size_mb": sparse_size_mb(model),
        "weight_sparsity": weight_sparsity(model),
        "latency": None,
    })
    if latency:
        dev = device if device is not None else model_device(model)
        table = measure_latency(model, data.input_shape, batch_sizes=latency_batch_sizes,
                                device=dev, num_threads=latency_threads)
        out["latency"] = {
            "device": str(torch.device(dev)),
            "threads": latency_threads or torch.get_num_threads(),
            "batches": {str(b): v for b, v in table.items()},
        }
    return out


def _millions(n: int) -> str:
    return f"{n / 1e6:,.3f} M"


def format_summary(s: dict[str, Any]) -> str:
    """A fixed-width two-column table of :func:`summarize`'s result."""
    rows = [
        ("top-1 accuracy", f"{100 * s['top1']:.2f} %"),
        ("top-5 accuracy", f"{100 * s['top5']:.2f} %"),
        ("precision (macro)", f"{100 * s['precision']:.2f} %"),
        ("recall (macro)", f"{100 * s['recall']:.2f} %"),
        ("F1 (macro)", f"{100 * s['f1']:.2f} %"),
        ("loss (cross-entropy)", f"{s['loss']:.4f}"),
        ("MACs", _millions(s["macs"])),
        ("FLOPs (2 x MACs)", _millions(s["flops"])),
        ("MACs skipping zeros", _millions(s["sparse_macs"])),
        ("parameters", f"{s['params']:,}"),
        ("size fp32 dense", f"{s['size_mb']:.4f} MB"),
        ("size CSR sparse", f"{s['sparse_size_mb']:.4f} MB"),
        ("weight sparsity", f"{100 * s['weight_sparsity']:.2f} %"),
    ]
    lat = s.get("latency")
    if lat:
        for b, v in lat["batches"].items():
            rows.append((f"latency batch {b} ({lat['device']})",
                         f"median {v['median_ms']:.3f} ms, p90 {v['p90_ms']:.3f} ms"))
    head = f"{s['data']} / {s['split']}: {s['n']:,} samples, input {tuple(s['input_shape'])}"
    width = max(len(k) for k, _ in rows)
    return "\n".join([head, *(f"  {k:<{width}}  {v}" for k, v in rows)])


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as JSON atomically: a temp file in the same directory, then rename."""
    return replace_file(path, json.dumps(obj, indent=2) + "\n")
