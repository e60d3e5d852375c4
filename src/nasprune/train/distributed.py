"""Data-parallel training under ``torchrun``: one process per device, DDP for the steps.

``fit`` asks :func:`session` whether it was launched by ``torchrun`` (``WORLD_SIZE`` > 1).
When it was, each process trains the same model on its own shard of every global batch:
with N processes and ``batch_size`` B the global batch is N·B, and DistributedDataParallel
averages the gradients so one step equals a single-process step on the N·B batch (BatchNorm
statistics excepted: they stay per process, as in PyTorch's DDP by default). Sums behind the
reported metrics are all-reduced, so every rank reports the same numbers. Single-process
runs never touch this module's collectives: :func:`session` yields None and nothing is built.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasprune.errors import NaspruneError


def launched() -> bool:
    """True in a process started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def is_main() -> bool:
    """Whether this process is the one that prints and writes files (rank 0)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, a bare ``cuda`` means this process's GPU (``LOCAL_RANK``)."""
    if launched() and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


@dataclass
class Distributed:
    """This process's place in the group and the collectives the training loop needs."""

    rank: int
    world: int
    device: torch.device

    def wrap(self, model: nn.Module) -> nn.Module:
        """The DDP wrapper the steps call; it broadcasts rank 0's weights on creation."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sums(self, values: list[float]) -> list[float]:
        """Element-wise sums over all ranks (float64, so counts stay exact)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def from_main(self, value: float | None) -> float | None:
        """Rank 0's value on every rank (a score each rank computed on its own)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any (a callback asking to stop)."""
        return bool(self.sums([float(flag)])[0])

    @torch.no_grad()
    def sync_bn_stats(self, model: nn.Module) -> None:
        """Average BatchNorm running statistics, so every rank holds the same state."""
        for m in model.modules():
            if isinstance(m, _BatchNorm) and m.track_running_stats:
                for buf in (m.running_mean, m.running_var):
                    if buf is not None:
                        dist.all_reduce(buf)
                        buf.div_(self.world)


@contextmanager
def session(device: torch.device) -> Iterator[Distributed | None]:
    """The process group for one ``fit`` (None when not launched by torchrun).

    A group the caller already created is used and left alone; one created here (gloo on
    CPU, NCCL on GPUs) is destroyed afterwards. A script that trains more than once should
    call ``torch.distributed.init_process_group`` itself: re-creating a destroyed default
    group in the same torchrun job is unreliable.
    """
    if not launched():
        yield None
        return
    device = local_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="gloo" if device.type == "cpu" else "nccl")
    try:
        yield Distributed(dist.get_rank(), dist.get_world_size(), device)
        if created:
            dist.barrier()  # no rank tears the group down while another still uses it
    finally:
        if created:
            dist.destroy_process_group()


def shard_loader(batches: Iterable, d: Distributed, seed: int) -> Iterable:
    """A user's training batches, one disjoint shard per rank.

    A DataLoader whose sampler is already a DistributedSampler is used as it is. A DataLoader
    over a map-style dataset is rebuilt with a DistributedSampler (same batch size, collate
    and workers; shuffled, seeded by ``seed``, when the original shuffles). Anything else
    cannot be split safely here, so it is an error asking the user to shard it.
    """
    from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler

    if isinstance(batches, DataLoader):
        if isinstance(batches.sampler, DistributedSampler):
            return batches
        ds = batches.dataset
        if not isinstance(ds, IterableDataset) and batches.batch_size is not None:
            sampler = DistributedSampler(ds, num_replicas=d.world, rank=d.rank, seed=seed,
                                         shuffle=isinstance(batches.sampler, RandomSampler),
                                         drop_last=batches.drop_last)
            return DataLoader(ds, batch_size=batches.batch_size, sampler=sampler,
                              collate_fn=batches.collate_fn, num_workers=batches.num_workers,
                              pin_memory=batches.pin_memory, drop_last=batches.drop_last)
    raise NaspruneError(
        f"under torchrun each process needs its own shard of the training batches, and "
        f"nasprune cannot split a {type(batches).__name__} itself: pass a torch DataLoader "
        "over a map-style dataset, or one whose sampler is a "
        "torch.utils.data.DistributedSampler")


def set_epoch(batches: Iterable, epoch: int) -> None:
    """Reshuffle a DistributedSampler for ``epoch`` (the same permutation on every rank)."""
    sampler = getattr(batches, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


__all__ = ["Distributed", "is_main", "launched", "local_device", "rank", "session",
           "set_epoch", "shard_loader"]
