"""What a search returns: every evaluated trial as a :class:`Candidate`, the best and the front.

A candidate is read back from the user attrs the objective stored with its trial, so a
result can be rebuilt from any study, finished, resumed or written by other workers.
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
    """One evaluated trial: what was pruned, what it costs and its proxy score."""

    number: int
    ratios: dict[str, float]  # prune ratios (fraction removed) per group
    keep: list[float]  # projected keep ratios, in group order
    macs: int
    params: int
    macs_fraction: float
    params_fraction: float
    score: float
    seconds: float
    values: list[float] = field(default_factory=list)
    latency_ms: float | None = None

    @classmethod
    def from_trial(cls, t: FrozenTrial) -> Candidate | None:
        a = t.user_attrs
        if t.state != TrialState.COMPLETE or "keep" not in a or not t.values:
            return None
        return cls(
            number=t.number, ratios=dict(a["prune_ratios"]), keep=list(a["keep"]),
            macs=int(a["macs"]), params=int(a["params"]),
            macs_fraction=float(a["macs_fraction"]), params_fraction=float(a["params_fraction"]),
            score=float(t.values[0]), seconds=float(a.get("seconds", 0.0)),
            values=[float(v) for v in t.values], latency_ms=a.get("latency_ms"))

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
    delivery: Any = None  # a verify.Delivery after a latency/speed-up search

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
            "seconds": self.seconds,
            "base_macs": self.space.base_macs,
            "base_params": self.space.base_params,
            "pareto": [c.to_dict() for c in self.pareto],
            **({"delivery": self.delivery.to_dict()} if self.delivery is not None else {}),
        }


def build_result(st: optuna.Study, space: SearchSpace, budget: Budget, strategy: str,
                 objective: str, seconds: float, failed: int = 0) -> SearchResult:
    """Collect a :class:`SearchResult` from everything the study holds."""
    cands = [c for t in st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if (c := Candidate.from_trial(t)) is not None]
    if not cands:
        raise NaspruneError(f"study '{st.study_name}' has no completed trials")
    cands.sort(key=lambda c: c.number)
    if objective == "multi":
        numbers = {t.number for t in st.best_trials}
        pareto = sorted((c for c in cands if c.number in numbers), key=lambda c: c.values[1])
        best = max(pareto, key=lambda c: (c.score, -c.values[1], -c.number))
    else:
        pareto = []
        best = max(cands, key=lambda c: (c.score, -c.number))  # earliest of equal scores
    return SearchResult(best=best, trials=cands, study=st, pareto=pareto, seconds=seconds,
                        strategy=strategy, objective=objective, budget=budget, space=space,
                        failed=failed)



__all__ = ["Candidate", "SearchResult", "build_result"]
