"""The task: where batches come from, how a batch reaches the model, the loss and the score.

Every stage after pruning (the search's proxy, ``fit``/``finetune``, ``evaluate``, the
data-driven methods, experiments) sees the user's problem through one :class:`Task`:

- ``train`` / ``val`` / ``test``: any re-iterable of batches (a torch ``DataLoader``, a
  list, or the loaders of a built-in :class:`~nasprune.data.base.Dataset`);
- ``forward(model, batch)``: by default a tensor batch is the input, ``(inputs, targets)``
  feeds ``inputs`` (a tuple of inputs is spread as positional arguments), and a dict is
  passed as keyword arguments (Hugging Face style, ``labels`` inside);
- ``loss(output, batch)``: by default the model's own loss when it returns one (an output
  with ``.loss``, or a dict of loss tensors, summed: torchvision detection models in train
  mode), else cross-entropy against the batch's targets;
- ``score(outputs, batches) -> float`` with ``maximize``: top-1 by default; any callable
  (mIoU, F1, negative perplexity, mAP) over the per-batch outputs and their batches.

``as_task`` turns what a user passes (a Task, a built-in Dataset, a DataLoader) into one.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasprune.errors import NaspruneError

Batch = Any
Forward = Callable[[nn.Module, Batch], Any]
Loss = Callable[[Any, Batch], torch.Tensor]
Score = Callable[[Sequence[Any], Sequence[Batch]], float]


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """``batch`` with every tensor inside (tuples, lists, dicts, nested) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(to_device(v, device) for v in batch)
    if isinstance(batch, list):
        return [to_device(v, device) for v in batch]
    return batch


def batch_len(batch: Batch, _inner: bool = False) -> int:
    """Samples in a batch: the leading size of its first tensor (1 if it holds none).

    Inside a batch, a list of tensors is one tensor per sample (torchvision detection's
    ``(images, targets)``): its length counts, not the first image's channels.
    """
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if (_inner and isinstance(batch, list) and batch
            and all(isinstance(t, torch.Tensor) for t in batch)):
        return len(batch)
    items = list(batch.values()) if isinstance(batch, Mapping) else batch
    if isinstance(items, (list, tuple)):
        for item in items:
            if isinstance(item, (torch.Tensor, Mapping, list, tuple)):
                return batch_len(item, True)
    return 1


def first_batches(batches, need: int, what: str, split: str,
                  tick: Callable[[], None] | None = None) -> list:
    """The first ``need`` batches, cycling ``batches`` when it holds fewer."""
    out: list = []
    while len(out) < need:
        before = len(out)
        for batch in batches:
            out.append(batch)
            if tick is not None:
                tick()
            if len(out) >= need:
                break
        if len(out) == before:
            raise NaspruneError(f"{what} has an empty {split} split")
    return out


def example_of(batch: Any) -> Any:
    """The model inputs of one batch, cut to one sample (for tracing and MACs)."""
    if isinstance(batch, torch.Tensor):
        return batch[:1]
    if isinstance(batch, dict):
        return {k: v[:1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()
                if k != "labels"}
    if isinstance(batch, (tuple, list)) and batch:
        return example_of(batch[0])
    return batch



def example_inputs(task: Task) -> Any:
    """One input of ``task`` for tracing and MACs: the inputs of its first validation batch
    (its first training batch when it has no validation split), cut to one sample."""
    split = "val" if task.val is not None else "train"
    return example_of(first_batches(task.split(split), 1, f"task '{task.name}'", split)[0])


def first_samples(batches: Iterable[Batch], size: int | None, device: torch.device | str,
                  what: str, tick: Callable[[int], None] | None = None) -> tuple[list, int]:
    """Whole batches from the start of ``batches`` on ``device`` until they hold at least
    ``size`` samples (all of them when None), and their sample count; none is an error."""
    out: list = []
    count = 0
    for batch in batches:
        out.append(to_device(batch, device))
        n = batch_len(batch)
        count += n
        if tick is not None:
            tick(n)
        if size is not None and count >= size:
            break
    if not out:
        raise NaspruneError(f"{what} has no validation batches")
    return out, count

def _describe(batch: Batch) -> str:
    if isinstance(batch, torch.Tensor):
        return f"tensor {tuple(batch.shape)}"
    if isinstance(batch, Mapping):
        return f"dict with keys {sorted(map(str, batch))}"
    if isinstance(batch, (tuple, list)):
        return f"{type(batch).__name__} of {len(batch)}"
    return type(batch).__name__


def default_forward(model: nn.Module, batch: Batch) -> Any:
    """Feed a tensor, an ``(inputs, targets)`` pair or a dict of keyword arguments."""
    if isinstance(batch, torch.Tensor):
        return model(batch)
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)) and len(batch) >= 1:
        inputs = batch[0]
        if isinstance(inputs, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in inputs):
            return model(*inputs)
        if isinstance(inputs, Mapping):
            return model(**inputs)
        return model(inputs)
    raise NaspruneError(f"cannot feed a batch of type {_describe(batch)} to the model: give "
                        "tensors, (inputs, targets) pairs or dicts of keyword arguments, or "
                        "pass forward=callable(model, batch) in the Task")


def targets_of(batch: Batch) -> Any:
    """The targets of a batch: the second item of a pair, or ``labels`` of a dict."""
    if isinstance(batch, Mapping) and "labels" in batch:
        return batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    raise NaspruneError(f"the batch ({_describe(batch)}) has no targets: give (inputs, targets) "
                        "pairs or dicts with 'labels', or pass loss= and score= callables")


def logits_of(output: Any) -> torch.Tensor:
    """The class scores in a model output: a tensor, ``.logits``, or the first item."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise NaspruneError(f"cannot find class scores in a model output of type "
                        f"{type(output).__name__}: pass score= (and loss=) callables")


def default_loss(output: Any, batch: Batch) -> torch.Tensor:
    """The model's own loss when it returns one, else cross-entropy on the targets."""
    own = getattr(output, "loss", None)
    if isinstance(own, torch.Tensor):
        return own
    if isinstance(output, Mapping):
        if isinstance(output.get("loss"), torch.Tensor):
            return output["loss"]
        values = list(output.values())
        if values and all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in values):
            return torch.stack(values).sum()  # a loss dict (torchvision detection)
    return F.cross_entropy(logits_of(output), targets_of(batch))


def top1(outputs: Sequence[Any], batches: Sequence[Batch]) -> float:
    """Fraction of samples whose highest class score is the target."""
    correct = total = 0
    for out, batch in zip(outputs, batches, strict=True):
        y = targets_of(batch)
        pred = logits_of(out).argmax(dim=-1)
        correct += int((pred.view(-1) == y.to(pred.device).view(-1)).sum())
        total += int(y.numel())
    return correct / max(total, 1)


def checked_loss(value: Any) -> torch.Tensor:
    """``value`` if it is a finite-or-not scalar tensor; one clear error otherwise."""
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise NaspruneError(f"the task's loss must return a scalar tensor, got {shape}")
    return value.reshape(())


def checked_score(value: Any) -> float:
    """``value`` as a float; one clear error for NaN or a non-number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise NaspruneError(f"the task's score must return a number, got {value!r}")
    return float(value)


@dataclass
class Task:
    """The user's problem: batches per split, how a batch reaches the model, loss, score.

    ``example_inputs`` (for tracing and MACs) defaults to the inputs of the first
    validation (else training) batch. ``num_classes`` is checked by classification metrics
    when known.
    """

    train: Iterable[Batch] | None = None
    val: Iterable[Batch] | None = None
    test: Iterable[Batch] | None = None
    forward: Forward = default_forward
    loss: Loss = default_loss
    score: Score = top1
    maximize: bool = True
    name: str = "task"
    num_classes: int | None = None

    def split(self, name: str) -> Iterable[Batch]:
        """The batches of ``name`` (train, val or test); one clear error when missing."""
        if name not in ("train", "val", "test"):
            raise NaspruneError(f"unknown split '{name}': choose from train, val, test")
        batches = getattr(self, name)
        if batches is None:
            raise NaspruneError(f"the task '{self.name}' has no {name} batches")
        return batches

    def compute_loss(self, model: nn.Module, batch: Batch) -> tuple[Any, torch.Tensor]:
        """``(output, loss)`` of one batch (already on the model's device)."""
        out = self.forward(model, batch)
        return out, checked_loss(self.loss(out, batch))

    def evaluate(self, model: nn.Module, batches: Iterable[Batch],
                 device: torch.device | str) -> float:
        """The score of ``model`` (in eval mode, no gradients) over ``batches``."""
        outputs, seen = [], []
        for batch in batches:
            b = to_device(batch, device)
            outputs.append(_detach(self.forward(model, b)))
            seen.append(b)
        if not seen:
            raise NaspruneError(f"the task '{self.name}' gave no batches to score")
        return checked_score(self.score(outputs, seen))

    def with_splits(self, **splits: Iterable[Batch] | None) -> Task:
        """A copy with some splits replaced (e.g. cached calibration batches)."""
        return replace(self, **splits)


def _detach(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.detach()
    return output


def is_dataset(data: Any) -> bool:
    """A built-in in-memory data set (or a wrapper around one): the fast path."""
    return all(hasattr(data, a) for a in ("train", "val", "loader", "input_shape"))


def as_task(data: Any, score: Score | None = None, loss: Loss | None = None,
            maximize: bool | None = None) -> Task:
    """A :class:`Task` for what a user passed: a Task, a built-in Dataset or batches.

    A bare iterable of batches (a ``DataLoader``) serves as train, val and test at once.
    """
    if isinstance(data, Task):
        task = data
    elif is_dataset(data):
        task = dataset_task(data)
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        task = Task(train=data, val=data, test=data, name=type(data).__name__)
    else:
        raise NaspruneError(f"expected a nasprune Task, a built-in Dataset or an iterable of "
                            f"batches (a DataLoader), got {type(data).__name__}")
    changes: dict[str, Any] = {}
    if score is not None:
        changes["score"] = score
    if loss is not None:
        changes["loss"] = loss
    if maximize is not None:
        changes["maximize"] = maximize
    return replace(task, **changes) if changes else task


def dataset_task(data: Any, batch_size: int = 256) -> Task:
    """The built-in in-memory data set as a task (normalised batches, no augmentation).

    A split's loader is made when its batches are first iterated, so building the task
    touches no split (the search never reads the test split).
    """
    return Task(train=_SplitBatches(data, "train", batch_size),
                val=_SplitBatches(data, "val", batch_size),
                test=_SplitBatches(data, "test", batch_size),
                name=data.name, num_classes=data.num_classes)


class _SplitBatches:
    """The batches of one split of a built-in data set, loaded on iteration."""

    def __init__(self, data: Any, split: str, batch_size: int) -> None:
        self.data, self.split, self.batch_size = data, split, batch_size

    def __iter__(self):
        return iter(self.data.loader(self.split, batch_size=self.batch_size))

    def __len__(self) -> int:
        return -(-len(self.data.split(self.split)) // self.batch_size)
