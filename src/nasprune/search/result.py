"""What a search returns: every evaluated trial as a :class:`Candidate`, the best and the front.

A candidate is read back from the user attrs the objective stored with its trial, so a
result can be rebuilt from any study, finished, resumed or written by other workers. With
multi-fidelity rungs (:mod:`nasprune.search.rungs`) the best is the best at the highest
rung reached; candidates stopped early are listed apart and never picked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nasprune.errors import NaspruneError
from nasprune.search.budget import Budget
from nasprune.search.space import SearchSpace
from nasprune.search.study import budget_dict


@dataclass
class Candidate:
    """One evaluated trial: what was pruned, what it costs and its proxy score (with rungs:
    the score at ``rung``, the highest it reached; ``rung_scores``: one per rung reached)."""

    number: int
    ratios: dict[str, float]  # prune ratios (fraction removed) per group
    keep: list[float]  # the projected keep vector of the space (per group, or per stage)
    macs: int
    params: int
    macs_fraction: float
    params_fraction: float
    score: float
    seconds: float
    values: list[float] = field(default_factory=list)
    latency_ms: float | None = None
    warm_start: str | None = None  # the warm-start candidate's name; None: a searched trial
    rung: int = 0
    rung_scores: list[float] = field(default_factory=list)
    stopped: bool = False  # stopped early at ``rung`` (a PRUNED trial): never the best

    @classmethod
    def from_trial(cls, t: FrozenTrial) -> Candidate | None:
        """The candidate of a complete trial, or of one stopped early at a rung; else None."""
        a = t.user_attrs
        rung_scores = [float(v) for v in a.get("rung_scores", ())]
        stopped = t.state == TrialState.PRUNED
        if "keep" not in a or not (t.values if t.state == TrialState.COMPLETE
                                   else stopped and rung_scores):
            return None
        values = [float(v) for v in t.values] if t.values else []
        return cls(
            number=t.number, ratios=dict(a["prune_ratios"]), keep=list(a["keep"]),
            macs=int(a["macs"]), params=int(a["params"]),
            macs_fraction=float(a["macs_fraction"]), params_fraction=float(a["params_fraction"]),
            score=values[0] if values else rung_scores[-1],
            seconds=float(a.get("seconds", 0.0)), values=values,
            latency_ms=a.get("latency_ms"), rung=len(rung_scores) - 1 if rung_scores else 0,
            rung_scores=rung_scores, stopped=stopped, warm_start=a.get("warm_start"))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class SearchResult:
    """The outcome of :func:`search`: the best candidate, all candidates, the study."""

    best: Candidate
    trials: list[Candidate]
    study: optuna.Study
    pareto: list[Candidate]
    seconds: float
    strategy: str
    objective: str
    budget: Budget
    space: SearchSpace
    failed: int = 0
    warm_start_best: str | None = None  # the best warm-start candidate (None: no warm start)
    warm_start_score: float | None = None  # its proxy score
    improvement: float | None = None  # best.score - warm_start_score (≥ 0 in one objective)
    stopped: list[Candidate] = field(default_factory=list)  # stopped early at a rung
    delivery: Any = None  # a verify.Delivery after a latency/speed-up search
    rungs: str | None = None  # the rungs it scored in ("1000:0,4000:30"; None: one fidelity)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; ``ratios`` at the top level is what ``nasprune prune`` reads."""
        return {
            "ratios": self.best.ratios,
            "best": self.best.to_dict(),
            "strategy": self.strategy,
            "objective": self.objective,
            "budget": budget_dict(self.budget),
            "study": self.study.study_name,
            "trials": len(self.trials),
            "failed": self.failed,
            "stopped": len(self.stopped),
            "rungs": self.rungs,
            "seconds": self.seconds,
            "base_macs": self.space.base_macs,
            "base_params": self.space.base_params,
            "pareto": [c.to_dict() for c in self.pareto],
            "warm_start": None if self.warm_start_best is None else {
                "best": self.warm_start_best, "score": self.warm_start_score,
                "improvement": self.improvement,
                "scores": {c.warm_start: c.score for c in self.trials if c.warm_start}},
            **({"delivery": self.delivery.to_dict()} if self.delivery is not None else {}),
        }


def build_result(st: optuna.Study, space: SearchSpace, budget: Budget, strategy: str,
                 objective: str, seconds: float, failed: int = 0) -> SearchResult:
    """Collect a :class:`SearchResult` from everything the study holds."""
    found = [c for t in st.get_trials(deepcopy=False,
                                      states=(TrialState.COMPLETE, TrialState.PRUNED))
             if (c := Candidate.from_trial(t)) is not None]
    cands = [c for c in found if not c.stopped]
    if not cands:
        raise NaspruneError(f"study '{st.study_name}' has no completed trials")
    cands.sort(key=lambda c: c.number)
    if objective == "multi":
        numbers = {t.number for t in st.best_trials}
        pareto = sorted((c for c in cands if c.number in numbers), key=lambda c: c.values[1])
        best = max(pareto, key=lambda c: (c.score, -c.values[1], -c.number))
    else:
        pareto = []
        # The highest rung reached first (a higher rung's score is the more reliable),
        # then the score there; the earliest of equal scores.
        best = max(cands, key=_rank)
    result = SearchResult(best=best, trials=cands, study=st, pareto=pareto, seconds=seconds,
                          strategy=strategy, objective=objective, budget=budget, space=space,
                          failed=failed, stopped=[c for c in found if c.stopped])
    warm = [c for c in cands if c.warm_start is not None]
    if warm:  # ranked like the best, so with rungs both scores are from the same rung
        top = max(warm, key=_rank)
        result.warm_start_best, result.warm_start_score = top.warm_start, top.score
        result.improvement = best.score - top.score
    return result


def _rank(c: Candidate) -> tuple[int, float, int]:
    return (c.rung, c.score, -c.number)


__all__ = ["Candidate", "SearchResult", "build_result"]
