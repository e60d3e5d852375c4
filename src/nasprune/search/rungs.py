"""Multi-fidelity scoring: the proxy in rungs, with early stopping of the losers.

One cheap score on a small validation subset is noisy, and a search that keeps the best of
many noisy scores overstates its winner (selection on noise). Successive halving (Jamieson &
Talwalkar 2016; ASHA, Li et al. 2020) and EvoPress's staged selection spend more effort on
the few candidates that matter: every candidate gets rung 0 (adaptive BN + the task's score
on the first validation images); one that is among the best ``1/eta`` of all candidates
scored so far at a rung goes on to the next — a few more fine-tuning steps of the pruned
network on the proxy's fixed training batches, then a score on more validation images — and
the others stop early (Optuna state PRUNED; Optuna calls this "pruning", nasprune calls it
early stopping and keeps "prune" for networks). The search picks by the highest rung
reached, then by the score there.

A rung is ``val_size:finetune_steps``; ``"1000:0,4000:50"`` means "adaptive BN and 1,000
images for everyone, then 50 steps and 4,000 images for the best third". Fine-tuning steps
and validation images only grow from rung to rung: a rung continues the previous rung's
network (deterministic and seeded, so a candidate's rung scores depend only on its ratios).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from nasprune.errors import NaspruneError
from nasprune.validate import check_count

ETA = 3.0  # keep the best third at each rung, successive halving's usual factor
# rungs="auto" (the default of search()): rungs when the budget wrecks the network. On the
# shared ResNet-20 (BENCHMARKS.md, issue 13's peer table) the best one-knob network kept
# 45 % of the unpruned proxy score (0.360 of 0.807) at 30 % of the MACs, where rungs
# 1000:0,4000:30 gained +0.98 pp after fine-tuning on 3 of 3 seeds, and 77 % at 50 %,
# where they lost 0.79 pp: when adaptive BN alone leaves little of the network, a short
# fine-tune must rank the candidates. Two budgets on one network chose 60 %. The rungs are
# the ones measured there (at least 1,000 samples for everyone, 4,000 for the best third
# after 30 steps: Spearman 0.988 with the fine-tuned truth, 0.964 on 1,000 samples).
AUTO = "auto"
AUTO_BELOW = 0.6
AUTO_VAL, AUTO_TOP_VAL, AUTO_STEPS = 1000, 4000, 30


@dataclass(frozen=True)
class Rung:
    """One fidelity: score on the first ``val_size`` validation samples after
    ``finetune_steps`` SGD steps (in all, counted from the freshly pruned network)."""

    val_size: int
    finetune_steps: int


@dataclass(frozen=True)
class Rungs:
    """The rungs of a multi-fidelity proxy and the share (``1/eta``) that advances."""

    levels: tuple[Rung, ...]
    eta: float = ETA

    def __post_init__(self) -> None:
        if not self.levels:
            raise NaspruneError("rungs: give at least one VAL_SIZE:STEPS rung")
        for r in self.levels:
            check_count("a rung's val_size", r.val_size, low=1)
            check_count("a rung's finetune_steps", r.finetune_steps)
        for a, b in zip(self.levels, self.levels[1:], strict=False):
            if b.val_size < a.val_size or b.finetune_steps < a.finetune_steps or a == b:
                raise NaspruneError(
                    f"rungs must grow: {_text(b)} after {_text(a)} (validation images and "
                    "fine-tuning steps never shrink, and each rung adds some)")
        if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) \
                or not math.isfinite(self.eta) or self.eta <= 1:
            raise NaspruneError(f"rungs: eta must be a number > 1 (the best 1/eta advance), "
                                f"got {self.eta!r}")

    @classmethod
    def parse(cls, text: str, eta: float = ETA) -> Rungs:
        """``"1000:0,4000:50"`` → two rungs (validation samples : fine-tuning steps)."""
        levels = []
        for part in str(text).split(","):
            fields = part.strip().split(":")
            try:
                if len(fields) != 2:
                    raise ValueError
                levels.append(Rung(int(fields[0]), int(fields[1])))
            except ValueError:
                raise NaspruneError(f"rungs: '{part.strip()}' is not VAL_SIZE:STEPS (e.g. "
                                    "--rungs 1000:0,4000:50)") from None
        return cls(tuple(levels), eta)

    def text(self) -> str:
        """The ``VAL_SIZE:STEPS,...`` spelling (what the study and the result record)."""
        return ",".join(_text(r) for r in self.levels)

    @property
    def top(self) -> Rung:
        return self.levels[-1]


def _text(r: Rung) -> str:
    return f"{r.val_size}:{r.finetune_steps}"


def as_rungs(value: Any, eta: float = ETA, auto: bool = False) -> Rungs | str | None:
    """None, ``""`` or ``"off"``: single fidelity; a :class:`Rungs`; or its text spelling;
    with ``auto``, also ``"auto"`` (returned as :data:`AUTO`, for :func:`auto_rungs`)."""
    if value is None or isinstance(value, Rungs):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word == AUTO:
            if not auto:
                raise NaspruneError("rungs='auto' is decided by search() (it scores the "
                                    "warm start first): give a Proxy explicit rungs or none")
            return AUTO
        return None if word in ("", "off", "none") else Rungs.parse(value, eta)
    raise NaspruneError(f"rungs must be text such as '1000:0,4000:50', got {value!r}")


def auto_rungs(val_size: int, unpruned: float, best_warm: float,
               eta: float = ETA) -> Rungs | None:
    """The rungs ``rungs="auto"`` scores in when the best one-knob network at the budget
    keeps less than :data:`AUTO_BELOW` of the unpruned model's proxy score, else None
    (single fidelity): ``V:0,4V:30`` with ``V`` = ``val_size``, at least 1,000 (a data
    set with fewer validation samples scores on all it has). Only a positive score, higher
    is better (accuracy and the like), is read as a fraction: for others rungs stay off."""
    if not unpruned > 0 or best_warm >= AUTO_BELOW * unpruned:
        return None
    first = max(val_size, AUTO_VAL)
    return Rungs((Rung(first, 0), Rung(max(4 * first, AUTO_TOP_VAL), AUTO_STEPS)), eta)


def advances(trial: optuna.Trial, rung: int, score: float, eta: float) -> bool:
    """Successive halving's rule: ``score`` is among the best ``ceil(n / eta)`` of the ``n``
    scores the study holds at ``rung`` (this one included; ties go to the newcomer).

    The best candidate so far always advances, so the top rung always sees it.
    """
    others = [t.user_attrs["rung_scores"][rung]
              for t in trial.study.get_trials(deepcopy=False, states=(
                  TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
              if t.number != trial.number and len(t.user_attrs.get("rung_scores", ())) > rung]
    better = sum(s > score for s in others)
    return better < math.ceil((len(others) + 1) / eta)


def score_in_rungs(trial: optuna.Trial, proxy: Any, ratios: dict[str, float],
                   report: bool = True) -> float:
    """Score ``ratios`` rung by rung (``proxy.rungs``); the top rung's score, or
    ``optuna.TrialPruned`` at the first rung the candidate loses.

    Each rung's score is stored at once (user attr ``rung_scores``, and ``rung``: the index
    of the last one reached), so an early-stopped trial keeps what it scored;
    ``report``: also ``trial.report`` it (single-objective studies: the Optuna dashboard
    and TPE read intermediate values).
    """
    scores: list[float] = []
    for i, value in enumerate(proxy.rung_scores(ratios)):
        if not math.isfinite(value):
            raise NaspruneError(f"the proxy returned a non-finite score {value} at rung {i}")
        scores.append(value)
        trial.set_user_attr("rung_scores", scores)
        trial.set_user_attr("rung", i)
        if report:
            trial.report(value, step=i)
        if i + 1 < len(proxy.rungs.levels) and not advances(trial, i, value, proxy.rungs.eta):
            raise optuna.TrialPruned(f"stopped early at rung {i} (score {value:.4f})")
    return scores[-1]


__all__ = ["AUTO", "AUTO_BELOW", "ETA", "Rung", "Rungs", "advances", "as_rungs", "auto_rungs",
           "score_in_rungs"]
