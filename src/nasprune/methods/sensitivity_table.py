"""The result of a sensitivity analysis: validation accuracy per group and prune level.

:func:`nasprune.methods.sensitivity.sensitivity` measures it; the drop curves and their
monotone envelope are what :func:`~nasprune.methods.allocation.ratios_from_sensitivity`
allocates ratios from. It round-trips through JSON (an experiment stores it as an artifact).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nasprune.errors import NaspruneError


@dataclass
class SensitivityTable:
    """Validation top-1 (fraction) — or a task's score — after pruning each group alone.

    ``curves[group]`` is a list of ``(level, val_acc)``; ``baseline`` is the unpruned
    model's val accuracy measured the same way (after the same BatchNorm recalibration), so
    ``baseline - val_acc`` is the drop caused by pruning alone (``val_acc - baseline`` when
    ``maximize`` is False: a score that is better lower). ``macs[group]`` holds the
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
    maximize: bool = True  # a task's score may be better when lower (a loss, an error rate)
    metric: str = "top1"  # "score" for a task's own score

    @property
    def groups(self) -> list[str]:
        return list(self.curves)

    def drops(self, group: str) -> list[tuple[float, float]]:
        """``(level, how much worse than the baseline)`` for ``group``."""
        self._check(group)
        sign = 1.0 if self.maximize else -1.0
        return [(lv, sign * (self.baseline - acc)) for lv, acc in self.curves[group]]

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
            # Only a task's table says more: a built-in table's JSON stays as it was.
            **({} if self.maximize and self.metric == "top1"
               else {"maximize": self.maximize, "metric": self.metric}),
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
                maximize=bool(d.get("maximize", True)),
                metric=str(d.get("metric", "top1")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise NaspruneError(f"not a sensitivity table: {exc!r}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        head = f"{'group':<28}" + "".join(f"{lv:>7.2f}" for lv in self.levels)
        if self.metric == "top1":
            rows = [f"baseline val top-1 {self.baseline:.2%}", head]
            cell = "{:>7.1%}"
        else:
            better = "higher" if self.maximize else "lower"
            rows = [f"baseline val {self.metric} {self.baseline:.4g} ({better} is better)", head]
            cell = "{:>7.4g}"
        for g, c in self.curves.items():
            rows.append(f"{g:<28}" + "".join(cell.format(acc) for _, acc in c))
        return "\n".join(rows)


__all__ = ["SensitivityTable"]
