"""Training throughput of ``nasprune.fit``: images/s and the epoch time it implies.

Runs the real training loop (the data set resident on the device as uint8, augmentation in
whole batches, channels_last and mixed precision on CUDA — ``fit``'s defaults there) for a
few warm-up steps, then times ``--steps`` optimizer steps (or a whole epoch with
``--steps 0``) and reports images/s and the CIFAR-10 epoch time (40,000 training images)
those imply. On CPU only a few steps are affordable, so the epoch time there is
extrapolated from the steps and labelled so.

Usage::

    .venv/bin/python bench/train_throughput.py                       # ResNet-56, CIFAR-10
    .venv/bin/python bench/train_throughput.py --model resnet20 --steps 10 --threads 2
    .venv/bin/python bench/train_throughput.py --synthetic           # no data needed

``--synthetic`` trains on random uint8 images of CIFAR-10's shape (same cost per step,
meaningless accuracy), for machines without the data set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
CIFAR_TRAIN = 40_000  # training images of one CIFAR-10 epoch (50,000 minus the val split)


def synthetic_cifar(n_train: int = CIFAR_TRAIN, seed: int = 0):
    """Random uint8 images in CIFAR-10's shape and statistics slots (timing only)."""
    from nasprune.data.base import Dataset, Split

    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(0, 10, (n,), generator=g))

    return Dataset(name="synthetic-cifar10", train=split(n_train), val=split(256),
                   test=split(256), classes=[str(i) for i in range(10)],
                   mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), aug_pad=4,
                   aug_flip=True, meta={"synthetic": True})


def measure(model_name: str = "resnet56", data=None, batch_size: int = 128, steps: int = 20,
            warmup: int = 3, device: str | None = None, amp: bool | None = None,
            channels_last: bool | None = None, seed: int = 0) -> dict[str, Any]:
    """Images/s of ``fit`` on ``model_name``: ``steps`` timed steps after ``warmup`` ones.

    ``steps=0`` times one whole epoch. Returns a JSON-able record (device, settings,
    images/s, seconds per step, the epoch time on ``data.train``).
    """
    from nasprune.models import create_model
    from nasprune.train import fit
    from nasprune.train.device import resolve_channels_last, resolve_device, resolve_precision

    dev = resolve_device(device)
    if data is None:
        data = synthetic_cifar()
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=data.num_classes,
                         in_channels=data.input_shape[0])
    common = dict(batch_size=batch_size, seed=seed, device=dev, amp=amp,
                  channels_last=channels_last, progress=False, validate=False)
    if warmup > 0:  # first steps pay for kernel selection, allocator growth, autocast caches
        fit(model, data, epochs=1, max_steps=warmup, **common)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    res = fit(model, data, epochs=1, max_steps=steps or None, **common)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.perf_counter() - t0
    ips = res.samples / res.train_seconds if res.train_seconds > 0 else 0.0
    per_epoch = len(data.train) // batch_size * batch_size  # fit drops the ragged batch
    precision = resolve_precision(amp, dev).dtype
    return {
        "model": model_name, "data": data.name, "train_images": len(data.train),
        "device": str(dev),
        "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "batch_size": batch_size, "amp": str(precision).replace("torch.", "") if precision
        else "fp32", "channels_last": resolve_channels_last(channels_last, dev),
        "warmup_steps": warmup, "steps": res.steps, "images": res.samples,
        "train_seconds": res.train_seconds, "wall_seconds": wall,
        "images_per_second": ips,
        "seconds_per_step": res.train_seconds / res.steps if res.steps else None,
        "epoch_seconds": per_epoch / ips if ips else None,
        "epoch_measured": steps == 0,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The records as a Markdown table."""
    lines = ["| model | device | threads | batch | precision | channels_last | steps timed | "
             "images/s | s/step | epoch s (40k images) |",
             "|---|---|---:|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        epoch = f"{r['epoch_seconds']:.1f}" + ("" if r["epoch_measured"] else " (extrapolated)")
        lines.append(
            f"| {r['model']} | {r['device']} ({r['device_name']}) | {r['threads'] or '—'} | "
            f"{r['batch_size']} | {r['amp']} | {r['channels_last']} | {r['steps']} | "
            f"{r['images_per_second']:,.0f} | {r['seconds_per_step']:.3f} | {epoch} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None,
                    help="model name, repeatable (default resnet56)")
    ap.add_argument("--data-dir", default=os.environ.get("NASPRUNE_DATA_DIR", "data/cifar10"),
                    help="CIFAR-10 root: ImageFolder tree, tarball or pickles "
                         "(default data/cifar10)")
    ap.add_argument("--synthetic", action="store_true",
                    help="random images of CIFAR-10's shape instead of the data set")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps; 0 = one whole epoch (default: 0 on CUDA, 20 on CPU)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if any)")
    ap.add_argument("--amp", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    ap.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the records")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(HERE.parent / "src"))
    from nasprune.errors import NaspruneError
    from nasprune.train.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        dev = resolve_device(args.device)
        if args.synthetic:
            data = synthetic_cifar()
        else:
            from nasprune.data import load_dataset

            data = load_dataset("cifar10", root=args.data_dir)
        steps = args.steps if args.steps is not None else (0 if dev.type == "cuda" else 20)
        amp = None if args.amp == "auto" else (False if args.amp == "fp32" else args.amp)
        cl = {"auto": None, "on": True, "off": False}[args.channels_last]
        rows = [measure(m, data, batch_size=args.batch_size, steps=steps, warmup=args.warmup,
                        device=str(dev), amp=amp, channels_last=cl)
                for m in (args.model or ["resnet56"])]
    except NaspruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(rows))
    if args.json:
        from nasprune.checkpoint import write_atomic

        write_atomic(Path(args.json), json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
