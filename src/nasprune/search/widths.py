"""Width granularity by measurement: the ``round_to`` at which a runtime's kernels are fast.

Runtimes run some channel counts much faster than others (vectorised kernels want widths
that are multiples of 4, 8 or 16): ResNet-20 pruned to 48 % of its MACs with free widths
runs *slower* than the unpruned network on ONNX Runtime (1 CPU thread), and 1.3x faster
when every width is a multiple of 8. Rather than have the user guess ``round_to``,
:func:`measured_round_to` prunes the network uniformly at two keep levels with every
candidate step, times all of them interleaved on the runtime (fastest runs: the estimate
load disturbs least), and compares each with what free widths (step 1) cost at the same
MACs — the straight line through the two step-1 networks, so fixed per-layer overheads do
not favour the coarse steps that round widths up. It picks the finest step within
``margin`` of the fastest, since a finer step leaves the search more freedom. Steps over
half the narrowest group's width are not tried: they would leave that group unprunable
(ResNet-20's 16-channel stage at step 16), and a speed-up target out of reach.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nasprune.metrics.runtime import Runtime, compare_latency

STEPS = (1, 4, 8, 16)


def measured_round_to(model: Any, example_inputs: Any, runtime: Runtime,
                      steps: tuple[int, ...] = STEPS, keeps: tuple[float, ...] = (0.5, 0.7),
                      rounds: int = 5, repeats: int = 10,
                      margin: float = 0.03) -> tuple[int | None, dict[str, Any]]:
    """The ``round_to`` for ``runtime`` (None for 1) and what was measured to choose it."""
    from nasprune.metrics import count_macs
    from nasprune.pruning import prune
    from nasprune.pruning.graph import groups

    narrowest = min(g.channels for g in groups(model, example_inputs))
    steps = tuple(s for s in steps if s == 1 or 2 * s <= narrowest)
    nets, macs = [], []
    for keep in keeps:
        for s in steps:
            net = prune(model, example_inputs, 1.0 - keep, round_to=None if s == 1 else s)
            nets.append(net)
            macs.append(count_macs(net, example_inputs))
    found = compare_latency(nets, tuple(example_inputs.shape[1:]), runtime, rounds, repeats)
    t = np.array([f["min_ms"] for f in found]).reshape(len(keeps), len(steps))
    m = np.array(macs, dtype=float).reshape(len(keeps), len(steps))
    # Step 1's time at each network's MACs (line through the step-1 points), then each
    # step's time relative to it, averaged over the keep levels.
    slope = (t[-1, 0] - t[0, 0]) / (m[-1, 0] - m[0, 0]) if m[-1, 0] != m[0, 0] else 0.0
    free = t[0, 0] + slope * (m - m[0, 0])
    rel = (t / np.maximum(free, 1e-12)).mean(0)
    best = float(rel.min())
    step = next(s for s, r in zip(steps, rel, strict=True) if r <= best * (1 + margin))
    info = {"steps": list(steps), "keeps": list(keeps),
            "relative_ms": [float(r) for r in rel], "round_to": step,
            "runtime": runtime.describe()}
    return (None if step == 1 else step), info
