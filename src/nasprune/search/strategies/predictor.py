"""``predictor`` — a surrogate of the score fitted on finished trials proposes the next vector.

An ensemble of regressors — gradient-boosted trees (``model="gbr"``, default) or a deep
ensemble of small MLPs (``model="mlp"``, as in BANANAS, White et al. 2021) — is fitted on the
completed trials' projected keep vectors (rescaled to [0, 1] per group) and standardised
scores; each member sees a bootstrap resample, so the members' spread estimates the
surrogate's uncertainty. A proposal scores ``candidates`` vectors — uniform draws and, for a
fraction ``mutate``, Gaussian mutations (σ = ``sigma``) of the ``elite`` best trials — by
``mean + kappa · std`` (an upper confidence bound: high predicted score or high uncertainty)
and returns the best; with probability ``epsilon`` it returns a uniform draw instead.

The surrogate is trained on *projected* vectors (what was evaluated), so candidates are
projected onto the budget before they are scored when the study records its budget
(``study.user_attrs["budget"]``); the raw candidate is returned and the objective projects it
to the same vector. Without a recorded budget candidates are scored as they are. The
surrogate is refitted from scratch on the stored trials whenever their number changes, so
proposals depend only on the storage and the seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nasprune.errors import NaspruneError
from nasprune.search.strategies.learned import (
    History,
    LearnedSampler,
    check_fraction,
    check_positive,
    construct,
    from_unit,
    seed_for,
    study_budget,
    tiny_torch,
    to_unit,
)

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial

MODELS = ("gbr", "mlp")


class _GBREnsemble:
    """Gradient-boosted trees, one per bootstrap resample (sklearn)."""

    def __init__(self, members: int, seed: int | None) -> None:
        self.members, self.seed = members, seed

    def fit(self, x: np.ndarray, y: np.ndarray, samples: np.ndarray) -> _GBREnsemble:
        from sklearn.ensemble import GradientBoostingRegressor

        self.models = []
        for m, idx in enumerate(samples):
            reg = GradientBoostingRegressor(n_estimators=50, max_depth=3, learning_rate=0.1,
                                            subsample=0.8, random_state=seed_for(self.seed, m))
            self.models.append(reg.fit(x[idx], y[idx]))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.stack([m.predict(x) for m in self.models])


class _MLPEnsemble:
    """A deep ensemble of small MLPs (as in BANANAS), trained together with batched matmuls.

    Member ``e`` fits its own bootstrap resample (counts as loss weights); full-batch Adam
    with weight decay, so a fit is a few hundred tiny steps.
    """

    def __init__(self, members: int, seed: int | None, hidden: int = 32, steps: int = 300,
                 lr: float = 1e-2, weight_decay: float = 1e-3) -> None:
        self.members, self.seed, self.hidden = members, seed, hidden
        self.steps, self.lr, self.weight_decay = steps, lr, weight_decay

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.matmul(x, self.w[0]) + self.b[0])
        h = torch.relu(torch.bmm(h, self.w[1]) + self.b[1])
        return (torch.bmm(h, self.w[2]) + self.b[2]).squeeze(-1)

    def fit(self, x: np.ndarray, y: np.ndarray, samples: np.ndarray) -> _MLPEnsemble:
        e, n, d = self.members, len(y), x.shape[1]
        counts = np.stack([np.bincount(idx, minlength=n) for idx in samples]).astype(np.float32)
        with tiny_torch(self.seed):
            sizes = [(d, self.hidden), (self.hidden, self.hidden), (self.hidden, 1)]
            self.w = [((torch.rand(e, a, b) * 2 - 1) / a**0.5).requires_grad_() for a, b in sizes]
            self.b = [torch.zeros(e, 1, b, requires_grad=True) for _, b in sizes]
            xt = torch.as_tensor(x, dtype=torch.float32)
            yt = torch.as_tensor(y, dtype=torch.float32)
            wt = torch.as_tensor(counts) / torch.as_tensor(counts).sum(1, keepdim=True)
            opt = torch.optim.AdamW(self.w + self.b, lr=self.lr, weight_decay=self.weight_decay)
            for _ in range(self.steps):
                loss = (wt * (self._forward(xt) - yt) ** 2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        with tiny_torch(0), torch.no_grad():
            return self._forward(torch.as_tensor(x, dtype=torch.float32)).double().numpy()


class PredictorSampler(LearnedSampler):
    """Surrogate-guided proposals with UCB exploration; see the module docstring."""

    def __init__(
        self,
        space: Any,
        seed: int | None = None,
        warmup: int | None = 10,
        model: str = "gbr",
        ensemble: int = 5,
        candidates: int = 256,
        mutate: float = 0.5,
        sigma: float = 0.1,
        elite: int = 5,
        kappa: float = 1.0,
        epsilon: float = 0.05,
        project: bool = True,
    ) -> None:
        super().__init__(space, seed, warmup)
        if model not in MODELS:
            raise NaspruneError(f"predictor model must be one of {', '.join(MODELS)}, got {model!r}")
        for name, value in (("ensemble", ensemble), ("candidates", candidates),
                            ("elite", elite), ("sigma", sigma)):
            check_positive(name, value)
        check_positive("kappa", kappa, allow_zero=True)
        check_fraction("mutate", mutate)
        check_fraction("epsilon", epsilon)
        self.model, self.ensemble, self.candidates = model, int(ensemble), int(candidates)
        self.mutate, self.sigma, self.elite = mutate, sigma, int(elite)
        self.kappa, self.epsilon, self.project = kappa, epsilon, project
        self._fitted: tuple[int, Any] | None = None

    def warmup_trials(self, study: Study) -> int:
        return max(3, super().warmup_trials(study))  # a surrogate needs a few points

    def fit(self, history: History) -> Any:
        """The ensemble fitted on bootstrap resamples of the stored trials."""
        n = len(history)
        if self._fitted is not None and self._fitted[0] == n:
            return self._fitted[1]
        x = history.unit(self.lower, self.upper)
        y = (history.score - history.score.mean()) / (history.score.std() or 1.0)
        rng = np.random.default_rng(seed_for(self.seed, 5, n))
        samples = (rng.integers(0, n, (self.ensemble, n)) if self.ensemble > 1
                   else np.arange(n)[None])
        cls = _GBREnsemble if self.model == "gbr" else _MLPEnsemble
        members = cls(self.ensemble, seed_for(self.seed, 6, n)).fit(x, y, samples)
        self._fitted = (n, members)
        return members

    def candidate_pool(self, history: History, rng: np.random.Generator) -> np.ndarray:
        """Uniform draws plus Gaussian mutations of the ``elite`` best trials (unit space)."""
        dim = self.space.dim
        n_mut = int(round(self.mutate * self.candidates))
        pool = [rng.random((self.candidates - n_mut, dim))]
        if n_mut:
            best = history.unit(self.lower, self.upper)[np.argsort(-history.score)[: self.elite]]
            parents = best[rng.integers(0, len(best), n_mut)]
            pool.append(np.clip(parents + self.sigma * rng.standard_normal((n_mut, dim)), 0, 1))
        return np.concatenate(pool)

    def propose(
        self, study: Study, trial: FrozenTrial, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        if rng.random() < self.epsilon:
            return from_unit(rng.random(self.space.dim), self.lower, self.upper)
        members = self.fit(history)
        raw = from_unit(self.candidate_pool(history, rng), self.lower, self.upper)
        budget = study_budget(study) if self.project else None
        evaluated = raw
        if budget is not None:
            # As the objective does: exact fit for one objective, only scale-down for two.
            exact = len(study.directions) == 1
            evaluated = np.stack([self.space.project(k, budget, exact=exact) for k in raw])
        x = to_unit(evaluated, self.lower, self.upper)
        preds = members.predict(x)
        ucb = preds.mean(axis=0) + self.kappa * preds.std(axis=0)
        return raw[int(np.argmax(ucb))]


def make(space: Any, seed: int | None = None, **options: Any) -> PredictorSampler:
    """Factory for the ``predictor`` strategy (options: see :class:`PredictorSampler`)."""
    return construct(PredictorSampler, space, seed, options)
