"""``random`` — keep ratios drawn uniformly in the space: the baseline every strategy must beat.

Not Optuna's ``RandomSampler``: every draw is seeded from ``(seed, trial.number)`` (as in the
learned samplers), so a resumed study does not replay its first proposals, parallel workers
sharing a seed still propose different vectors, and the learned strategies' random warm-up
trials are the very same vectors as random's — a paired comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nasprune.search.strategies.learned import LearnedSampler, construct


class UniformSampler(LearnedSampler):
    """Uniform keep vectors in ``[lower, upper]``; never learns."""

    def __init__(self, space: Any, seed: int | None = None) -> None:
        super().__init__(space, seed=seed, warmup=None)

    def warmup_trials(self, study: Any) -> int:
        return np.iinfo(np.int64).max  # always the warm-up draw: uniform


def make(space: Any, seed: int | None = None, **options: Any) -> UniformSampler:
    """Factory for the ``random`` strategy (no options)."""
    return construct(UniformSampler, space, seed, options)
