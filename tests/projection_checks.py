"""The projection contract every search space meets, shared by the spaces' tests."""

from __future__ import annotations

import numpy as np


def assert_projected_onto_budget(space, raw: np.ndarray, keep: np.ndarray, budget) -> None:
    """``keep`` (``space.project(raw, budget)``) lies within the bounds, meets every limit of
    ``budget`` and sits on it: the binding limit is at least 99 % used."""
    assert np.all(keep >= space.lower - 1e-12) and np.all(keep <= space.upper + 1e-12)
    macs_f, params_f = space.fractions(keep)
    binding = []
    if budget.macs is not None:
        assert macs_f <= budget.macs
        binding.append(macs_f / budget.macs)
    if budget.params is not None:
        assert params_f <= budget.params
        binding.append(params_f / budget.params)
    assert max(binding) >= 0.99, (raw, keep, macs_f, params_f)
