"""The proxy score of a candidate: how good is the network pruned to these ratios?

Fine-tuning every candidate is far too slow for a search, and the accuracy of a freshly
pruned network is a poor guide because its BatchNorm statistics belong to the unpruned one.
EagleEye (Li et al., ECCV 2020) showed that re-estimating those statistics on a few training
batches ("adaptive BN") makes the accuracy right after pruning rank candidates the way
fine-tuning would. :class:`Evaluator` does exactly that — prune a copy, recalibrate BN,
measure accuracy on a fixed, seeded subset of the *validation* split (never the test split,
so the final test numbers stay untouched by the search) — optionally after a few SGD steps.
:func:`check_proxy` measures how well the proxy ranks candidates against short fine-tuning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nasprune.errors import NaspruneError


def _device(device: str | torch.device | None) -> torch.device:
    from nasprune.train.device import resolve_device

    return resolve_device(device)  # unknown/unavailable devices: a NaspruneError


def _positive_int(value: object, what: str, allow_zero: bool = True) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):  # type: ignore[operator]
        low = "≥ 0" if allow_zero else "≥ 1"
        raise NaspruneError(f"{what} must be an integer {low}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


class Evaluator:
    """Scores prune-ratio dicts by adaptive-BN accuracy on a seeded validation subset.

    ``bn_batches`` training batches of ``batch_size`` re-estimate BatchNorm statistics;
    ``val_size`` validation images (a fixed seeded subset, the same for every candidate)
    give the accuracy; ``finetune_steps`` > 0 first runs that many SGD steps on training
    batches. The training batches are drawn once, so a candidate's score depends only on
    its ratios (deterministic on CPU). ``criterion``, ``round_to`` and ``min_channels`` are
    passed to :func:`nasprune.prune`. ``channels_last`` (default: for 4-D image inputs)
    runs the candidates in NHWC memory layout, ~25–30 % faster on CPU for the same result.
    """

    def __init__(
        self,
        model: nn.Module,
        data,
        bn_batches: int = 20,
        val_size: int = 1000,
        finetune_steps: int = 0,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        example_inputs: Any = None,
        criterion: str = "l1",
        round_to: int | None = None,
        min_channels: int = 1,
        ignored=None,
        finetune_lr: float = 0.01,
        seed: int = 0,
        channels_last: bool | None = None,
    ) -> None:
        self.bn_batches = _positive_int(bn_batches, "bn_batches")
        self.val_size = _positive_int(val_size, "val_size", allow_zero=False)
        self.finetune_steps = _positive_int(finetune_steps, "finetune_steps")
        self.batch_size = _positive_int(batch_size, "batch_size", allow_zero=False)
        if not (isinstance(finetune_lr, (int, float)) and math.isfinite(finetune_lr)
                and finetune_lr > 0):
            raise NaspruneError(f"finetune_lr must be a positive number, got {finetune_lr!r}")
        if len(data.val) == 0:
            raise NaspruneError(f"data set '{data.name}' has an empty validation split")
        self.model = model
        self.data = data
        self.device = _device(device)
        self.example_inputs = (example_inputs if example_inputs is not None
                               else data.example_input(1))
        self.criterion, self.round_to, self.min_channels = criterion, round_to, min_channels
        self.ignored = ignored
        self.finetune_lr = float(finetune_lr)
        self.seed = seed
        self.last_seconds = 0.0
        self.calls = 0
        # Drawn once: every candidate sees the same BN batches and validation images.
        train_loader = data.loader("train", batch_size=self.batch_size, shuffle=True,
                                   device=self.device, seed=seed, drop_last=False)
        need = max(self.bn_batches, self.finetune_steps)
        self._train_batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        while len(self._train_batches) < need:
            before = len(self._train_batches)
            for batch in train_loader:
                self._train_batches.append(batch)
                if len(self._train_batches) >= need:
                    break
            if len(self._train_batches) == before:
                raise NaspruneError(f"data set '{data.name}' has an empty training split")
        val = data.val.subset(self.val_size, seed=seed)
        self.val_count = len(val)
        # 128: larger CPU batches were slower per image (cache) in measurements.
        self._val_batches = list(data.loader(val, batch_size=128, device=self.device))
        self.channels_last = (len(data.input_shape) == 3 if channels_last is None
                              else bool(channels_last))
        if self.channels_last:
            fmt = torch.channels_last
            self._train_batches = [(x.contiguous(memory_format=fmt), y)
                                   for x, y in self._train_batches]
            self._val_batches = [(x.contiguous(memory_format=fmt), y)
                                 for x, y in self._val_batches]

    # ------------------------------------------------------------------------------------
    def prune(self, prune_ratios: dict[str, float]) -> nn.Module:
        """The model pruned to ``prune_ratios`` (a new module on the evaluator's device)."""
        from nasprune.pruning import prune

        pruned = prune(self.model, self.example_inputs, prune_ratios, criterion=self.criterion,
                       round_to=self.round_to, min_channels=self.min_channels,
                       ignored=self.ignored, data=self.data)
        pruned = pruned.to(self.device)
        if self.channels_last:
            pruned = pruned.to(memory_format=torch.channels_last)
        return pruned

    def recalibrate(self, model: nn.Module) -> None:
        from nasprune.train.bn import recalibrate_bn

        recalibrate_bn(model, self._train_batches, batches=self.bn_batches)

    def finetune(self, model: nn.Module, steps: int) -> None:
        """``steps`` plain SGD steps (momentum 0.9) on the fixed training batches."""
        if steps <= 0:
            return
        torch.manual_seed(self.seed)
        opt = torch.optim.SGD(model.parameters(), lr=self.finetune_lr, momentum=0.9,
                              weight_decay=5e-4)
        model.train()
        for i in range(steps):
            x, y = self._train_batches[i % len(self._train_batches)]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise NaspruneError(f"proxy fine-tuning diverged: loss is {loss.item()} "
                                    f"at step {i}")
            loss.backward()
            opt.step()
        model.eval()

    @torch.no_grad()
    def accuracy(self, model: nn.Module) -> float:
        """Top-1 accuracy on the fixed validation subset (model in eval mode)."""
        model.eval()
        correct = 0
        for x, y in self._val_batches:
            correct += int((model(x).argmax(1) == y).sum())
        return correct / self.val_count

    def score(self, prune_ratios: dict[str, float]) -> float:
        """The proxy score in [0, 1] of the network pruned to ``prune_ratios``."""
        start = time.perf_counter()
        pruned = self.prune(prune_ratios)
        self.finetune(pruned, self.finetune_steps)
        self.recalibrate(pruned)
        acc = self.accuracy(pruned)
        self.last_seconds = time.perf_counter() - start
        self.calls += 1
        return acc


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan if either side is constant."""
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def check_proxy(evaluator: Evaluator, candidates: Sequence[dict[str, float]],
                finetune_epochs: float = 1, teacher: nn.Module | None = None,
                **finetune_kw) -> dict:
    """Rank agreement of the proxy with briefly fine-tuned accuracy, on ``candidates``.

    Each candidate is scored by ``evaluator`` and, separately, pruned and fine-tuned for
    ``finetune_epochs`` (``nasprune.finetune``) then measured on the same validation
    subset. Returns ``spearman`` (rank correlation), ``proxy`` and ``finetuned`` scores,
    ``n`` and the seconds spent.
    """
    from nasprune.train import finetune

    if len(candidates) < 2:
        raise NaspruneError("check_proxy needs at least 2 candidates")
    epochs = max(1, int(math.ceil(finetune_epochs)))
    kw = {"progress": False, "seed": evaluator.seed, "device": evaluator.device}
    kw.update(finetune_kw)
    if finetune_epochs < 1 and "max_steps" not in kw:
        steps_per_epoch = max(1, len(evaluator.data.train) // kw.get("batch_size", 128))
        kw["max_steps"] = max(1, int(finetune_epochs * steps_per_epoch))
    start = time.perf_counter()
    proxy, tuned = [], []
    for ratios in candidates:
        proxy.append(evaluator.score(ratios))
        pruned = evaluator.prune(ratios)
        finetune(pruned, evaluator.data, epochs=epochs, teacher=teacher, **kw)
        pruned.to(evaluator.device)
        tuned.append(evaluator.accuracy(pruned))
    return {
        "spearman": spearman(proxy, tuned),
        "proxy": proxy,
        "finetuned": tuned,
        "n": len(candidates),
        "finetune_epochs": finetune_epochs,
        "seconds": time.perf_counter() - start,
    }
