"""``rl`` — an AMC-style DDPG agent that walks the channel groups and picks a keep ratio each.

After He et al., "AMC: AutoML for Model Compression" (ECCV 2018). One trial is one episode:
the agent visits the groups in order; its state at group ``i`` is the group's embedding
(``space.features()[i]``, min-max scaled over groups) plus the fraction of the original MACs
already removed by the earlier groups, the fraction the remaining groups could still remove,
and the previous action. The action is the group's keep ratio (the actor's sigmoid output
scaled to the group's bounds). Every step of an episode gets the episode's reward — the
trial's score minus a moving-average baseline, divided by the scores' spread — as in AMC.

The replay buffer is rebuilt from the study's completed trials at every proposal (the
projected keep vectors the objective stored), so a resumed or shared study trains on all of
it. The actor/critic and their target networks (soft updates, rate ``tau``; discount 1 as in
AMC, so the critic's value at a step sums the rewards still to come) are cached and trained
``updates_per_trial`` more DDPG updates per trial added since the last proposal (at most
``max_updates`` at once): a resumed process starts from fresh networks trained on the whole
buffer, so its proposals are equally informed but not bit-identical to an uninterrupted run.
Exploration adds truncated-normal noise (σ = ``sigma``, AMC's 0.5) that decays by
``sigma_decay`` (0.95) per episode after the random warm-up. When the study records a MACs
budget, each action is clamped while walking so that the budget stays reachable (AMC's action
constraint); the objective then projects the vector exactly onto the budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.stats import truncnorm

from nasprune.search.strategies.learned import (
    History,
    LearnedSampler,
    budget_fraction,
    check_fraction,
    check_positive,
    construct,
    from_unit,
    mlp,
    seed_for,
    study_budget,
    tiny_torch,
    to_unit,
)

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial


class _Critic(torch.nn.Module):
    def __init__(self, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp([state_dim + 1, hidden, hidden, 1])

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([state, action], dim=1)).squeeze(1)


class DDPGSampler(LearnedSampler):
    """DDPG over per-group keep ratios; see the module docstring for the formulation."""

    def __init__(
        self,
        space: Any,
        seed: int | None = None,
        warmup: int | None = None,
        hidden: int = 64,
        actor_lr: float = 1e-3,
        critic_lr: float = 1e-3,
        tau: float = 0.01,
        discount: float = 1.0,
        sigma: float = 0.5,
        sigma_decay: float = 0.95,
        updates_per_trial: int = 50,
        max_updates: int = 2000,
        batch_size: int = 64,
        baseline_alpha: float = 0.95,
        constrain: bool = True,
    ) -> None:
        super().__init__(space, seed, warmup)
        for name, value in (("hidden", hidden), ("actor_lr", actor_lr), ("critic_lr", critic_lr),
                            ("tau", tau), ("updates_per_trial", updates_per_trial),
                            ("max_updates", max_updates), ("batch_size", batch_size)):
            check_positive(name, value)
        check_positive("sigma", sigma, allow_zero=True)
        for name, value in (("discount", discount), ("sigma_decay", sigma_decay),
                            ("baseline_alpha", baseline_alpha)):
            check_fraction(name, value)
        self.hidden = int(hidden)
        self.actor_lr, self.critic_lr, self.tau, self.discount = actor_lr, critic_lr, tau, discount
        self.sigma, self.sigma_decay = sigma, sigma_decay
        self.updates_per_trial, self.max_updates = int(updates_per_trial), int(max_updates)
        self.batch_size, self.baseline_alpha, self.constrain = int(batch_size), baseline_alpha, constrain
        self.static = _scaled_features(np.asarray(space.features(), dtype=np.float64), space.dim)
        self.state_dim = self.static.shape[1] + 3
        self._base = float(space.base_macs)
        self._walk_cache: dict[tuple, np.ndarray] = {}
        self._nets: dict[str, Any] | None = None
        self._trained_on = 0
        self._study_key: tuple | None = None

    # --- states ----------------------------------------------------------------------
    def _macs(self, keep: np.ndarray) -> float:
        return float(self.space.cost(keep)[0])

    def _dynamic(self, prefix: np.ndarray, i: int) -> list[float]:
        """[MACs removed so far, MACs the groups still to come could remove, previous action]."""
        full = self._macs(np.concatenate([prefix[:i], self.upper[i:]]))
        least = self._macs(np.concatenate([prefix[:i], self.lower[i:]]))
        prev = 1.0 if i == 0 else float(to_unit(prefix[i - 1], self.lower[i - 1], self.upper[i - 1]))
        return [1.0 - full / self._base, (full - least) / self._base, prev]

    def _episode_states(self, keep: np.ndarray) -> np.ndarray:
        key = tuple(np.round(keep, 12))
        states = self._walk_cache.get(key)
        if states is None:
            states = np.stack([
                np.concatenate([self.static[i], self._dynamic(keep, i)]) for i in range(self.space.dim)
            ])
            self._walk_cache[key] = states
        return states

    def _buffer(self, history: History) -> dict[str, torch.Tensor]:
        """Transitions of every stored episode; reward = baseline-centred, scaled trial score."""
        dim = self.space.dim
        baseline = history.score[0]
        for s in history.score[1:]:
            baseline = self.baseline_alpha * baseline + (1 - self.baseline_alpha) * s
        scale = float(np.std(history.score)) or 1.0
        states, actions, rewards, nexts, notdone = [], [], [], [], []
        for keep, score in zip(history.keep, history.score, strict=True):
            s = self._episode_states(keep)
            states.append(s)
            actions.append(to_unit(keep, self.lower, self.upper))
            rewards.append(np.full(dim, (score - baseline) / scale))
            nexts.append(np.concatenate([s[1:], np.zeros((1, s.shape[1]))]))
            notdone.append(np.r_[np.ones(dim - 1), 0.0])
        as_t = lambda xs: torch.as_tensor(np.concatenate(xs), dtype=torch.float32)  # noqa: E731
        return {"s": as_t(states), "a": as_t(actions)[:, None], "r": as_t(rewards),
                "s2": as_t(nexts), "nd": as_t(notdone)}

    # --- networks --------------------------------------------------------------------
    def _init_nets(self) -> dict[str, Any]:
        with tiny_torch(seed_for(self.seed, 1)):
            actor = mlp([self.state_dim, self.hidden, self.hidden, 1], torch.nn.Sigmoid())
            critic = _Critic(self.state_dim, self.hidden)
        actor_t, critic_t = _clone(actor), _clone(critic)
        return {
            "actor": actor, "critic": critic, "actor_t": actor_t, "critic_t": critic_t,
            "opt_a": torch.optim.Adam(actor.parameters(), lr=self.actor_lr),
            "opt_c": torch.optim.Adam(critic.parameters(), lr=self.critic_lr),
        }

    def _train(self, study: Study, history: History) -> None:
        key = (study.study_name, id(study._storage))
        n = len(history)
        if self._nets is None or key != self._study_key or n < self._trained_on:
            self._nets, self._trained_on, self._study_key = self._init_nets(), 0, key
        steps = min(self.max_updates, self.updates_per_trial * (n - self._trained_on))
        if steps <= 0:
            return
        buf = self._buffer(history)
        nets = self._nets
        size = len(buf["r"])
        rng = np.random.default_rng(seed_for(self.seed, 2, n))
        with tiny_torch(seed_for(self.seed, 3, n)):
            for _ in range(steps):
                idx = torch.as_tensor(rng.integers(0, size, min(self.batch_size, size)))
                s, a, r, s2, nd = (buf[k][idx] for k in ("s", "a", "r", "s2", "nd"))
                with torch.no_grad():
                    target = r + self.discount * nd * nets["critic_t"](s2, nets["actor_t"](s2))
                loss_c = torch.nn.functional.mse_loss(nets["critic"](s, a), target)
                nets["opt_c"].zero_grad()
                loss_c.backward()
                nets["opt_c"].step()
                loss_a = -nets["critic"](s, nets["actor"](s)).mean()
                nets["opt_a"].zero_grad()
                loss_a.backward()
                nets["opt_a"].step()
                _soft_update(nets["actor_t"], nets["actor"], self.tau)
                _soft_update(nets["critic_t"], nets["critic"], self.tau)
        self._trained_on = n

    # --- proposal --------------------------------------------------------------------
    def propose(
        self, study: Study, trial: FrozenTrial, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        self._train(study, history)
        episodes_after_warmup = max(0, len(history) - self.warmup_trials(study))
        sigma = self.sigma * self.sigma_decay**episodes_after_warmup
        target = budget_fraction(study_budget(study), "macs") if self.constrain else None
        keep = self.upper.copy()
        actor = self._nets["actor"]
        for i in range(self.space.dim):
            state = np.concatenate([self.static[i], self._dynamic(keep, i)])
            with tiny_torch(None), torch.no_grad():
                mu = float(actor(torch.as_tensor(state, dtype=torch.float32)[None])[0, 0])
            a = _truncated_normal(mu, sigma, rng)
            keep[i] = float(from_unit(a, self.lower[i], self.upper[i]))
            if target is not None:
                keep[i] = min(keep[i], self._reachable_max(keep, i, target))
        return keep

    def _reachable_max(self, keep: np.ndarray, i: int, target: float) -> float:
        """Largest keep for group i such that pruning the rest to their floor meets the budget."""
        limit = target * self._base
        trial = np.concatenate([keep[:i], [self.upper[i]], self.lower[i + 1:]])
        if self._macs(trial) <= limit:
            return float(self.upper[i])
        lo, hi = float(self.lower[i]), float(self.upper[i])
        for _ in range(16):
            mid = 0.5 * (lo + hi)
            trial[i] = mid
            lo, hi = (mid, hi) if self._macs(trial) <= limit else (lo, mid)
        return lo


def _scaled_features(features: np.ndarray, dim: int) -> np.ndarray:
    """Min-max scale each feature column over the groups (constant columns become 0)."""
    features = features.reshape(dim, -1)
    lo, hi = features.min(axis=0), features.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (features - lo) / span


def _truncated_normal(mu: float, sigma: float, rng: np.random.Generator) -> float:
    """A draw from N(mu, sigma²) truncated to [0, 1] (AMC's exploration noise)."""
    mu = min(max(mu, 0.0), 1.0)
    if sigma <= 0:
        return mu
    a, b = (0.0 - mu) / sigma, (1.0 - mu) / sigma
    return float(truncnorm.rvs(a, b, loc=mu, scale=sigma, random_state=rng))


def _clone(net: torch.nn.Module) -> torch.nn.Module:
    import copy

    clone = copy.deepcopy(net)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def _soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.mul_(1 - tau).add_(s, alpha=tau)


def make(space: Any, seed: int | None = None, **options: Any) -> DDPGSampler:
    """Factory for the ``rl`` strategy (options: see :class:`DDPGSampler`)."""
    return construct(DDPGSampler, space, seed, options)
