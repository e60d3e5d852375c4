"""``gan`` — a generator of keep vectors trained against a discriminator of the best trials.

The "real" data are the top ``top`` fraction (at least two) of the completed trials by score,
as projected keep vectors rescaled to [0, 1] per group; the generator G(z) (a small MLP with
a sigmoid output, scaled to the group bounds) learns to produce vectors the discriminator
cannot tell from them, so it concentrates where the good trials are while the top set keeps
moving as better trials arrive. Both nets are cached and trained ``steps`` more steps (non-
saturating GAN loss, Adam) whenever the study gained completed trials — the real set is
always rebuilt from the storage, so a resumed or shared study trains on all of it.

Proposals: random until ``warmup`` trials are complete; afterwards a fraction ``explore``
of the proposals stays uniform (so the top set can still change region) and the rest are
G(z), z ~ N(0, I), plus a little Gaussian ``jitter`` against mode collapse.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F

from nasprune.search.strategies.learned import (
    History,
    LearnedSampler,
    check_fraction,
    check_positive,
    construct,
    from_unit,
    mlp,
    seed_for,
    tiny_torch,
)

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial


class GANSampler(LearnedSampler):
    """Adversarially trained generator of keep vectors; see the module docstring."""

    def __init__(
        self,
        space: Any,
        seed: int | None = None,
        warmup: int | None = 8,
        top: float = 0.2,
        latent: int = 8,
        hidden: int = 32,
        steps: int = 100,
        batch_size: int = 32,
        lr: float = 2e-3,
        explore: float = 0.1,
        jitter: float = 0.1,
    ) -> None:
        super().__init__(space, seed, warmup)
        for name, value in (("latent", latent), ("hidden", hidden), ("steps", steps),
                            ("batch_size", batch_size), ("lr", lr)):
            check_positive(name, value)
        check_positive("jitter", jitter, allow_zero=True)
        check_fraction("top", top)
        check_fraction("explore", explore)
        if top <= 0:
            check_positive("top", top)
        self.top, self.latent, self.hidden = top, int(latent), int(hidden)
        self.steps, self.batch_size, self.lr = int(steps), int(batch_size), lr
        self.explore, self.jitter = explore, jitter
        self._nets: dict[str, Any] | None = None
        self._trained_on = 0
        self._study_key: tuple | None = None

    def _init_nets(self) -> dict[str, Any]:
        dim = self.space.dim
        with tiny_torch(seed_for(self.seed, 1)):
            gen = mlp([self.latent, self.hidden, self.hidden, dim], torch.nn.Sigmoid())
            disc = mlp([dim, self.hidden, self.hidden, 1])
        betas = (0.5, 0.999)  # the usual GAN setting: less momentum, steadier game
        return {"G": gen, "D": disc,
                "opt_g": torch.optim.Adam(gen.parameters(), lr=self.lr, betas=betas),
                "opt_d": torch.optim.Adam(disc.parameters(), lr=self.lr, betas=betas)}

    def real_set(self, history: History) -> np.ndarray:
        """The best ``top`` fraction of trials (≥ 2) as unit-scaled keep vectors."""
        k = max(2, math.ceil(self.top * len(history)))
        best = np.argsort(-history.score, kind="stable")[:k]
        return history.unit(self.lower, self.upper)[best]

    def _train(self, study: Study, history: History) -> None:
        key = (study.study_name, id(study._storage))
        n = len(history)
        if self._nets is None or key != self._study_key or n < self._trained_on:
            self._nets, self._trained_on, self._study_key = self._init_nets(), 0, key
        if n == self._trained_on:
            return
        real = torch.as_tensor(self.real_set(history), dtype=torch.float32)
        nets = self._nets
        gen, disc = nets["G"], nets["D"]
        rng = np.random.default_rng(seed_for(self.seed, 2, n))
        with tiny_torch(seed_for(self.seed, 3, n)):
            ones = torch.ones(self.batch_size, 1)
            zeros = torch.zeros(self.batch_size, 1)
            for _ in range(self.steps):
                x = real[torch.as_tensor(rng.integers(0, len(real), self.batch_size))]
                fake = gen(torch.randn(self.batch_size, self.latent))
                loss_d = (F.binary_cross_entropy_with_logits(disc(x), ones)
                          + F.binary_cross_entropy_with_logits(disc(fake.detach()), zeros))
                nets["opt_d"].zero_grad()
                loss_d.backward()
                nets["opt_d"].step()
                # Non-saturating generator loss: maximise log D(G(z)).
                loss_g = F.binary_cross_entropy_with_logits(disc(fake), ones)
                nets["opt_g"].zero_grad()
                loss_g.backward()
                nets["opt_g"].step()
        self._trained_on = n

    def propose(
        self, study: Study, trial: FrozenTrial, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        self._train(study, history)
        if rng.random() < self.explore:
            return from_unit(rng.random(self.space.dim), self.lower, self.upper)
        with tiny_torch(seed_for(self.seed, 4, trial.number)), torch.no_grad():
            z = torch.as_tensor(rng.standard_normal((1, self.latent)), dtype=torch.float32)
            u = self._nets["G"](z)[0].double().numpy()
        u = u + self.jitter * rng.standard_normal(self.space.dim)
        return from_unit(u, self.lower, self.upper)


def make(space: Any, seed: int | None = None, **options: Any) -> GANSampler:
    """Factory for the ``gan`` strategy (options: see :class:`GANSampler`)."""
    return construct(GANSampler, space, seed, options)
