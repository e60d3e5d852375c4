"""Delivery check of a latency- or speed-up-budgeted search: measure what was chosen.

The search ranks candidates by a *predicted* latency; the user asked for a *measured* one.
:func:`verify_delivery` prunes the chosen network, times it on the budget's runtime
interleaved with the unpruned network (:func:`~nasprune.metrics.runtime.compare_latency`:
median and p90, speed-up as the median of per-round ratios) and sets the measurement beside
the prediction. A network that misses its target by more than ``tolerance`` (5 %) is not
delivered silently: the best-scoring other candidates are measured the same way and the
best-scoring one that meets the target replaces it; if none does, the result says by how
much the chosen network missed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nasprune.errors import NaspruneError
from nasprune.metrics.runtime import Runtime, compare_latency

TOLERANCE = 0.05


@dataclass
class Delivery:
    """Measured against predicted latency of the delivered network, and whether it fits."""

    runtime: str
    target_ms: float | None  # the budget's latency_ms, if any
    target_speedup: float | None  # the budget's speedup, if any
    number: int  # trial number of the delivered candidate
    predicted_ms: float
    predicted_speedup: float
    measured_ms: float  # median
    p90_ms: float
    base_ms: float  # the unpruned network's median, measured in the same rounds
    measured_speedup: float
    met: bool
    miss: float  # how far the measurement falls short of the target (0 when met)
    replaced: int | None = None  # trial number of the first choice, when it was replaced
    checked: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the command line: measurement, prediction, verdict."""
        text = (f"measured on {self.runtime}: {self.measured_ms:.3g} ms median "
                f"(p90 {self.p90_ms:.3g}), speed-up {self.measured_speedup:.2f}x over the "
                f"unpruned {self.base_ms:.3g} ms; predicted {self.predicted_ms:.3g} ms, "
                f"{self.predicted_speedup:.2f}x")
        if self.replaced is not None:
            text += (f"; trial {self.replaced} missed the target, so trial {self.number}, the "
                     "best-scoring candidate that meets it, was chosen instead")
        if not self.met:
            text += f"; MISSES the target by {self.miss:.1%}"
        return text


def _shortfall(m: dict[str, float], target_ms: float | None,
               target_speedup: float | None) -> float:
    """Relative shortfall against every timed limit (≤ 0: met exactly or better)."""
    out = -1.0
    if target_speedup is not None:
        out = max(out, 1.0 - m["speedup"] / target_speedup)
    if target_ms is not None:
        out = max(out, m["median_ms"] / target_ms - 1.0)
    return out


def verify_delivery(result: Any, model: Any, example_inputs: Any, runtime: Runtime,
                    tolerance: float = TOLERANCE, candidates: int = 5, rounds: int = 9,
                    repeats: int = 10) -> Delivery:
    """Measure ``result.best`` on ``runtime``; fall back on other candidates if it misses.

    ``candidates``: how many of the next-best-scoring trials are measured when the first
    choice misses by more than ``tolerance``. ``result.best`` is replaced by the delivered
    candidate when one of them is chosen.
    """
    from nasprune.pruning import prune

    space, budget = result.space, result.budget
    if not budget.timed:
        raise NaspruneError("delivery is verified for latency or speed-up budgets only")
    shape = tuple(example_inputs.shape[1:])
    lat = space.latency

    def build(c: Any) -> Any:
        return prune(model, example_inputs, c.ratios, round_to=space.round_to,
                     min_channels=space.min_channels)

    first = result.best
    m = compare_latency([model, build(first)], shape, runtime, rounds, repeats)
    chosen, found = first, m[1]
    checked = [{"number": first.number, "score": first.score, **found}]
    miss = _shortfall(found, budget.latency_ms, budget.speedup)
    if miss > tolerance:
        ranked = sorted((c for c in result.trials if c.number != first.number),
                        key=lambda c: (-c.score, c.number))[:candidates]
        if ranked:
            again = compare_latency([model, *map(build, ranked)], shape, runtime, rounds,
                                    repeats)
            checked += [{"number": c.number, "score": c.score, **r}
                        for c, r in zip(ranked, again[1:], strict=True)]
            fits = [(c, r) for c, r in zip(ranked, again[1:], strict=True)
                    if _shortfall(r, budget.latency_ms, budget.speedup) <= tolerance]
            if fits:
                chosen, found = fits[0]  # ranked by score: the first that fits scores best
                result.best = chosen
                m = [again[0]]
    kept = space.kept(space.keep_from_ratios(chosen.ratios))
    predicted = lat.predict(kept)
    short = _shortfall(found, budget.latency_ms, budget.speedup)
    return Delivery(
        runtime=runtime.describe(), target_ms=budget.latency_ms,
        target_speedup=budget.speedup, number=chosen.number, predicted_ms=predicted,
        predicted_speedup=lat.base_ms / predicted, measured_ms=found["median_ms"],
        p90_ms=found["p90_ms"], base_ms=m[0]["median_ms"],
        measured_speedup=found["speedup"], met=short <= tolerance,
        miss=max(0.0, short), replaced=first.number if chosen is not first else None,
        checked=checked)
