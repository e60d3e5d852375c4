"""Sensitivity analysis and sensitivity-based ratio allocation (the classic baseline).

:func:`sensitivity` prunes one channel group at a time at each level, re-estimates the
BatchNorm statistics on a few training batches and records validation accuracy (Li et al.
2017, "Pruning filters for efficient ConvNets", §4.2). :func:`ratios_from_sensitivity` then
gives each group the largest ratio whose accuracy drop stays under one common tolerance τ,
and bisects τ until the pruned model meets a MACs target: robust groups lose more.

Only the validation split is ever used; the test split stays untouched for the final report.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError

DEFAULT_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class SensitivityTable:
    """Validation top-1 (fraction) after pruning each group alone at each level.

    ``curves[group]`` is a list of ``(level, val_acc)``; ``baseline`` is the unpruned
    model's val accuracy measured the same way (after the same BatchNorm recalibration), so
    ``baseline - val_acc`` is the drop caused by pruning alone. ``macs[group]`` holds the
    MACs of each pruned model, ``channels[group]`` the group's channel count.
    """

    baseline: float
    levels: list[float]
    curves: dict[str, list[tuple[float, float]]]
    channels: dict[str, int]
    macs: dict[str, list[int]] = field(default_factory=dict)
    base_macs: int = 0
    divisors: dict[str, int] = field(default_factory=dict)  # ChannelGroup.divisor if > 1
    criterion: str = "l1"
    seconds: float = 0.0

    @property
    def groups(self) -> list[str]:
        return list(self.curves)

    def drops(self, group: str) -> list[tuple[float, float]]:
        """``(level, baseline - val_acc)`` for ``group``."""
        self._check(group)
        return [(lv, self.baseline - acc) for lv, acc in self.curves[group]]

    def envelope(self, group: str) -> list[tuple[float, float]]:
        """The drop curve from ``(0, 0)`` made non-decreasing (running maximum).

        Measured curves are noisy (pruning 10 % can even help); the envelope makes "the
        largest ratio whose drop is at most τ" well defined and monotone in τ.
        """
        pts = [(0.0, 0.0)]
        for lv, d in self.drops(group):
            pts.append((lv, max(d, pts[-1][1])))
        return pts

    def drop_at(self, group: str, ratio: float) -> float:
        """Envelope drop at ``ratio``, linearly interpolated between measured levels."""
        pts = self.envelope(group)
        if ratio >= pts[-1][0]:
            return pts[-1][1]
        for (l0, d0), (l1, d1) in zip(pts, pts[1:], strict=False):
            if ratio <= l1:
                return d0 + (d1 - d0) * (ratio - l0) / (l1 - l0)
        return pts[-1][1]

    def ratio_for(self, group: str, tolerance: float) -> float:
        """The largest ratio whose (interpolated envelope) drop is ≤ ``tolerance``."""
        pts = self.envelope(group)
        if tolerance < 0:
            return 0.0
        for (l0, d0), (l1, d1) in zip(pts, pts[1:], strict=False):
            if d1 > tolerance:
                return l0 + (l1 - l0) * (tolerance - d0) / (d1 - d0)
        return pts[-1][0]

    def _check(self, group: str) -> None:
        if group not in self.curves:
            raise NaspruneError(f"group '{group}' is not in the sensitivity table")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_dict` reads it back."""
        return {
            "baseline": self.baseline,
            "levels": list(self.levels),
            "curves": {g: [[lv, acc] for lv, acc in c] for g, c in self.curves.items()},
            "channels": dict(self.channels),
            "macs": {g: list(v) for g, v in self.macs.items()},
            "base_macs": self.base_macs,
            "divisors": dict(self.divisors),
            "criterion": self.criterion,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensitivityTable:
        try:
            return cls(
                baseline=float(d["baseline"]),
                levels=[float(v) for v in d["levels"]],
                curves={g: [(float(a), float(b)) for a, b in c] for g, c in d["curves"].items()},
                channels={g: int(v) for g, v in d["channels"].items()},
                macs={g: [int(x) for x in v] for g, v in d.get("macs", {}).items()},
                base_macs=int(d.get("base_macs", 0)),
                divisors={g: int(v) for g, v in d.get("divisors", {}).items()},
                criterion=str(d.get("criterion", "l1")),
                seconds=float(d.get("seconds", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise NaspruneError(f"not a sensitivity table: {exc!r}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        head = f"{'group':<28}" + "".join(f"{lv:>7.2f}" for lv in self.levels)
        rows = [f"baseline val top-1 {self.baseline:.2%}", head]
        for g, c in self.curves.items():
            rows.append(f"{g:<28}" + "".join(f"{acc:>7.1%}" for _, acc in c))
        return "\n".join(rows)


def _check_levels(levels: Iterable[float]) -> list[float]:
    out = []
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, (int, float)) or not (0.0 < lv < 1.0):
            raise NaspruneError(f"sensitivity levels must be in (0, 1), got {lv!r}")
        out.append(float(lv))
    if not out:
        raise NaspruneError("sensitivity needs at least one level")
    return sorted(set(out))


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def sensitivity(
    model: nn.Module,
    data,
    example_inputs: Any = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    criterion: str = "l1",
    bn_batches: int = 10,
    val_size: int | None = None,
    groups: Sequence[str] | None = None,
    round_to: int | None = None,
    min_channels: int = 1,
    ignored: Iterable[str | nn.Module] | None = None,
    progress: Callable[[str, float, float], None] | None = None,
) -> SensitivityTable:
    """Prune each group alone at each level and record validation top-1 accuracy.

    Each pruned copy (``nasprune.prune`` with ``{group: level}``) has its BatchNorm
    statistics re-estimated on ``bn_batches`` training batches before it is evaluated on
    the val split (capped at ``val_size`` samples): without that, pruning one layer shifts
    every later BatchNorm's input statistics and the table would mostly measure that shift.
    ``groups`` restricts the analysis to some group names; ``progress(group, level, acc)``
    is called after each measurement. The model itself is not modified.
    """
    from nasprune.metrics import count_macs, evaluate
    from nasprune.pruning import groups as list_groups
    from nasprune.pruning import prune
    from nasprune.train import recalibrate_bn

    levels_ = _check_levels(levels)
    if example_inputs is None:
        example_inputs = data.example_input().to(_device(model))
    if val_size is not None:
        if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 1:
            raise NaspruneError(f"val_size must be a positive integer, got {val_size!r}")
        data = replace(data, val=data.val.subset(val_size))
    all_groups = list_groups(model, example_inputs, ignored=ignored)
    names = [g.name for g in all_groups]
    if groups is not None:
        unknown = [g for g in groups if g not in names]
        if unknown:
            raise NaspruneError(f"group '{unknown[0]}' does not exist: the groups are "
                                f"{', '.join(names)}")
        all_groups = [g for g in all_groups if g.name in set(groups)]
    device = _device(model)
    start = time.perf_counter()

    def measure(m: nn.Module) -> float:
        if bn_batches:
            loader = data.loader("train", batch_size=128, shuffle=True, device=device, seed=0)
            recalibrate_bn(m, loader, batches=bn_batches)
        return float(evaluate(m, data, split="val", device=device)["top1"])

    baseline = measure(copy.deepcopy(model))
    curves: dict[str, list[tuple[float, float]]] = {}
    macs: dict[str, list[int]] = {}
    for g in all_groups:
        curves[g.name], macs[g.name] = [], []
        for lv in levels_:
            pruned = prune(model, example_inputs, {g.name: lv}, criterion=criterion,
                           round_to=round_to, min_channels=min_channels, ignored=ignored,
                           data=data)
            acc = measure(pruned)
            curves[g.name].append((lv, acc))
            macs[g.name].append(count_macs(pruned, example_inputs))
            if progress is not None:
                progress(g.name, lv, acc)
    return SensitivityTable(
        baseline=baseline,
        levels=levels_,
        curves=curves,
        channels={g.name: g.channels for g in all_groups},
        macs=macs,
        base_macs=count_macs(model, example_inputs),
        divisors={g.name: g.divisor for g in all_groups if getattr(g, "divisor", 1) > 1},
        criterion=criterion,
        seconds=time.perf_counter() - start,
    )


class _Cost:
    """MACs fraction of an allocation, cached by the kept-channel vector it rounds to."""

    def __init__(self, table: SensitivityTable, space_or_model: Any, example_inputs: Any,
                 round_to: int | None, min_channels: int, ignored: Any) -> None:
        from nasprune.pruning import kept_channels

        self.space = space_or_model if hasattr(space_or_model, "cost") else None
        if self.space is not None:  # the space's rounding is what its cost model assumes
            round_to, min_channels = self.space.round_to, self.space.min_channels
        self.kept = lambda g, r: kept_channels(table.channels[g], r, round_to, min_channels,
                                               table.divisors.get(g, 1))
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
