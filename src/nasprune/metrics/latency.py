"""Measured inference latency: warm-up, then median / p90 / mean over repeated runs.

The median and the 90th percentile rather than the mean because a shared machine adds
occasional long outliers; the median is what a budget should be held to and p90 says how
bad the tail is.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from nasprune.device import resolve_device  # re-exported by nasprune.metrics
from nasprune.errors import NaspruneError
from nasprune.metrics.mode import eval_mode


def _model_on(model: nn.Module, dev: torch.device) -> nn.Module:
    """The model itself when already on ``dev``, else a copy there (the caller's is untouched)."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device == dev or (t.device.type == dev.type and dev.index is None)
           for t in tensors):
        return model
    return copy.deepcopy(model).to(dev)


def _times_ms(model: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> list[float]:
    if x.device.type == "cuda":
        for _ in range(warmup):
            model(x)
        torch.cuda.synchronize(x.device)
        pairs = []
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize(x.device)
        return [s.elapsed_time(e) for s, e in pairs]
    for _ in range(warmup):
        model(x)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 64),
    device: str | torch.device | None = "cpu",
    warmup: int = 5,
    repeats: int = 20,
    num_threads: int | None = None,
) -> dict[int, dict]:
    """Forward-pass latency per batch size, in eval mode under ``torch.inference_mode``.

    ``input_shape`` is one sample's shape, e.g. ``(C, H, W)``. Returns ``{batch: {"median_ms",
    "p90_ms", "mean_ms", "min_ms", "std_ms", "images_per_s", "repeats"}}`` where
    ``images_per_s`` is ``batch / median``. On CUDA each run is timed with CUDA events and the
    device is synchronised after warm-up and after timing, so queued kernels are not missed.
    ``device`` None means CUDA when available, else CPU (:func:`nasprune.device.resolve_device`).
    A model on another device is copied there; the caller's model and its train/eval flags
    are left as they were. ``num_threads`` pins torch's CPU intra-op threads for the
    measurement (restored afterwards): 1 gives stable numbers on a shared machine and is what
    many CPU deployments run with.
    """
    if warmup < 0 or repeats < 1:
        raise NaspruneError(f"need warmup ≥ 0 and repeats ≥ 1, got {warmup} and {repeats}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise NaspruneError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    dev = resolve_device(device)
    net = _model_on(model, dev)
    floats = [p.dtype for p in net.parameters() if p.is_floating_point()]
    dtype = floats[0] if floats else torch.float32
    if num_threads is not None and num_threads < 1:
        raise NaspruneError(f"num_threads must be at least 1, got {num_threads}")
    results: dict[int, dict] = {}
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        with eval_mode(net), torch.inference_mode():
            for b in batch_sizes:
                x = torch.randn(int(b), *input_shape, device=dev, dtype=dtype)
                ms = np.asarray(_times_ms(net, x, warmup, repeats))
                median = float(np.median(ms))
                results[int(b)] = {
                    "median_ms": median,
                    "p90_ms": float(np.percentile(ms, 90)),
                    "mean_ms": float(ms.mean()),
                    "min_ms": float(ms.min()),
                    "std_ms": float(ms.std()),
                    "images_per_s": int(b) / (median / 1e3) if median > 0 else float("inf"),
                    "repeats": int(repeats),
                }
    finally:
        torch.set_num_threads(threads)
    return results
