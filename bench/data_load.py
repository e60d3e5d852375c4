"""Time CIFAR-10 loading: first decode (cache miss) and the cached load, per source.

usage: python bench/data_load.py [ROOT ...]   (default: the shared JPEG tarball and
data/cifar10, the tree bench/prepare_cifar10.sh extracts). Each source gets a fresh
temporary cache directory, so the first load really decodes.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time

import torch

import nasprune


def main(roots: list[str]) -> None:
    print(f"# {platform.python_version()}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| source | workers | first load (decode) s | cached load s |")
    print("|---|---|---|---|")
    for root in roots:
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as cache:
                t = time.perf_counter()
                d = nasprune.load_dataset("cifar10", root=root, cache_dir=cache,
                                          workers=workers)
                first = time.perf_counter() - t
                assert not d.meta["cache_hit"]
                t = time.perf_counter()
                d = nasprune.load_dataset("cifar10", root=root, cache_dir=cache)
                cached = time.perf_counter() - t
                assert d.meta["cache_hit"] and len(d.train) == 40000
            print(f"| {root} | {workers} | {first:.1f} | {cached:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["../shared/data/cifar10-jpg.tar.gz", "data/cifar10"])
