"""Running loss/accuracy of an epoch, and the divergence check.

Reading a loss back from the GPU forces a synchronisation, so on CUDA the per-step losses
are buffered on the device and checked every few steps; the check still names the exact
epoch and step where the loss first became NaN or infinite.
"""

from __future__ import annotations

import math

import torch

from nasprune.errors import NaspruneError


class LossMonitor:
    """Accumulates per-step (loss, correct, count) and raises on the first non-finite loss."""

    def __init__(self, sync_every: int = 1) -> None:
        self.sync_every = max(int(sync_every), 1)
        self._pending: list[tuple[int, int, torch.Tensor, torch.Tensor, int]] = []
        self.reset()

    def reset(self) -> None:
        """Start a new epoch's sums."""
        self.loss_sum = 0.0
        self.correct = 0
        self.count = 0
        self.scored = 0  # samples whose top-1 was counted (a task may give no class scores)

    def add(self, epoch: int, step: int, loss: torch.Tensor, correct: torch.Tensor | None,
            n: int) -> None:
        """Record one step (``epoch``/``step`` 1-based, for the error message); ``correct``
        None: the step has no top-1 to count (a task without class scores)."""
        self._pending.append((epoch, step, loss.detach(),
                              None if correct is None else correct.detach(), n))
        if len(self._pending) >= self.sync_every:
            self.flush()

    def flush(self) -> None:
        """Move buffered values to the host; raise if any loss was NaN or infinite."""
        if not self._pending:
            return
        losses = torch.stack([p[2].float() for p in self._pending]).tolist()
        counted = [p[3] for p in self._pending if p[3] is not None]
        corrects = iter(torch.stack(counted).tolist() if counted else ())
        pending, self._pending = self._pending, []
        for (epoch, step, _, correct, n), loss in zip(pending, losses, strict=True):
            if not math.isfinite(loss):
                raise NaspruneError(
                    f"training diverged: loss is {loss} at epoch {epoch} step {step} "
                    "(try a lower learning rate)")
            self.loss_sum += loss * n
            self.count += n
            if correct is not None:
                self.correct += int(next(corrects))
                self.scored += n

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.scored if self.scored else float("nan")
