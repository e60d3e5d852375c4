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


@pytest.fixture(scope="session")
def trained_digits_cnn(digits):
    """The default digits CNN trained for 5 epochs (seed 0), for tests that only read it."""
    import nasprune

    torch.manual_seed(0)
    model = nasprune.create_model("digitscnn", in_channels=1)
    nasprune.fit(model, digits, epochs=5, progress=False)
    return model


@pytest.fixture(scope="session")
def digits_cnn_checkpoint(digits, tmp_path_factory):
    """A briefly trained (3 epochs) narrow digits CNN saved to disk, so candidates' scores
    differ: the base of the subprocess search, crash and worker tests."""
    import nasprune

    torch.manual_seed(0)
    model = nasprune.create_model("digitscnn", in_channels=1, width=8)
    nasprune.fit(model, digits, epochs=3, progress=False, seed=0, device="cpu")
    return nasprune.save(model, tmp_path_factory.mktemp("ck") / "base",
                         meta={"data": "digits", "input_shape": [1, 8, 8]})
