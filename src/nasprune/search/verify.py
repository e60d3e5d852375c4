"""Delivery check of a latency- or speed-up-budgeted search: measure what was chosen.

The search ranks candidates by a *predicted* latency; the user asked for a *measured* one.
:func:`verify_delivery` prunes the chosen network, times it on the budget's runtime
interleaved with the unpruned network (:func:`~nasprune.metrics.runtime.compare_latency`:
median and p90, speed-up as the median of per-round ratios) and sets the measurement beside
the prediction. A network that misses its target by more than ``tolerance`` (5 %) is not
delivered silently: the best-scoring other candidates are measured the same way and the
best-scoring one that meets the target replaces it; if none does, the result says by how
much the chosen network missed.

When none of them does either, the latency table is too optimistic near the budget (on a
shared machine the load also drifts away from the one the table was measured under), and
re-measuring more candidates of the same predicted latency cannot help. The measurements
then correct the budget instead: the median ratio of measured to predicted speed-up (or
latency) of the networks just timed tightens the *predicted* limit by that much, the
best-scoring candidates are re-projected onto it and re-scored by the search's evaluator,
measured, and the best-scoring one that meets the target is delivered. Up to
``corrections`` rounds, each refining the correction with its own measurements (the
secant through the last two rounds' predicted and measured medians).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nasprune.errors import NaspruneError
from nasprune.metrics.runtime import Runtime, compare_latency
from nasprune.search.budget import Budget
from nasprune.search.result import Candidate

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
    # The predicted limits the delivered network was re-projected onto, when the budget
    # was corrected by measurement (see the module docstring); else None.
    corrected: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the command line: measurement, prediction, verdict."""
        text = (f"measured on {self.runtime}: {self.measured_ms:.3g} ms median "
                f"(p90 {self.p90_ms:.3g}), speed-up {self.measured_speedup:.2f}x over the "
                f"unpruned {self.base_ms:.3g} ms; predicted {self.predicted_ms:.3g} ms, "
                f"{self.predicted_speedup:.2f}x")
        if self.corrected is not None:
            limits = ", ".join(f"{v:.3g} ms" if k == "latency_ms" else f"{v:.2f}x"
                               for k, v in self.corrected.items())
            text += (f"; the table over-predicted near the budget, so trial {self.number}'s "
                     f"allocation, re-projected onto a predicted {limits}, was delivered "
                     f"(the search's choice, trial {self.replaced}, missed the target)")
        elif self.replaced is not None:
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


class _Check:
    """Builds, predicts and measures candidates of one result against the unpruned model."""

    def __init__(self, result: Any, model: Any, example_inputs: Any, runtime: Runtime,
                 rounds: int, repeats: int) -> None:
        self.space, self.budget = result.space, result.budget
        self.model, self.x, self.runtime = model, example_inputs, runtime
        self.rounds, self.repeats = rounds, repeats
        self.base: dict[str, float] = {}
        self.checked: list[dict[str, Any]] = []

    def predicted_ms(self, c: Candidate) -> float:
        return self.space.latency.predict(self.space.kept(self.space.keep_from_ratios(c.ratios)))

    def short(self, m: dict[str, float]) -> float:
        return _shortfall(m, self.budget.latency_ms, self.budget.speedup)

    def measure(self, cands: list[Candidate], **note: Any) -> list[dict[str, float]]:
        """Time ``cands`` interleaved with the unpruned network; recorded in ``checked``."""
        from nasprune.pruning import prune

        nets = [prune(self.model, self.x, c.ratios, round_to=self.space.round_to,
                      min_channels=self.space.min_channels) for c in cands]
        found = compare_latency([self.model, *nets], tuple(self.x.shape[1:]), self.runtime,
                                self.rounds, self.repeats)
        self.base = found[0]
        base_ms = self.space.latency.base_ms
        self.checked += [{"number": c.number, "score": c.score,
                          "predicted_speedup": base_ms / self.predicted_ms(c), **note, **r}
                         for c, r in zip(cands, found[1:], strict=True)]
        return found[1:]

    def first_fit(self, cands: list[Candidate], found: list[dict[str, float]],
                  tolerance: float) -> tuple[Candidate, dict[str, float]] | None:
        """The best-scoring of ``cands`` whose measurement meets the target, if any."""
        fits = [(c, r) for c, r in zip(cands, found, strict=True) if self.short(r) <= tolerance]
        return max(fits, key=lambda f: (f[0].score, -f[0].number)) if fits else None

    def errors(self, cands: list[Candidate], found: list[dict[str, float]]
               ) -> dict[str, tuple[float, float]]:
        """Per timed limit, the median (predicted, measured) value of ``cands``: speed-up
        for a speed-up limit, milliseconds for a latency limit."""
        pred = np.array([self.predicted_ms(c) for c in cands])
        out = {}
        if self.budget.speedup is not None:
            out["speedup"] = (float(np.median(self.space.latency.base_ms / pred)),
                              float(np.median([r["speedup"] for r in found])))
        if self.budget.latency_ms is not None:
            out["latency_ms"] = (float(np.median(pred)),
                                 float(np.median([r["median_ms"] for r in found])))
        return out

    def reprojected(self, cands: list[Candidate], limits: dict[str, float],
                    evaluator: Any) -> list[Candidate]:
        """``cands``' allocations projected onto ``limits`` (and the budget's MACs/params
        limits), each once, scored by ``evaluator``."""
        space, b = self.space, self.budget
        budget = Budget(macs=b.macs, params=b.params, **limits)
        space.check_feasible(budget)
        out, seen = [], set()
        for c in cands:
            keep = space.project(np.asarray(c.keep, dtype=float), budget)
            kept = tuple(space.kept(keep).tolist())
            if kept in seen:
                continue
            seen.add(kept)
            ratios = space.prune_ratios(keep)
            macs, params = space.cost(keep)
            macs_f, params_f = space.fractions(keep)
            out.append(Candidate(
                number=c.number, ratios=ratios, keep=keep.tolist(), macs=int(macs),
                params=int(params), macs_fraction=macs_f, params_fraction=params_f,
                score=float(evaluator.score(ratios)),
                seconds=float(getattr(evaluator, "last_seconds", 0.0)),
                latency_ms=space.latency.predict(space.kept(keep)), warm_start=c.warm_start))
        return out


def _next_limit(target: float, history: list[tuple[float, float]]) -> float:
    """The predicted limit whose networks should measure ``target``, from the (predicted,
    measured) medians of the rounds so far: the secant through the last two where the
    measurement moved with the prediction, else the last one's ratio."""
    x1, y1 = history[-1]
    if len(history) >= 2:
        x0, y0 = history[-2]
        if (x1 - x0) * (y1 - y0) > 0:
            return x1 + (target - y1) * (x1 - x0) / (y1 - y0)
    return x1 * target / y1


def verify_delivery(result: Any, model: Any, example_inputs: Any, runtime: Runtime,
                    tolerance: float = TOLERANCE, candidates: int = 5, rounds: int = 9,
                    repeats: int = 10, evaluator: Any = None,
                    corrections: int = 3) -> Delivery:
    """Measure ``result.best`` on ``runtime``; fall back on other candidates if it misses.

    ``candidates``: how many of the next-best-scoring trials are measured when the first
    choice misses by more than ``tolerance``. When none of them meets the target and an
    ``evaluator`` (the search's, with ``score(ratios)``) is given, up to ``corrections``
    rounds re-project the best-scoring allocations onto a limit corrected by measurement
    (see the module docstring). ``result.best`` is replaced by the delivered candidate
    when it is not the first choice.
    """
    budget = result.budget
    if not budget.timed:
        raise NaspruneError("delivery is verified for latency or speed-up budgets only")
    check = _Check(result, model, example_inputs, runtime, rounds, repeats)
    first = result.best
    (found,) = check.measure([first])
    chosen, corrected = first, None
    base = check.base
    if check.short(found) > tolerance:
        ranked = sorted((c for c in result.trials if c.number != first.number and not c.stopped),
                        key=lambda c: (-c.score, c.number))[:candidates]
        pool = [first, *ranked]
        measured = [found, *check.measure(ranked)] if ranked else [found]
        fit = check.first_fit(ranked, measured[1:], tolerance)
        targets = {"latency_ms": budget.latency_ms, "speedup": budget.speedup}
        history: dict[str, list[tuple[float, float]]] = {}
        for _ in range(corrections if fit is None and evaluator is not None else 0):
            for key, point in check.errors(pool, measured).items():
                history.setdefault(key, []).append(point)
            # Never looser than asked: only a too optimistic table is corrected.
            limits = {k: (max if k == "speedup" else min)(targets[k], _next_limit(targets[k], h))
                      for k, h in history.items()}
            try:
                pool = check.reprojected([first, *ranked], limits, evaluator)
            except NaspruneError:  # the corrected limit is out of the space's reach
                break
            measured = check.measure(pool, corrected=limits)
            fit = check.first_fit(pool, measured, tolerance)
            if fit is not None:
                corrected = limits
                break
        if fit is not None:
            chosen, found = fit
            base = check.base
            result.best = chosen
    predicted = check.predicted_ms(chosen)
    short = check.short(found)
    lat = result.space.latency
    return Delivery(
        runtime=runtime.describe(), target_ms=budget.latency_ms,
        target_speedup=budget.speedup, number=chosen.number, predicted_ms=predicted,
        predicted_speedup=lat.base_ms / predicted, measured_ms=found["median_ms"],
        p90_ms=found["p90_ms"], base_ms=base["median_ms"],
        measured_speedup=found["speedup"], met=short <= tolerance,
        miss=max(0.0, short), replaced=first.number if chosen is not first else None,
        checked=check.checked, corrected=corrected)
