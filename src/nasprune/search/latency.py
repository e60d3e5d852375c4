"""Predicted latency of a pruned network, from a per-layer table measured once per device.

Measuring every candidate's latency would dominate a search and be noisy; instead each
counted layer (conv, linear) is timed alone, once, at a grid of widths (both its prunable
sides scaled by ``g`` = 0.1 … 1.0), on the target device. A candidate's latency is then
``a + b · Σ_layers T_layer(g_layer)``, where ``g_layer`` is the geometric mean of how much of
its input and output width survives (MACs scale with their product) and ``T`` is the
measured curve, linearly interpolated and made non-decreasing (isotonic), so the prediction
is monotone in every keep ratio — which the budget projection's bisection needs. ``a`` and
``b`` are fitted to whole-network measurements (unpruned and uniformly pruned to 75, 50 and
30 % of the channels): they absorb what the layer table leaves out (BatchNorm, activations,
pooling, Python dispatch between layers). In a blocks space a dropped block's layers cost
nothing, and ``b`` scales away the overhead around them in proportion.

All timings are the fastest of repeated runs (``min_ms``), the estimator least disturbed by
other processes: the prediction is the latency of an otherwise idle device (on an idle
machine the median is a few per cent above it).

Timings run on a :class:`~nasprune.metrics.runtime.Runtime` — torch eager (or compiled) or
ONNX Runtime — since a network's speed depends on the kernels that run it: the same pruned
ResNet-20 is 1.5x faster than the unpruned one in eager PyTorch and slower on ONNX Runtime.
Layers are timed at widths that are multiples of the space's ``round_to`` (the widths the
search will produce; per side, when each group has its own step), because runtimes'
kernels are much faster at some widths than others.

Tables are cached as JSON under ``~/.cache/nasprune/latency/<fingerprint>.json`` (or
``$NASPRUNE_CACHE_DIR/latency``), the fingerprint covering the layer geometry, the runtime
(name, version, provider, device, threads, batch size), the width step, the grid and the
torch version; writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nasprune._io import replace_file
from nasprune.device import resolve_device
from nasprune.errors import NaspruneError
from nasprune.metrics.runtime import Runtime, compare_latency, fastest_ms
from nasprune.pruning.graph import step_of

GRID = tuple(round(0.1 * i, 1) for i in range(1, 11))
FORMAT = 2


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("NASPRUNE_CACHE_DIR"):
        return Path(os.environ["NASPRUNE_CACHE_DIR"]) / "latency"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nasprune" / "latency"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}:{platform.processor() or 'unknown'}:{os.cpu_count()}"


def default_runtime(device: str | torch.device | None = None, threads: int | None = None,
                    batch_size: int = 1) -> Runtime:
    """Torch eager on ``device`` (None: CUDA when available) with torch's thread count."""
    return Runtime("torch", threads=threads or torch.get_num_threads(),
                   batch_size=batch_size, device=resolve_device(device).type)


class LatencyModel:
    """Predicts milliseconds from kept channels per group (see the module docstring)."""

    def __init__(self, space: Any, table: np.ndarray, grid: tuple[float, ...], a: float,
                 b: float, meta: dict | None = None) -> None:
        cm = space.cost_model
        self.space = space
        self.grid = np.asarray(grid, dtype=float)
        # Isotonic: a wider layer never predicts faster (noise must not break bisection).
        self.table = np.maximum.accumulate(np.asarray(table, dtype=float), axis=1)
        self.a, self.b = float(a), float(b)
        self.meta = meta or {}
        self._out_prunable = cm._out_g >= 0
        self._in_prunable = (cm._in_mat.sum(1) > 0) | cm._dw
        self._out_full = np.array([cm.layers[n].out_dim for n in cm.layer_names], dtype=float)
        self._in_full = np.array([cm.layers[n].in_dim for n in cm.layer_names], dtype=float)

    # ------------------------------------------------------------------------------------
    def layer_factors(self, kept: np.ndarray) -> np.ndarray:
        """Each layer's width factor g: geometric mean over its prunable sides."""
        out, inn = self.space.cost_model.widths(np.asarray(kept, dtype=np.int64))
        r_out = np.where(self._out_prunable, out / self._out_full, 1.0)
        r_in = np.where(self._in_prunable & ~self.space.cost_model._dw, inn / self._in_full, 1.0)
        both = self._out_prunable & self._in_prunable & ~self.space.cost_model._dw
        g = np.where(both, np.sqrt(r_out * r_in), r_out * r_in)
        return np.clip(g, self.grid[0], self.grid[-1])

    def layer_ms(self, kept: np.ndarray) -> np.ndarray:
        g = self.layer_factors(kept)
        pos = np.interp(g, self.grid, np.arange(len(self.grid)))
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, len(self.grid) - 1)
        w = pos - lo
        rows = np.arange(len(g))
        return self.table[rows, lo] * (1 - w) + self.table[rows, hi] * w

    def predict(self, kept: np.ndarray) -> float:
        """Predicted latency in ms of the network with ``kept`` channels per group (in a
        blocks space, then 1/0 per block: a dropped block's layers cost nothing)."""
        kept = np.asarray(kept, dtype=float)
        n = len(self.space.groups)
        ms = self.layer_ms(kept[:n])
        if len(kept) > n:
            ms = ms * self.space.block_costs.layers_alive(kept[n:] < 0.5)
        return self.a + self.b * float(ms.sum())

    @property
    def base_ms(self) -> float:
        """Predicted latency of the unpruned network (what a speed-up is relative to)."""
        return self.predict(self.space.channels)

    # ------------------------------------------------------------------------------------
    @classmethod
    def for_space(cls, space: Any, model: nn.Module, example_inputs: Any,
                  device: str | torch.device | None = None,
                  cache_dir: str | os.PathLike | None = None, batch_size: int = 1,
                  num_threads: int | None = None, warmup: int = 3, repeats: int = 15,
                  refresh: bool = False, runtime: Runtime | None = None) -> LatencyModel:
        """Load the cached table for this model/runtime, or measure and cache it.

        ``runtime`` says where to time; without it, torch eager on ``device`` (None: CUDA
        when available) with ``num_threads`` (None: torch's) and ``batch_size``.
        """
        if runtime is None:
            runtime = default_runtime(device, num_threads, batch_size)
        cm = space.cost_model
        unsupported = [n for n in cm.layer_names if cm.layers[n].kind not in ("conv", "linear")]
        if unsupported:
            raise NaspruneError(f"latency budgets support conv and linear layers only; "
                                f"'{unsupported[0]}' is {cm.layers[unsupported[0]].kind}")
        dev_name = _device_name(torch.device(runtime.device))
        step = space.round_to or 1
        if isinstance(step, Mapping):  # per-group steps, in group order
            step = [[g.name, step_of(step, g.name) or 1] for g in space.groups]
        key = {
            "format": FORMAT, "torch": torch.__version__, "device": dev_name,
            "runtime": runtime.key(), "step": step, "grid": list(GRID),
            "layers": [[n, g.kind, g.in_dim, g.out_dim, g.groups, g.kernel, g.stride,
                        list(g.in_shape)] for n, g in cm.layers.items()],
            "groups": [[g.name, g.channels] for g in space.groups],
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        path = cache_root(cache_dir) / f"{digest}.json"
        if path.exists() and not refresh:
            try:
                data = json.loads(path.read_text())
                if data.get("key") == key:
                    return cls(space, np.array(data["table"]), tuple(data["grid"]),
                               data["a"], data["b"], {**data["meta"], "cache": str(path)})
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable cache: measure again and overwrite it
        table = measure_table(model, space, runtime, warmup, repeats)
        a, b, meta = calibrate(model, example_inputs, space, table, runtime, warmup, repeats)
        meta["device"] = dev_name
        replace_file(path, json.dumps({"key": key, "table": table.tolist(), "grid": list(GRID),
                                       "a": a, "b": b, "meta": meta}))
        return cls(space, table, GRID, a, b, {**meta, "cache": str(path), "measured": True})


def _standalone(module: nn.Module, geo: Any, g: float, out_prunable: bool,
                in_prunable: bool, step: int | tuple[int, int] = 1
                ) -> tuple[nn.Module, tuple[int, ...]]:
    """A fresh layer like ``module`` with its prunable sides scaled by ``g`` (to multiples
    of ``step``, or of ``(out step, in step)``, as the search's rounding will), and its
    input."""
    out_step, in_step = step if isinstance(step, tuple) else (step, step)

    def scaled(n: int, multiple: int = 1, step: int = 1) -> int:
        multiple = math.lcm(multiple, step) if n >= math.lcm(multiple, step) else multiple
        return min(n, max(multiple, int(round(n * g / multiple)) * multiple))

    if geo.kind == "linear":
        in_f = scaled(geo.in_dim, 1, in_step) if in_prunable else geo.in_dim
        out_f = scaled(geo.out_dim, 1, out_step) if out_prunable else geo.out_dim
        shape = (*geo.in_shape[:-1], in_f)
        return nn.Linear(in_f, out_f, bias=geo.bias), shape
    if geo.depthwise:
        c = scaled(geo.in_dim, 1, out_step) if out_prunable else geo.in_dim
        in_c, out_c, groups = c, c, c
    else:
        groups = geo.groups
        in_c = scaled(geo.in_dim, groups, in_step) if in_prunable else geo.in_dim
        out_c = scaled(geo.out_dim, groups, out_step) if out_prunable else geo.out_dim
    conv = type(module)(in_c, out_c, module.kernel_size, stride=module.stride,
                        padding=module.padding, dilation=module.dilation, groups=groups,
                        bias=geo.bias, padding_mode=module.padding_mode)
    return conv, (in_c, *geo.in_shape[1:])


def layer_steps(space: Any) -> list[tuple[int, int]]:
    """Each counted layer's (output, input) width step: its output group's step, and the
    gcd of the steps of the groups its input concatenates (a sum of their multiples)."""
    cm = space.cost_model
    step = np.array([step_of(space.round_to, g.name) or 1 for g in space.groups])
    out = [int(step[o]) if o >= 0 else 1 for o in cm._out_g]
    inn = [math.gcd(*step[row > 0].tolist()) if (row > 0).any() else 1 for row in cm._in_mat]
    return list(zip(out, inn, strict=True))


def measure_table(model: nn.Module, space: Any, runtime: Runtime, warmup: int,
                  repeats: int) -> np.ndarray:
    """Fastest ms of every counted layer alone at every grid width: ``(layers, len(GRID))``."""
    cm = space.cost_model
    named = dict(model.named_modules())
    out_p = cm._out_g >= 0
    in_p = (cm._in_mat.sum(1) > 0) | cm._dw
    steps = layer_steps(space)
    table = np.zeros((len(cm.layer_names), len(GRID)))
    for li, name in enumerate(cm.layer_names):
        geo = cm.layers[name]
        for gi, g in enumerate(GRID):
            if not out_p[li] and not in_p[li] and gi < len(GRID) - 1:
                continue  # fixed-width layer: only its full width matters
            layer, shape = _standalone(named[name], geo, g, bool(out_p[li]), bool(in_p[li]),
                                       steps[li])
            table[li, gi] = fastest_ms(layer, shape, runtime, warmup, repeats)
        if not out_p[li] and not in_p[li]:
            table[li, :] = table[li, -1]
    return table


def calibrate(model: nn.Module, example_inputs: Any, space: Any, table: np.ndarray,
              runtime: Runtime, warmup: int, repeats: int,
              points: tuple[float, ...] = (1.0, 0.75, 0.5, 0.3),
              rounds: int = 3) -> tuple[float, float, dict]:
    """Least-squares fit of ``a + b·Σ`` to whole networks pruned uniformly to ``points``.

    The networks are timed in ``rounds`` interleaved rounds and each one's fastest run
    kept, so a burst of load on a shared machine does not skew one point (``a`` ≥ 0, else
    the fit goes through the origin).
    """
    from nasprune.pruning import prune

    if not isinstance(example_inputs, torch.Tensor):
        raise NaspruneError("latency budgets need a single example input tensor")
    shape = tuple(example_inputs.shape[1:])
    probe = LatencyModel(space, table, GRID, 0.0, 1.0)
    nets, sums = [], []
    for p in points:
        keep = space.nearest_keep(np.full(len(space.groups), p))  # widths only, all blocks
        sums.append(probe.predict(space.kept(keep)))  # a=0, b=1: the layers' sum
        nets.append(model if p >= 1.0 else prune(
            model, example_inputs, space.prune_ratios(keep), round_to=space.round_to,
            min_channels=space.min_channels))
    found = compare_latency(nets, shape, runtime, rounds=rounds, repeats=max(repeats, 20),
                            warmup=max(warmup, 5))
    t = np.array([f["min_ms"] for f in found])
    x = np.asarray(sums)
    b, a = np.polyfit(x, t, 1) if np.ptp(x) > 1e-12 else (0.0, 0.0)
    if not (b > 0 and a >= 0):
        b, a = float(x @ t / max(x @ x, 1e-18)), 0.0
    meta = {"points": list(points), "measured_ms": t.tolist(), "layers_ms": x.tolist(),
            "runtime": runtime.key(), "runtime_name": runtime.describe(),
            "threads": runtime.threads,
            "batch": runtime.batch_size}
    return float(a), float(b), meta
