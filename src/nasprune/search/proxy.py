"""The proxy score of a candidate: how good is the network pruned to these ratios?

Fine-tuning every candidate is far too slow for a search, and the accuracy of a freshly
pruned network is a poor guide because its BatchNorm statistics belong to the unpruned one.
EagleEye (Li et al., ECCV 2020) showed that re-estimating those statistics on a few training
batches ("adaptive BN") makes the accuracy right after pruning rank candidates the way
fine-tuning would. :class:`Proxy` does exactly that — prune a copy, recalibrate BN,
measure accuracy on a fixed, seeded subset of the *validation* split (never the test split,
so the final test numbers stay untouched by the search) — optionally after a few
fine-tuning steps (:mod:`.proxy_finetune`).
:func:`~nasprune.search.proxy_check.check_proxy` measures how well it ranks candidates
against short fine-tuning.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from nasprune.device import resolve_device
from nasprune.errors import NaspruneError
from nasprune.search._batches import (
    accepts_nhwc,
    head,
    nbytes,
    to_channels_last,
)
from nasprune.search.proxy_finetune import FinetuneRecipe, run_steps
from nasprune.search.rungs import Rungs, as_rungs
from nasprune.task import example_of, first_batches
from nasprune.validate import check_count, check_positive_number


class Proxy:
    """Scores prune-ratio dicts by adaptive BN + the task's score on fixed validation batches.

    ``data`` is a built-in :class:`~nasprune.data.base.Dataset` (the fast in-memory path), a
    :class:`~nasprune.task.Task`, or any re-iterable of batches (a ``DataLoader``).
    ``bn_batches`` training batches re-estimate BatchNorm statistics; ``val_size``
    validation samples (a fixed seeded subset of a Dataset, or the first batches of the
    task's validation batches holding that many samples: shuffle an ordered split once)
    give the score; ``finetune_steps`` > 0 first runs that many fine-tuning steps on the
    training batches:
    ``finetune_optimizer`` at ``finetune_lr`` on the task's loss, with ``distill`` mixed
    with the unpruned model's soft targets (:class:`~.proxy_finetune.FinetuneRecipe`; the
    default, SGD at 0.01, was measured for CNNs). All these batches are drawn once and
    kept in memory (at most ``cache_mb``; ``cached_bytes`` says how much), so every
    candidate is scored on identical data and a candidate's score depends only on its
    ratios (deterministic on CPU). ``criterion``, ``round_to`` and
    ``min_channels`` are passed to :func:`nasprune.prune`. ``channels_last`` (default: for
    a Dataset of images, and for a task of ``(images, targets)`` batches when the model
    takes NHWC images) runs candidates in NHWC layout, ~25–30 % faster on CPU.
    ``progress``: a bar on a terminal while a slow task's batches are drawn.
    ``rungs`` (a :class:`~nasprune.search.rungs.Rungs` or its text, ``"1000:0,4000:50"``):
    the multi-fidelity rungs a search scores in (:mod:`nasprune.search.rungs`); the cache
    then holds the top rung's validation samples and fine-tuning batches too, and every
    lower fidelity scores on the first of those samples.
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
        round_to: int | dict[str, int] | None = None,
        min_channels: int = 1,
        ignored=None,
        finetune_lr: float | None = None,
        seed: int = 0,
        channels_last: bool | None = None,
        cache_mb: float = 2048.0,
        progress: bool = True,
        rungs: Rungs | str | None = None,
        finetune_optimizer: str = "sgd",
        distill: bool = False,
    ) -> None:
        from nasprune.task import as_task, is_dataset

        self._settings = dict(  # what with_rungs() builds the same proxy from
            model=model, data=data, bn_batches=bn_batches, val_size=val_size,
            finetune_steps=finetune_steps, device=device, batch_size=batch_size,
            example_inputs=example_inputs, criterion=criterion, round_to=round_to,
            min_channels=min_channels, ignored=ignored, finetune_lr=finetune_lr, seed=seed,
            channels_last=channels_last, cache_mb=cache_mb, progress=progress,
            finetune_optimizer=finetune_optimizer, distill=distill)
        self.bn_batches = check_count("bn_batches", bn_batches)
        self.val_size = check_count("val_size", val_size, low=1)
        self.finetune_steps = check_count("finetune_steps", finetune_steps)
        self.batch_size = check_count("batch_size", batch_size, low=1)
        self.recipe = FinetuneRecipe(finetune_optimizer, finetune_lr, distill)
        self.cache_mb = check_positive_number("cache_mb", cache_mb)
        self.rungs = as_rungs(rungs)
        self.model = model
        self.data = data
        self.task = as_task(data)
        self.device = resolve_device(device)  # unknown/unavailable devices: a NaspruneError
        self.criterion, self.round_to, self.min_channels = criterion, round_to, min_channels
        self.ignored = ignored
        self.seed = seed
        self.last_seconds = 0.0
        self.calls = 0  # scorings done (with rungs: one per rung a candidate reached)
        in_memory = is_dataset(data)
        # Drawn once: every candidate sees the same BN batches and validation samples.
        need, val_size = max(self.bn_batches, self.finetune_steps), self.val_size
        if self.rungs is not None:
            need = max(need, self.rungs.top.finetune_steps)
            val_size = max(val_size, self.rungs.top.val_size)
        # Lower fidelities score on the first samples of these (a data set's seeded subset
        # of n is the first n of a larger one, so val_size alone draws the same images).
        self._exact_heads = in_memory
        if in_memory:
            self._draw_from_dataset(data, need, val_size)
        else:
            self._draw_from_task(need, val_size, progress)
        self.example_inputs = (example_inputs if example_inputs is not None
                               else example_of(self._val_batches[0]))
        if channels_last is None:
            channels_last = (len(data.input_shape) == 3 if in_memory else
                             accepts_nhwc(model, self._val_batches[0], self.example_inputs))
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self._train_batches = to_channels_last(self._train_batches)
            self._val_batches = to_channels_last(self._val_batches)
        self._heads: dict[int, tuple[list, int]] = {}
        self.val_count = self._val_head(self.val_size)[1]
        self.cached_bytes = nbytes(self._train_batches) + nbytes(self._val_batches)
        # A data-driven criterion (taylor) sees the fixed batches too, not a fresh shuffle.
        self._criterion_data = (data if in_memory
                                else self.task.with_splits(train=self._train_batches))
        if self.cached_bytes > self.cache_mb * 2**20:
            raise NaspruneError(
                f"the proxy's fixed batches take {self.cached_bytes / 2**20:.0f} MB, over "
                f"cache_mb={self.cache_mb:g}: lower val_size, bn_batches or finetune_steps"
                + (" or the top rung" if self.rungs is not None else ""))

    def _draw_from_dataset(self, data, need: int, val_size: int) -> None:
        if len(data.val) == 0:
            raise NaspruneError(f"data set '{data.name}' has an empty validation split")
        loader = data.loader("train", batch_size=self.batch_size, shuffle=True,
                             device=self.device, seed=self.seed, drop_last=False)
        self._train_batches = first_batches(loader, need, f"data set '{data.name}'", "training")
        val = data.val.subset(val_size, seed=self.seed)
        if self.rungs is not None and val is data.val:
            # Split.subset's seeded permutation even where the top rung covers the whole
            # split (which subset returns unshuffled): then the first n samples are
            # subset(n), so a lower rung scores on exactly a proxy of val_size n's images.
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(len(data.val), generator=g)
            val = type(data.val)(data.val.x[idx], data.val.y[idx])
        # 128: larger CPU batches were slower per image (cache) in measurements.
        self._val_batches = list(data.loader(val, batch_size=128, device=self.device))

    def _draw_from_task(self, need: int, val_size: int, progress: bool) -> None:
        from nasprune._progress import ticker
        from nasprune.task import first_samples, to_device

        what = f"task '{self.task.name}'"
        with ticker("proxy: training batches", progress, need) as tick:
            train = first_batches(self.task.split("train"), need, what, "training", tick)
        self._train_batches = [to_device(b, self.device) for b in train]
        with ticker("proxy: validation samples", progress, val_size, "sample") as tick:
            self._val_batches, _ = first_samples(self.task.split("val"), val_size,
                                                 self.device, what, tick)

    def _val_head(self, size: int) -> tuple[list, int]:
        """The cached validation batches holding the first ``size`` samples, and their count."""
        if size not in self._heads:
            self._heads[size] = head(self._val_batches, size, self._exact_heads)
        return self._heads[size]

    # ------------------------------------------------------------------------------------
    def prune(self, ratios: dict[str, float]) -> nn.Module:
        """The model pruned to ``ratios`` (fraction removed per group; a new module on the
        proxy's device)."""
        from nasprune.pruning import prune

        pruned = prune(self.model, self.example_inputs, ratios, criterion=self.criterion,
                       round_to=self.round_to, min_channels=self.min_channels,
                       ignored=self.ignored, data=self._criterion_data)
        pruned = pruned.to(self.device)
        if self.channels_last:
            pruned = pruned.to(memory_format=torch.channels_last)
        return pruned

    def recalibrate(self, model: nn.Module) -> None:
        from nasprune.train.bn import recalibrate_bn

        recalibrate_bn(model, self._train_batches, batches=self.bn_batches,
                       forward=self.task.forward)

    def finetune(self, model: nn.Module, steps: int, first_step: int = 0) -> None:
        """``steps`` steps of the proxy's recipe on the fixed training batches, from
        batch ``first_step`` on (a higher rung continues where the one below stopped)."""
        if steps <= 0:
            return
        torch.manual_seed(self.seed + first_step)
        run_steps(model, self.model, self.task, self._train_batches, steps, first_step,
                  self.recipe)

    @torch.no_grad()
    def accuracy(self, model: nn.Module, val_size: int | None = None) -> float:
        """The task's score (top-1 by default) on the first ``val_size`` (default: the
        proxy's) samples of the fixed validation batches, eval mode."""
        model.eval()
        batches, _ = self._val_head(self.val_size if val_size is None else val_size)
        return self.task.evaluate(model, batches, self.device)

    def with_rungs(self, rungs: Rungs | None) -> Proxy:
        """The same proxy (model, data, settings), scoring in ``rungs``."""
        return Proxy(**{**self._settings, "rungs": rungs})

    def score(self, ratios: dict[str, float]) -> float:
        """The proxy score of the network pruned to ``ratios``, higher is better (a score
        the task minimises is negated)."""
        start = time.perf_counter()
        value = self.score_model(self.prune(ratios), self.finetune_steps, self.val_size)
        self.last_seconds = time.perf_counter() - start
        return value

    def score_model(self, pruned: nn.Module, steps: int, val_size: int,
                    first_step: int = 0) -> float:
        """Fine-tune ``pruned`` in place for ``steps`` steps, re-estimate BN, score it on
        ``val_size`` validation samples; higher is better (as :meth:`score`)."""
        self.finetune(pruned, steps, first_step)
        self.recalibrate(pruned)
        value = self.accuracy(pruned, val_size)
        self.calls += 1
        return value if self.task.maximize else -value

    def rung_scores(self, ratios: dict[str, float]) -> Iterator[float]:
        """The score of ``ratios`` at each of the proxy's rungs in turn (lazily: a search
        stops asking once a candidate loses). Each rung continues the network of the one
        below with the extra fine-tuning steps, so the scores depend only on ``ratios``."""
        if self.rungs is None:
            raise NaspruneError("this proxy has no rungs")
        pruned = self.prune(ratios)
        done = 0
        for r in self.rungs.levels:
            yield self.score_model(pruned, r.finetune_steps - done, r.val_size, first_step=done)
            done = r.finetune_steps


# The class's name before search/evaluate.py became search/proxy.py.
Evaluator = Proxy

__all__ = ["Evaluator", "Proxy"]
