"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch

# The test models are tiny: one intra-op thread per process is faster than two fighting for
# the cores (pytest-xdist runs one process per core), and it keeps timings stable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits():
    import nasprune

    return nasprune.load_dataset("digits")
