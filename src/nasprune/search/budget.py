"""Budgets and the projection of any keep-ratio vector onto a budget.

A :class:`Budget` caps MACs and/or parameters (fractions of the unpruned network) and/or
predicted latency (milliseconds, or a speed-up over the unpruned network on the runtime
the latency table was measured on). :func:`project` maps a keep vector onto the budget by
scaling it uniformly — ``clip(s · keep, lower, upper)`` with ``s`` found by bisection, so
the *shape* of the vector (which layers are pruned harder) is what a strategy chooses and
the budget fixes the overall size — and then fills the gap that channel rounding leaves,
one channel at a time, so the result sits just under the budget.

Exactness: every cost is a step function of the keep ratios (channels are integers). The
projection returns the vector found by scaling plus greedy single-channel (or ``round_to``
step) increments that still fit, so the remaining gap is smaller than the cheapest
increment any not-yet-full group could add — on the digits CNN and ResNet-56 that is well
under 0.5 % of the unpruned cost. Tests hold it within 1 % of the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nasprune.errors import NaspruneError


@dataclass(frozen=True)
class Budget:
    """What the pruned network may cost.

    ``macs`` and ``params`` are fractions of the unpruned network in (0, 1]; ``latency_ms``
    is an absolute predicted latency and ``speedup`` (≥ 1) how many times faster than the
    unpruned network the pruned one must run (both need a latency table, see
    :mod:`.latency`). Any combination may be given; all given limits must hold.
    """

    macs: float | None = None
    params: float | None = None
    latency_ms: float | None = None
    speedup: float | None = None

    @property
    def timed(self) -> bool:
        """Whether the budget limits latency (so it needs a latency table)."""
        return self.latency_ms is not None or self.speedup is not None

    def __post_init__(self) -> None:
        if self.macs is None and self.params is None and not self.timed:
            raise NaspruneError(
                "a budget needs at least one of macs, params, latency_ms or speedup")
        for key in ("macs", "params"):
            v = getattr(self, key)
            if v is None:
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise NaspruneError(f"budget {key} must be a number, got {v!r}")
            if not 0.0 < v <= 1.0:
                raise NaspruneError(
                    f"budget {key}={v} is a fraction of the unpruned model and must be in "
                    "(0, 1]; e.g. macs=0.5 keeps half the MACs")
        v = self.latency_ms
        if v is not None and (
            not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0
        ):
            raise NaspruneError(f"budget latency_ms must be a positive number, got {v!r}")
        v = self.speedup
        if v is not None and (
            not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 1
        ):
            raise NaspruneError(f"budget speedup must be a number ≥ 1 (times faster than the "
                                f"unpruned model), got {v!r}")

    def describe(self) -> str:
        parts = []
        if self.macs is not None:
            parts.append(f"MACs ≤ {self.macs:.1%}")
        if self.params is not None:
            parts.append(f"params ≤ {self.params:.1%}")
        if self.latency_ms is not None:
            parts.append(f"latency ≤ {self.latency_ms:g} ms")
        if self.speedup is not None:
            parts.append(f"speed-up ≥ {self.speedup:g}x")
        return ", ".join(parts)


# A load function maps a keep vector to max over constraints of (cost / limit): ≤ 1 fits.
LoadFn = Callable[[np.ndarray], float]


def bisect_scale(keep: np.ndarray, lower: np.ndarray, upper: np.ndarray, load: LoadFn,
                 iters: int = 48) -> tuple[np.ndarray, float, float]:
    """Largest ``s`` with ``load(clip(s·keep)) ≤ 1``; returns (vector, s_fit, s_over)."""
    keep = np.maximum(np.asarray(keep, dtype=float), 1e-9)
    s_hi = float(np.max(upper / keep))
    top = np.clip(s_hi * keep, lower, upper)
    if load(top) <= 1.0:
        return top, s_hi, s_hi
    s_lo = 0.0
    for _ in range(iters):
        mid = 0.5 * (s_lo + s_hi)
        if load(np.clip(mid * keep, lower, upper)) <= 1.0:
            s_lo = mid
        else:
            s_hi = mid
        if s_hi - s_lo <= 1e-10 * s_hi:
            break
    return np.clip(s_lo * keep, lower, upper), s_lo, s_hi


def fill(x: np.ndarray, target: np.ndarray, upper: np.ndarray, channels: np.ndarray,
         kept: Callable[[np.ndarray], np.ndarray], step: np.ndarray, load: LoadFn,
         frozen: int | None = None) -> np.ndarray:
    """Add whole channels (``step[i]`` at a time) to groups while the budget still holds.

    Groups are tried in order of how far their rounded width lags the continuous target
    ``target`` (the scaled vector just past the budget), so the filled vector stays close
    to the shape the strategy asked for.
    """
    x = x.copy()
    for _ in range(int(channels.max()) + 1):  # bounded: each pass adds ≥ 1 channel or stops
        k_now = kept(x)
        nxt = np.minimum(k_now + step, channels)
        lag = target * channels - k_now
        changed = False
        for i in np.argsort(-lag, kind="stable"):
            if nxt[i] <= k_now[i] or i == frozen:
                continue
            cand = nxt[i] / channels[i]
            if cand > upper[i] + 1e-12:
                continue
            trial = x.copy()
            trial[i] = min(cand, upper[i])
            if load(trial) <= 1.0:
                x = trial
                changed = True
                k_now = kept(x)
                nxt = np.minimum(k_now + step, channels)
        if not changed:
            break
    return x


def refine(x: np.ndarray, target: np.ndarray, lower: np.ndarray, upper: np.ndarray,
           channels: np.ndarray, kept: Callable[[np.ndarray], np.ndarray], step: np.ndarray,
           load: LoadFn, tol: float, rounds: int = 3) -> np.ndarray:
    """Close a gap wider than ``tol`` by trading one step of one group for others.

    Small networks have coarse steps (one channel of the digits CNN is ~1 % of its MACs),
    so filling alone can stop short; taking one to three steps from group ``j`` and
    re-filling the others often lands closer. Each round tries every ``j`` and keeps the
    best fit.
    """
    best, best_load = x, load(x)
    for _ in range(rounds):
        if best_load >= 1.0 - tol:
            break
        k_best = kept(best)
        improved = False
        for j in range(len(best)):
            for n_steps in (1, 2, 3):
                k_j = k_best[j] - n_steps * step[j]
                if k_j < 1 or k_j / channels[j] < lower[j] - 1e-12:
                    break
                cand = best.copy()
                cand[j] = k_j / channels[j]
                cand = fill(cand, target, upper, channels, kept, step, load, frozen=j)
                c_load = load(cand)
                if best_load < c_load <= 1.0:
                    best, best_load, improved = cand, c_load, True
        if not improved:
            break
    return best
