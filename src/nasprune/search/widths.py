"""Width granularity by measurement: the ``round_to`` at which a runtime's kernels are fast.

Runtimes run some channel counts much faster than others (vectorised kernels want widths
that are multiples of 4, 8 or 16): ResNet-20 pruned to 48 % of its MACs with free widths
runs *slower* than the unpruned network on ONNX Runtime (1 CPU thread), and 1.3x faster
when every width is a multiple of 8. Rather than have the user guess ``round_to``,
:func:`measured_round_to` prunes the network uniformly at two keep levels with every
candidate step, times all of them interleaved on the runtime, and picks the step with the
lowest time per MAC — the finest such step within ``margin`` of the best, since a finer
step leaves the search more freedom.
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

    nets, macs = [], []
    for keep in keeps:
        for s in steps:
            net = prune(model, example_inputs, 1.0 - keep, round_to=None if s == 1 else s)
            nets.append(net)
            macs.append(count_macs(net, example_inputs))
    found = compare_latency(nets, tuple(example_inputs.shape[1:]), runtime, rounds, repeats)
    # ms per MAC, relative to step 1 at the same keep level (averaged over the levels).
    per_mac = np.array([f["median_ms"] / m for f, m in zip(found, macs, strict=True)])
    rel = (per_mac.reshape(len(keeps), len(steps))
           / per_mac.reshape(len(keeps), len(steps))[:, :1]).mean(0)
    best = float(rel.min())
    step = next(s for s, r in zip(steps, rel, strict=True) if r <= best * (1 + margin))
    info = {"steps": list(steps), "keeps": list(keeps),
            "relative_ms_per_mac": [float(r) for r in rel], "round_to": step,
            "runtime": runtime.describe()}
    return (None if step == 1 else step), info
