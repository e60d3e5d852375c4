"""Width steps per group, by measurement: each group's layers timed alone at many widths.

One global ``round_to`` (:mod:`.widths`) is a compromise: a runtime's kernels are fast at
different multiples for different layer shapes (a 1x1 conv over 64 channels, a 3x3 conv
over 16, a depthwise conv), and narrow groups cannot take the step wide ones want.
:func:`measured_steps` times, for every group, the layers whose width it sets — each layer
alone on the runtime, the group's side at every width of a window around ``keep`` of its
channels, the other side full — and sums them into a time per width ``t(w)``. The
runtime's staircase shows as widths that cost as much as a wider one: each width's time is
compared with the lower convex hull of ``t`` (the fastest time the window shows for that
many channels). A step's cost is the mean of that ratio over the widths it allows
(multiples of it); the chosen step is the finest within ``margin`` of the cheapest, since a
finer step leaves the search more freedom (steps over half the group's width are not tried:
they would leave it unprunable).

Identical layer shapes (ResNet blocks of one stage) are timed once. Results are cached as
JSON beside the latency tables (``steps-<fingerprint>.json``), the fingerprint covering the
layer geometry, the groups, the runtime, the device, the options and the torch version.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from nasprune._io import replace_file
from nasprune.metrics.runtime import Runtime, fastest_ms
from nasprune.search.widths import STEPS

FORMAT = 1


def lower_hull(w: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The lower convex hull of the points ``(w, t)`` (``w`` increasing), evaluated at ``w``."""
    hull: list[int] = []
    for i in range(len(w)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # Drop b when it lies on or above the segment from a to i.
            if (t[b] - t[a]) * (w[i] - w[a]) >= (t[i] - t[a]) * (w[b] - w[a]):
                hull.pop()
            else:
                break
        hull.append(i)
    return np.interp(w, w[hull], t[hull])


def choose_step(widths: np.ndarray, ms: np.ndarray, steps: list[int],
                margin: float) -> tuple[int, dict[int, float]]:
    """The finest of ``steps`` whose widths cost, on average, within ``margin`` of the best
    step's (times relative to the lower hull); and each step's mean relative time."""
    widths, ms = np.asarray(widths), np.asarray(ms, dtype=float)
    ratio = ms / np.maximum(lower_hull(widths, ms), 1e-12)
    excess = {s: float(ratio[widths % s == 0].mean()) if (widths % s == 0).any() else np.inf
              for s in steps}
    best = min(excess.values())
    return next(s for s in steps if excess[s] <= best * (1.0 + margin)), excess


def _window(channels: int, keep: float, step: int) -> np.ndarray:
    """Widths around ``keep`` of ``channels``: two of the largest steps either side."""
    centre = int(round(channels * keep))
    lo, hi = max(1, centre - 2 * step), min(channels, centre + 2 * step)
    return np.arange(lo, hi + 1)


def _layer(module: nn.Module, geo: Any, in_c: int, out_c: int) -> tuple[nn.Module, tuple]:
    """A fresh layer shaped like ``module`` with ``in_c``/``out_c`` channels, and its input."""
    if geo.kind == "linear":
        return nn.Linear(in_c, out_c, bias=geo.bias), (*geo.in_shape[:-1], in_c)
    groups = in_c if geo.depthwise else geo.groups
    conv = type(module)(in_c, out_c, module.kernel_size, stride=module.stride,
                        padding=module.padding, dilation=module.dilation, groups=groups,
                        bias=geo.bias, padding_mode=module.padding_mode)
    return conv, (in_c, *geo.in_shape[1:])


def layer_ms(module: nn.Module, shape: tuple, runtime: Runtime, rounds: int,
             repeats: int, warmup: int) -> float:
    """Fastest of ``rounds × repeats`` runs of one standalone layer (the estimator load
    disturbs least)."""
    return fastest_ms(module, shape, runtime, warmup, rounds * repeats)


class _Timer:
    """Times each distinct (layer shape, in, out) once, for all groups that share it."""

    def __init__(self, model: nn.Module, cm: Any, runtime: Runtime, rounds: int,
                 repeats: int, warmup: int) -> None:
        self.named, self.cm, self.runtime = dict(model.named_modules()), cm, runtime
        self.opts = (rounds, repeats, warmup)
        self.memo: dict[tuple, float] = {}

    def group_ms(self, gi: int, channels: int, widths: np.ndarray) -> np.ndarray:
        """Summed standalone time of the layers group ``gi`` sets, at each width."""
        cm = self.cm
        sides = [(li, "out", 0) for li in np.flatnonzero(cm._out_g == gi)]
        sides += [(li, "in", int(cm._in_mat[li, gi])) for li in np.flatnonzero(cm._in_mat[:, gi])
                  if not cm._dw[li]]
        total = np.zeros(len(widths))
        for li, side, per in sides:
            name = cm.layer_names[li]
            geo = cm.layers[name]
            if geo.kind not in ("conv", "linear"):
                continue  # attention, transposed convs: not timed here
            for j, w in enumerate(widths):
                in_c = (w if geo.depthwise else geo.in_dim) if side == "out" else \
                    geo.in_dim - per * (channels - int(w))
                out_c = int(w) if side == "out" else geo.out_dim
                total[j] += self._ms(name, geo, in_c, out_c)
        return total

    def _ms(self, name: str, geo: Any, in_c: int, out_c: int) -> float:
        module = self.named[name]
        key = (type(module).__name__, geo.kind, geo.depthwise, geo.groups, geo.bias,
               str(getattr(module, "kernel_size", "")), str(getattr(module, "stride", "")),
               str(getattr(module, "padding", "")), str(getattr(module, "dilation", "")),
               tuple(geo.in_shape[1:]) if geo.kind == "conv" else tuple(geo.in_shape[:-1]),
               in_c, out_c)
        if key not in self.memo:
            layer, shape = _layer(module, geo, in_c, out_c)
            self.memo[key] = layer_ms(layer, shape, self.runtime, *self.opts)
        return self.memo[key]


def measured_steps(model: nn.Module, example_inputs: Any, runtime: Runtime,
                   steps: tuple[int, ...] = STEPS, keep: float = 0.6, margin: float = 0.04,
                   rounds: int = 2, repeats: int = 5, warmup: int = 2,
                   cache_dir: str | os.PathLike | None = None,
                   refresh: bool = False) -> tuple[dict[str, int], dict[str, Any]]:
    """Each group's width step on ``runtime`` (group name → step, 1 for free widths) and
    what was measured to choose it (``info["groups"][name]``: widths, ms, excess)."""
    from nasprune.pruning.graph import groups as list_groups
    from nasprune.search.costmodel import CostModel
    from nasprune.search.latency import _device_name, cache_root

    gs = list_groups(model, example_inputs)
    cm = CostModel(model, example_inputs, gs)
    key = {"format": FORMAT, "torch": torch.__version__, "runtime": runtime.key(),
           "device": _device_name(torch.device(runtime.device)), "steps": list(steps),
           "keep": keep, "margin": margin, "rounds": rounds, "repeats": repeats,
           "layers": [[n, g.kind, g.in_dim, g.out_dim, g.groups, g.kernel, g.stride,
                       list(g.in_shape)] for n, g in cm.layers.items()],
           "groups": [[g.name, g.channels, g.divisor] for g in gs]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_root(cache_dir) / f"steps-{digest}.json"
    if path.exists() and not refresh:
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key:
                return dict(data["steps"]), {**data["info"], "cache": str(path)}
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable cache: measure again and overwrite it
    timer = _Timer(model, cm, runtime, rounds, repeats, warmup)
    chosen, per_group = {}, {}
    for gi, g in enumerate(gs):
        allowed = [s for s in steps if s == 1 or 2 * s <= g.channels]
        if len(allowed) == 1 or g.divisor > 1:  # too narrow, or held to its conv groups
            chosen[g.name] = 1
            continue
        widths = _window(g.channels, keep, allowed[-1])
        ms = timer.group_ms(gi, g.channels, widths)
        chosen[g.name], excess = choose_step(widths, ms, allowed, margin)
        per_group[g.name] = {"widths": widths.tolist(), "ms": ms.tolist(),
                             "excess": {str(s): e for s, e in excess.items()}}
    info = {"runtime": runtime.describe(), "keep": keep, "margin": margin,
            "groups": per_group, "timed_layers": len(timer.memo)}
    replace_file(path, json.dumps({"key": key, "steps": chosen, "info": info}))
    return chosen, {**info, "cache": str(path), "measured": True}


def describe_steps(steps: dict[str, int]) -> str:
    """``"step 8: 6 groups, step 1: 3 groups"``: a one-line summary, coarsest step first."""
    counts: dict[int, int] = {}
    for s in steps.values():
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"step {s}: {n} group{'s' if n > 1 else ''}"
                     for s, n in sorted(counts.items(), reverse=True))
