"""Sensitivity-based ratio allocation: one accuracy-drop tolerance for every group.

:func:`ratios_from_sensitivity` gives each group the largest ratio whose accuracy drop in a
:class:`~nasprune.methods.sensitivity_table.SensitivityTable` stays under one common
tolerance τ, and bisects τ until the pruned model meets a MACs target: robust groups lose
more. Channel rounding makes the MACs a step function of τ, so a greedy top-up then gives
channels back where they buy the most accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from nasprune.errors import NaspruneError
from nasprune.methods.sensitivity_table import SensitivityTable


class _Cost:
    """MACs fraction of an allocation, cached by the kept-channel vector it rounds to."""

    def __init__(self, table: SensitivityTable, space_or_model: Any, example_inputs: Any,
                 round_to: int | None, min_channels: int, ignored: Any) -> None:
        from nasprune.pruning.graph import kept_channels, step_of

        self.space = space_or_model if hasattr(space_or_model, "cost") else None
        if self.space is not None:  # the space's rounding is what its cost model assumes
            round_to, min_channels = self.space.round_to, self.space.min_channels
        self.kept = lambda g, r: kept_channels(table.channels[g], r, step_of(round_to, g),
                                               min_channels, table.divisors.get(g, 1))
        self.table = table
        self.round_to, self.min_channels, self.ignored = round_to, min_channels, ignored
        self.cache: dict[tuple[int, ...], float] = {}
        if self.space is None:
            if not isinstance(space_or_model, nn.Module):
                raise NaspruneError("ratios_from_sensitivity needs the model (or a SearchSpace)")
            if example_inputs is None:
                raise NaspruneError("ratios_from_sensitivity needs example_inputs with a model")
            from nasprune.metrics import count_macs

            self.model, self.example = space_or_model, example_inputs
            self.base = count_macs(self.model, example_inputs)
        else:
            missing = [g for g in table.groups if g not in list(self.space.names)]
            if missing:
                raise NaspruneError(f"group '{missing[0]}' of the table is not in the space")
            self.base = int(self.space.base_macs)

    def key(self, ratios: dict[str, float]) -> tuple[int, ...]:
        return tuple(self.kept(g, ratios.get(g, 0.0)) for g in self.table.groups)

    def __call__(self, ratios: dict[str, float]) -> float:
        k = self.key(ratios)
        if k not in self.cache:
            self.cache[k] = self._measure(ratios)
        return self.cache[k]

    def _measure(self, ratios: dict[str, float]) -> float:
        if self.space is not None:
            import numpy as np

            keep = np.array([1.0 - ratios.get(n, 0.0) for n in self.space.names], dtype=float)
            return float(self.space.cost(keep)[0]) / self.base
        return self.real(ratios)

    def real(self, ratios: dict[str, float]) -> float:
        """MACs fraction of the really pruned model (needs the model)."""
        from nasprune.metrics import count_macs
        from nasprune.pruning import prune

        pruned = prune(self.model, self.example, ratios, round_to=self.round_to,
                       min_channels=self.min_channels, ignored=self.ignored)
        return count_macs(pruned, self.example) / self.base


def ratios_from_sensitivity(
    table: SensitivityTable,
    space_or_model: Any,
    example_inputs: Any = None,
    target_macs: float = 0.5,
    tolerance: float = 0.01,
    max_ratio: float | None = None,
    round_to: int | None = None,
    min_channels: int = 1,
    ignored: Iterable[str | nn.Module] | None = None,
) -> dict[str, float]:
    """Per-group prune ratios from ``table`` that keep ``target_macs`` of the MACs.

    Every group takes the largest ratio whose accuracy drop in the table stays ≤ τ
    (interpolated between levels, never beyond the largest level or ``max_ratio``); τ is
    bisected until the MACs fraction is at most ``target_macs``. Channel rounding makes the
    MACs a step function of τ, so the allocation is then topped up greedily — one channel
    at a time, to the group that gains most accuracy per MAC — until it is within
    ``tolerance`` (an absolute fraction of the original MACs) below the target.

    ``space_or_model``: the model (each candidate is pruned and its MACs counted) or a
    ``nasprune.search.SearchSpace`` (its analytic cost model, fast for big networks; its
    ``round_to``/``min_channels`` are used). Pass the same ``round_to`` to the final
    ``prune`` call. Raises NaspruneError if the
    target cannot be met even with every group at its largest ratio.
    """
    if isinstance(target_macs, bool) or not isinstance(target_macs, (int, float)) or not (
        0.0 < target_macs <= 1.0
    ):
        raise NaspruneError(f"target_macs must be a fraction in (0, 1], got {target_macs!r}")
    if not table.curves:
        raise NaspruneError("the sensitivity table is empty")
    cap = max(table.levels)
    if max_ratio is not None:
        if not (0.0 < max_ratio < 1.0):
            raise NaspruneError(f"max_ratio must be in (0, 1), got {max_ratio!r}")
        cap = min(cap, max_ratio)
    cost = _Cost(table, space_or_model, example_inputs, round_to, min_channels, ignored)

    def allocate(tau: float) -> dict[str, float]:
        return {g: min(table.ratio_for(g, tau), cap) for g in table.groups}

    top = max(table.envelope(g)[-1][1] for g in table.groups) + 1e-9
    if cost(allocate(top)) > target_macs + 1e-12:
        raise NaspruneError(
            f"MACs target {target_macs:.3f} is out of reach: with every group pruned at the "
            f"largest ratio ({cap:.2f}) the model keeps {cost(allocate(top)):.3f} of its MACs"
        )
    lo, hi = -1e-9, top  # cost(allocate(lo)) = 1 > target ≥ cost(allocate(hi))
    for _ in range(60):
        if cost.key(allocate(lo)) == cost.key(allocate(hi)) or hi - lo < 1e-7:
            break
        mid = (lo + hi) / 2
        if cost(allocate(mid)) <= target_macs:
            hi = mid
        else:
            lo = mid
    ratios = allocate(hi)
    ratios = _top_up(table, ratios, cost, target_macs, tolerance)
    return {g: float(r) for g, r in ratios.items() if r > 0}


def _top_up(table: SensitivityTable, ratios: dict[str, float], cost: _Cost,
            target: float, tolerance: float) -> dict[str, float]:
    """Give channels back, best accuracy-per-MAC first, while staying ≤ ``target``."""
    ratios = dict(ratios)
    current = cost(ratios)
    while current < target - tolerance:
        best: tuple[float, float, str, float] | None = None
        for g in table.groups:
            kept = cost.kept(g, ratios[g])
            if kept >= table.channels[g]:
                continue
            # The ratio that rounds to one more channel (or one more round_to step).
            new_r = ratios[g]
            for step in range(1, table.channels[g] + 1):
                new_r = max(0.0, 1.0 - (kept + step) / table.channels[g])
                if cost.kept(g, new_r) > kept or new_r == 0.0:
                    break
            trial = {**ratios, g: new_r}
            m = cost(trial)
            if m > target or m <= current:
                continue
            gain = table.drop_at(g, ratios[g]) - table.drop_at(g, new_r)
            score = gain / (m - current)
            if best is None or (score, m) > (best[0], best[1]):
                best = (score, m, g, new_r)
        if best is None:
            break
        _, current, g, new_r = best
        ratios[g] = new_r
    return ratios


__all__ = ["ratios_from_sensitivity"]
