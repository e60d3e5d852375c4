"""Data-parallel fine-tuning under torchrun: 2 CPU processes (gloo) against one process.

Two ranks with batch B must train exactly like one process with batch 2B: same permutation,
rank r taking positions r::2 of each global batch, DDP averaging the two per-rank mean
gradients into the global mean. The equality run uses the digits CNN with its BatchNorm
layers replaced by GroupNorm (per-sample statistics): BatchNorm normalises each rank's
half-batch with that half's statistics (SyncBatchNorm, which would share them, needs GPUs),
so with BN the two runs legitimately differ. The second run keeps BN and checks the ranks
still end identical. Augmentation stays on (digits crops by 1 pixel): its draws are made for
the whole global batch and sliced per rank, so it matches the single run too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import nasprune

pytestmark = pytest.mark.slow

B, EPOCHS, SEED, LR = 32, 2, 3, 0.05

SCRIPT = """
import faulthandler, json, os, sys, torch
faulthandler.dump_traceback_later(150, exit=True)  # a hang fails with its stack, not silence
from torch import nn
import nasprune

B, EPOCHS, SEED, LR, NO_BN, OUT = {B}, {EPOCHS}, {SEED}, {LR}, {no_bn}, {out!r}
data = nasprune.load_dataset("digits")
torch.manual_seed(SEED)
model = nasprune.create_model("digitscnn", in_channels=1)
if NO_BN:
    for name, m in list(model.features.named_children()):
        if isinstance(m, nn.BatchNorm2d):
            model.features[int(name)] = nn.GroupNorm(4, m.num_features)
result = nasprune.fit(model, data, epochs=EPOCHS, batch_size=B, lr=LR, seed=SEED,
                      progress=True, device="cpu")
# Each rank saves its own weights (no second process group: re-creating the default group
# fit created and destroyed can read the old group's rendezvous keys).
rank = int(os.environ["RANK"])
torch.save(model.state_dict(), f"{{OUT}}/state{{rank}}.pt")
if rank == 0:
    with open(OUT + "/history.json", "w") as f:
        json.dump({{"history": result.history, "steps": result.steps,
                   "samples": result.samples}}, f)
"""


def _torchrun(tmp_path: Path, no_bn: bool) -> tuple[list[dict], dict, str]:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(B=B, EPOCHS=EPOCHS, SEED=SEED, LR=LR, no_bn=no_bn,
                                    out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--standalone", str(script)],  # standalone: torchrun picks a free port itself
        env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = [torch.load(tmp_path / f"state{r}.pt") for r in (0, 1)]
    return states, json.loads((tmp_path / "history.json").read_text()), proc.stderr


def _no_bn(model: nn.Module) -> nn.Module:
    for name, m in list(model.features.named_children()):
        if isinstance(m, nn.BatchNorm2d):
            model.features[int(name)] = nn.GroupNorm(4, m.num_features)
    return model


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_ranks_train_like_one_process_with_the_global_batch(tmp_path):
    states, got, stderr = _torchrun(tmp_path, no_bn=True)
    data = nasprune.load_dataset("digits")
    torch.manual_seed(SEED)
    model = _no_bn(nasprune.create_model("digitscnn", in_channels=1))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    single = nasprune.fit(model, data, epochs=EPOCHS, batch_size=2 * B, lr=LR, seed=SEED,
                          progress=False, device="cpu")
    ref = model.state_dict()
    assert _max_diff(states[0], states[1]) == 0.0  # both ranks hold the same weights
    assert _max_diff(states[0], ref) < 1e-4
    assert _max_diff(ref, init) > 1e-3  # training moved the weights
    assert got["steps"] == single.steps == EPOCHS * (len(data.train) // (2 * B))
    assert got["samples"] == single.samples  # global samples, not one rank's
    for mine, theirs in zip(got["history"], single.history, strict=True):
        assert mine["val_acc"] == theirs["val_acc"]  # summed counts over the two val shards
        assert mine["train_acc"] == pytest.approx(theirs["train_acc"], abs=1e-9)
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
    assert single.history[-1]["val_acc"] > 0.3  # it learned (chance is 0.1): the comparison is not vacuous
    # only rank 0 writes its epoch lines
    assert stderr.count(f"epoch {EPOCHS}/{EPOCHS}  loss") == 1


def test_ranks_end_identical_with_batchnorm(tmp_path):
    states, got, _ = _torchrun(tmp_path, no_bn=False)
    assert _max_diff(states[0], states[1]) == 0.0  # weights and averaged BN statistics
    fresh = nasprune.create_model("digitscnn", in_channels=1).state_dict()
    assert _max_diff(states[0], fresh) > 1e-3
    assert len(got["history"]) == EPOCHS and got["history"][-1]["val_acc"] > 0.5
