"""The coverage check of issue 14: a model is searched at 50 % of its MACs, pruned at the
searched ratios, still runs with the same output shapes, really has at most half its MACs,
and survives ``nasprune.save`` + ``nasprune.load`` with equal outputs.

Shared by tests/pruning/test_coverage.py (torchvision/timm, vision environment) and
tests/pruning/test_coverage_hf.py (Hugging Face, main environment). Inputs are real
images — scikit-learn's digits, upscaled and repeated to RGB — or real text tokens; the
weights are random (nothing can be downloaded), so the searched score only ranks
candidates: what is checked is the mechanics, on numbers a defect would break.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import nasprune
from nasprune.metrics import count_macs, count_params
from nasprune.pruning.flow import tensors_in

# The searched ratios are projected onto the budget with the analytic cost model; the
# delivered network is measured. Rounding channels to whole heads/groups can overshoot.
MACS_TOLERANCE = 0.02


def digit_images(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` digits (real 8×8 scans) as 3×size×size images in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(bunch.target), generator=g)[:n]
    x = torch.tensor(bunch.images[pick.numpy()], dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.repeat(1, 3, 1, 1), torch.tensor(bunch.target[pick.numpy()])


def outputs(model: torch.nn.Module, example: Any) -> list[torch.Tensor]:
    """Every tensor the model returns for ``example`` (eval mode, no gradients)."""
    model.eval()
    with torch.no_grad():
        if isinstance(example, dict):
            out = model(**example)
        elif isinstance(example, tuple):
            out = model(*example)
        else:
            out = model(example)
    if hasattr(out, "to_tuple"):  # a Hugging Face ModelOutput
        out = out.to_tuple()
    return tensors_in(out)


def check_coverage(build: Callable[[], torch.nn.Module], example: Any, task: Any,
                   tmp_path: Path, *, same_shapes: bool = True, trials: int = 2,
                   bn_batches: int = 1, val_size: int = 8) -> dict[str, float]:
    """Search at 50 % MACs, prune, and check the pruned model; returns its numbers."""
    model = build().eval()
    start = time.perf_counter()
    result = nasprune.search(model, example, task, strategy="random",
                             target=nasprune.Budget(macs=0.5), trials=trials, seed=0,
                             warm_start=False, verify=False, progress=False,
                             bn_batches=bn_batches, val_size=val_size, device="cpu")
    pruned = nasprune.prune(model, example, result.best.ratios).eval()
    seconds = time.perf_counter() - start
    base_macs, macs = count_macs(model, example), count_macs(pruned, example)
    assert macs <= 0.5 * base_macs * (1 + MACS_TOLERANCE), (macs, base_macs)
    assert count_params(pruned) < count_params(model)
    before, after = outputs(model, example), outputs(pruned, example)
    assert after and all(torch.isfinite(t).all() for t in after)
    if same_shapes:
        assert [t.shape for t in after] == [t.shape for t in before]
    path = nasprune.save(pruned, tmp_path / "pruned")
    back = nasprune.load(path, base=build())
    again = outputs(back, example)
    assert [t.shape for t in again] == [t.shape for t in after]
    for a, b in zip(after, again, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    return {"macs_kept": macs / base_macs, "params_kept": count_params(pruned) /
            count_params(model), "seconds": seconds}
