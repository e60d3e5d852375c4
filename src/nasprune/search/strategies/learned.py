"""Shared machinery of the learned samplers (``rl``, ``gan``, ``predictor``).

Each learned strategy is an Optuna sampler that proposes one keep ratio per channel group.
Everything it knows is rebuilt from the study's completed trials at every proposal — the
projected keep vector stored in ``trial.user_attrs["keep"]`` and the trial's score — so a
study resumed from storage, or shared by many workers, continues where it was. Models may be
cached between proposals, but only as a speed-up: they are (re)trained on what the storage
holds whenever the number of completed trials changes.

Scores: single-objective studies use ``trial.value``; multi-objective studies use the first
objective (the proxy accuracy, by the search's convention), sign-flipped where it is
minimised, so "higher is better" everywhere below.

Reproducibility: every random draw is seeded from ``(seed, trial.number)``, so the same seed
and the same sequence of trials give the same proposals on CPU.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import TrialState

from nasprune.errors import NaspruneError

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial


@dataclass
class History:
    """The completed trials as arrays: ``keep`` (n, dim) projected keep ratios, ``score`` (n,)."""

    keep: np.ndarray
    score: np.ndarray
    numbers: np.ndarray

    def __len__(self) -> int:
        return len(self.score)

    def unit(self, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """Keep ratios rescaled to [0, 1] per group (the samplers' internal coordinates)."""
        return to_unit(self.keep, lower, upper)


def to_unit(keep: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    width = np.where(upper > lower, upper - lower, 1.0)
    return np.clip((np.asarray(keep, dtype=np.float64) - lower) / width, 0.0, 1.0)


def from_unit(u: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    return lower + np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0) * (upper - lower)


def score_sign(study: Study) -> float:
    """+1 when the first objective is maximised, -1 when minimised."""
    return 1.0 if study.directions[0] == StudyDirection.MAXIMIZE else -1.0


def trial_score(trial: FrozenTrial, sign: float) -> float | None:
    """The trial's score (first objective, higher is better) or None when it has none."""
    values = trial.values
    if not values or values[0] is None or not math.isfinite(values[0]):
        return None
    return sign * float(values[0])


def completed_history(study: Study, space: Any) -> History:
    """Rebuild the sampler's data from the storage: completed trials with a keep vector.

    Trials without ``user_attrs["keep"]`` (e.g. added by hand) fall back to their raw params.
    """
    sign = score_sign(study)
    names = [space.param_name(i) for i in range(space.dim)]
    keeps, scores, numbers = [], [], []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        score = trial_score(t, sign)
        if score is None:
            continue
        keep = t.user_attrs.get("keep")
        if keep is None or len(keep) != space.dim:
            if not all(n in t.params for n in names):
                continue
            keep = space.keep_from_params(t.params)
        keeps.append(np.asarray(keep, dtype=np.float64))
        scores.append(score)
        numbers.append(t.number)
    order = np.argsort(numbers, kind="stable")
    keep_arr = np.asarray(keeps, dtype=np.float64).reshape(len(keeps), space.dim)
    return History(keep_arr[order], np.asarray(scores)[order], np.asarray(numbers)[order])


def study_budget(study: Study) -> Any:
    """The search budget if the study stored one (``study.user_attrs["budget"]``), else None.

    Accepts a ``Budget`` or its dict form; anything unreadable counts as unknown.
    """
    raw = study.user_attrs.get("budget")
    if isinstance(raw, dict):
        from nasprune.search.budget import Budget

        try:
            return Budget(**{k: v for k, v in raw.items() if v is not None})
        except (TypeError, NaspruneError):  # not a budget we can read: treat as unknown
            return None
    return raw


def budget_fraction(budget: Any, kind: str) -> float | None:
    """``budget.macs`` / ``budget.params`` as a float, None when not set."""
    value = getattr(budget, kind, None) if budget is not None else None
    return None if value is None else float(value)


def seed_for(seed: int | None, *parts: int) -> int | None:
    """A derived 32-bit seed (None stays None: fresh entropy)."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


@contextlib.contextmanager
def tiny_torch(seed: int | None) -> Iterator[None]:
    """Run torch code on a seeded private RNG with one intra-op thread, then restore both.

    The samplers' nets are tiny: extra threads only add contention (measured 40× slower
    with 2 threads on a busy 2-core machine), and a private RNG keeps the caller's untouched.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63))
            yield
    finally:
        torch.set_num_threads(threads)


def mlp(sizes: list[int], final: torch.nn.Module | None = None) -> torch.nn.Sequential:
    """A small fully connected net: Linear-ReLU stacks, optional final activation."""
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    if final is not None:
        layers.append(final)
    return torch.nn.Sequential(*layers)


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if not (value > 0 or (allow_zero and value == 0)) or not math.isfinite(value):
        raise NaspruneError(f"strategy option {name} must be {'≥' if allow_zero else '>'} 0, got {value}")


def check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise NaspruneError(f"strategy option {name} must be in [0, 1], got {value}")


class LearnedSampler(BaseSampler):
    """Base class: relative search space = one float per group, random warm-up, fallbacks.

    Subclasses implement :meth:`propose` returning a keep vector in ``[lower, upper]``.
    """

    def __init__(self, space: Any, seed: int | None = None, warmup: int | None = None) -> None:
        if getattr(space, "dim", 0) < 1:
            raise NaspruneError("the search space has no prunable groups")
        if warmup is not None and warmup < 0:
            raise NaspruneError(f"strategy option warmup must be ≥ 0, got {warmup}")
        self.space = space
        self.seed = seed
        self.warmup = warmup
        self.lower = np.asarray(space.lower, dtype=np.float64)
        self.upper = np.asarray(space.upper, dtype=np.float64)
        self.names = [space.param_name(i) for i in range(space.dim)]
        self._fallback = RandomSampler(seed=seed_for(seed, 7))
        # Optuna's n_jobs threads share one sampler: one proposal (and training) at a time.
        self._lock = threading.Lock()

    # --- optuna interface ------------------------------------------------------------
    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {
            name: FloatDistribution(float(lo), float(hi))
            for name, lo, hi in zip(self.names, self.lower, self.upper, strict=True)
        }

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        history = completed_history(study, self.space)
        rng = np.random.default_rng(seed_for(self.seed, trial.number))
        if len(history) < self.warmup_trials(study):
            keep = from_unit(rng.random(self.space.dim), self.lower, self.upper)
        else:
            with self._lock:
                keep = self.propose(study, trial, history, rng)
        keep = np.clip(np.asarray(keep, dtype=np.float64), self.lower, self.upper)
        return {
            name: float(keep[i]) for i, name in enumerate(self.names) if name in search_space
        }

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        # Parallel threads in one process: proposals already differ by trial.number.
        self._fallback.reseed_rng()

    # --- for subclasses ----------------------------------------------------------------
    def warmup_trials(self, study: Study) -> int:
        """Random proposals before learning starts (option ``warmup``; default 10)."""
        return 10 if self.warmup is None else self.warmup

    def propose(
        self, study: Study, trial: FrozenTrial, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        raise NotImplementedError


def construct(cls: type, space: Any, seed: int | None, options: dict[str, Any]) -> Any:
    """Instantiate a sampler class, turning unknown option names into a clear user error."""
    import inspect

    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "space", "seed")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        from nasprune.registry import did_you_mean

        raise NaspruneError(
            f"unknown option '{unknown[0]}' for {cls.__name__}: "
            f"{did_you_mean(unknown[0], valid) if valid else 'it takes no options'}"
        )
    return cls(space, seed=seed, **options)
