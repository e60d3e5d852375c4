"""Bring your own data to the nasprune command line: a task factory for ``--task``.

``nasprune search|workers|finetune|evaluate|prune|experiment --task examples/digits_task.py:make_task``
imports this file and calls ``make_task(**task_args)`` in every process that needs the
task (each worker of ``nasprune workers`` too): only the import path and the arguments
travel, so the function must build everything from scratch and give the same data each
time (hence the fixed split seed).

It must return a ``nasprune.Task``, or a ``(task, model)`` pair. Here the data are
scikit-learn's bundled digits (1,797 real 8×8 images) in ordinary torch DataLoaders,
standing in for your own files; the default loss (cross-entropy) and score (top-1) fit a
classifier, so the Task needs no more than its batches. For another problem pass
``loss=``, ``score=`` (and ``maximize=False`` for an error) and, if your batches are not
``(inputs, targets)`` pairs or dicts of keyword arguments, ``forward=``.

Try it (well under a minute on a laptop CPU)::

    python examples/digits_task.py runs/digits-net        # train DigitsNet, save it
    nasprune evaluate --task examples/digits_task.py:make_task --task-arg with_model=true \\
        --checkpoint runs/digits-net
    nasprune search --task examples/digits_task.py:make_task --task-arg with_model=true \\
        --checkpoint runs/digits-net --target-macs 0.5 --trials 30 --out runs/digits-search.json

``with_model=true`` also returns the (untrained) network: DigitsNet is your own module, not
one nasprune can rebuild by name, so it is the architecture the checkpoint's weights are
loaded into. A checkpoint of a built-in model (``nasprune train --model digitscnn``) needs
no model from the factory.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nasprune


class DigitsNet(nn.Module):
    """A small CNN for 1×8×8 images: two conv blocks, global pooling, a linear head."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _digits_splits(seed: int) -> dict[str, TensorDataset]:
    """Train/val/test (70/15/15 %) of the digits, normalised; the same for the same seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    x = (x - 0.3066) / 0.3765  # the pixel mean and std of the digits
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = n_test = int(0.15 * len(y))
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test],
             "train": order[n_val + n_test:]}
    return {name: TensorDataset(x[idx], y[idx]) for name, idx in parts.items()}


def make_task(batch_size: int = 64, seed: int = 0, with_model: bool = False,
              width: int = 16):
    """The digits as a nasprune Task of DataLoaders (and a DigitsNet with ``with_model``).

    Every argument can be set on the command line: ``--task-arg batch_size=128``.
    """
    splits = _digits_splits(seed)
    # The training loader shuffles with its own seeded generator, so each process that
    # rebuilds the task (a search worker) draws the same calibration batches.
    train = DataLoader(splits["train"], batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    task = nasprune.Task(
        train=train,
        val=DataLoader(splits["val"], batch_size=256),
        test=DataLoader(splits["test"], batch_size=256),
        name="digits-loaders",
        num_classes=10,
    )
    if with_model:
        return task, DigitsNet(width=width)
    return task


if __name__ == "__main__":
    # python examples/digits_task.py OUT_DIR: train DigitsNet on the task and save it.
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/digits-net"
    torch.manual_seed(0)
    task, model = make_task(with_model=True)
    nasprune.fit(model, task, epochs=10, optimizer="adam", lr=3e-3, progress=False)
    score = nasprune.evaluate(model, task, split="test")["score"]
    nasprune.save(model, out, meta={"task": "examples/digits_task.py:make_task"})
    print(f"test top-1 {score:.2%}; saved {out}")
