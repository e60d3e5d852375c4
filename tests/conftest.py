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
    """The default digits CNN trained for 5 epochs (seed 0), in eval mode, for tests that
    only read it."""
    import nasprune

    torch.manual_seed(0)
    model = nasprune.create_model("digitscnn", in_channels=1)
    nasprune.fit(model, digits, epochs=5, progress=False)
    return model.eval()


@pytest.fixture(scope="session")
def trained_narrow_digits_cnn(digits):
    """A narrow (width 8) digits CNN trained briefly (3 epochs, seed 0), in eval mode, so
    candidates' search scores differ: for tests that only read it."""
    import nasprune

    torch.manual_seed(0)
    model = nasprune.create_model("digitscnn", in_channels=1, width=8)
    nasprune.fit(model, digits, epochs=3, progress=False, seed=0, device="cpu")
    return model.eval()


@pytest.fixture(scope="session")
def digits_cnn_checkpoint(trained_narrow_digits_cnn, tmp_path_factory):
    """``trained_narrow_digits_cnn`` saved to disk: the base of the subprocess search, crash
    and worker tests."""
    import nasprune

    return nasprune.save(trained_narrow_digits_cnn, tmp_path_factory.mktemp("ck") / "base",
                         meta={"data": "digits", "input_shape": [1, 8, 8]})


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``nasprune demo`` run once (it takes ~20-30 s): (exit code, stdout, output directory).

    The CLI path covers run_demo as well, so the demo's tests share this one run.
    """
    import contextlib
    import io

    from nasprune.cli import main

    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["demo", "--out", str(out), "--device", "cpu", "--quiet"])
    return rc, printed.getvalue(), out
