"""MNIST and Fashion-MNIST from the official IDX files (gzipped or raw), or downloaded.

The 60,000 training images are split 50,000 / 10,000 train / val (seeded, stratified,
exact); the official 10,000 test images are the test split. Checksums are the published
md5s of the ``.gz`` files (the same ones torchvision verifies).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from nasprune.data.base import Dataset, Split
from nasprune.data.download import fetch
from nasprune.data.registry import default_root, register_dataset
from nasprune.data.splits import holdout
from nasprune.errors import NaspruneError

FILES = {  # role -> official base name
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
MNIST_MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"]
FASHION_MIRRORS = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
VAL_FRACTION = 1 / 6  # 10,000 of 60,000


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (``.gz`` or raw) as a numpy array; corrupt → NaspruneError."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise NaspruneError(f"cannot read IDX file '{path}': {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise NaspruneError(f"'{path}' is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise NaspruneError(f"'{path}' holds IDX type 0x{raw[2]:02x}, expected unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise NaspruneError(f"'{path}' has a truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise NaspruneError(f"'{path}' is corrupt: header says {dims} = {expected} bytes, "
                            f"found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(dirs: list[Path], base: str) -> Path | None:
    variants = [base, base + ".gz", base.replace("-idx", ".idx"),
                base.replace("-idx", ".idx") + ".gz"]
    for d in dirs:
        for v in variants:
            if (d / v).is_file():
                return d / v
    return None


def _load_idx_dataset(name: str, root, seed: int, download: bool, val_fraction: float,
                      md5s: dict[str, str], mirrors: list[str], classes: list[str],
                      mean: float, std: float, flip: bool, torchvision_dir: str) -> Dataset:
    base = Path(root) if root is not None else default_root(name)
    dirs = [base, base / "raw", base / torchvision_dir / "raw", base / name]
    found = {role: _find(dirs, f) for role, f in FILES.items()}
    if download and any(p is None for p in found.values()):
        for role, f in FILES.items():
            if found[role] is None:
                gz = f + ".gz"
                found[role] = fetch([m + gz for m in mirrors], base / gz, md5s[gz])
    missing = [FILES[r] for r, p in found.items() if p is None]
    if missing:
        what = "does not exist" if not base.exists() else f"lacks {', '.join(missing)}[.gz]"
        raise NaspruneError(f"{name} data directory '{base}' {what}; pass download=True "
                            f"(CLI: --download) to fetch the official files")
    arrays = {r: read_idx(p) for r, p in found.items()}  # type: ignore[arg-type]
    pools = {}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise NaspruneError(f"{name} {split} files disagree: images {x.shape}, labels "
                                f"{y.shape}")
        if y.size and y.max() >= len(classes):
            raise NaspruneError(f"{name} {split} labels go up to {y.max()}, expected 0..9")
        pools[split] = Split(torch.from_numpy(x.copy())[:, None], torch.from_numpy(y.copy()))
    train, val = holdout(pools["train"], val_fraction, seed, exact=True)
    return Dataset(name=name, train=train, val=val, test=pools["test"], classes=classes,
                   mean=(mean,), std=(std,), aug_pad=2, aug_flip=flip,
                   meta={"format": "idx", "source": str(found["train_images"].parent)})


@register_dataset("mnist")
def load_mnist(root: str | os.PathLike | None = None, seed: int = 0, download: bool = False,
               val_fraction: float = VAL_FRACTION) -> Dataset:
    """MNIST handwritten digits, 1×28×28, 50,000 / 10,000 / 10,000; digits aren't flipped."""
    return _load_idx_dataset("mnist", root, seed, download, val_fraction, MNIST_MD5,
                             MNIST_MIRRORS, [str(i) for i in range(10)], 0.1307, 0.3081,
                             flip=False, torchvision_dir="MNIST")


@register_dataset("fashion-mnist")
def load_fashion_mnist(root: str | os.PathLike | None = None, seed: int = 0,
                       download: bool = False, val_fraction: float = VAL_FRACTION) -> Dataset:
    """Fashion-MNIST (Zalando), 1×28×28; a mirrored garment is still the same garment."""
    return _load_idx_dataset("fashion-mnist", root, seed, download, val_fraction, FASHION_MD5,
                             FASHION_MIRRORS, list(FASHION_CLASSES), 0.2860, 0.3530,
                             flip=True, torchvision_dir="FashionMNIST")
