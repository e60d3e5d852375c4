"""Data sets, splits, the batch loader, the decode cache and every user-facing data error.

CIFAR-10, MNIST and ImageFolder data are generated in the official formats inside
``tmp_path`` (a few dozen images), so these tests are fast and need no download.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nasprune
from nasprune.data import cifar, imagetree, mnist
from nasprune.data import images as images_mod
from nasprune.data.base import BatchLoader, Dataset, Split
from nasprune.data.splits import holdout, three_way_split
from nasprune.errors import NaspruneError

# ----------------------------------------------------------------------------- helpers


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _cifar_arrays(n_per_batch: int = 20, seed: int = 0):
    """Random CIFAR-like data: 5 train batches + 1 test batch, labels cycling 0..9."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(6):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(n_per_batch)]
        batches.append((data, labels))
    return batches


def _write_cifar_pickles(directory: Path, batches) -> Path:
    """The official python format: dicts with 'data' (N×3072 uint8) and 'labels'."""
    directory.mkdir(parents=True, exist_ok=True)
    names = [*cifar.TRAIN_BATCHES, cifar.TEST_BATCH]
    for name, (data, labels) in zip(names, batches, strict=True):
        d = {"batch_label": name, "labels": labels, "data": data,
             "filenames": [f"img_{i}.png" for i in range(len(labels))]}
        # protocol 2, as in the official files (Python 3 then rebuilds bytes via _codecs)
        (directory / name).write_bytes(pickle.dumps(d, protocol=2))
    meta = {"label_names": list(cifar.CLASSES), "num_cases_per_batch": len(batches[0][1]),
            "num_vis": 3072}
    (directory / cifar.META).write_bytes(pickle.dumps(meta, protocol=2))
    return directory


def _write_tree(root: Path, per_class: dict[str, int], classes, fmt: str = "png",
                size=(32, 32), mode: str = "RGB", seed: int = 0) -> dict[str, np.ndarray]:
    """``root/<split>/<class>/<i>.<fmt>`` random images; returns path -> HWC array."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in per_class.items():
        for c in classes:
            d = root / split / c if split else root / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                arr = rng.integers(0, 256, shape, dtype=np.uint8)
                p = d / f"{i:03d}.{fmt}"
                if fmt == "jpg":  # smooth-ish blocks so lossy JPEG stays close to the source
                    arr = np.kron(arr[::8, ::8], np.ones((8, 8, 1)[: arr.ndim], np.uint8))
                    Image.fromarray(arr).save(p, quality=95, subsampling=0)
                else:
                    Image.fromarray(arr).save(p)
                written[str(p)] = arr
    return written


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I",
                                                                      *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_idx_set(directory: Path, n_train: int = 120, n_test: int = 30, gz: bool = True,
                   seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for name, arr in arrays.items():
        raw = _idx_bytes(arr)
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return arrays


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r) for r in x.reshape(len(x), -1).numpy()}


# ----------------------------------------------------------------------------- splits


def test_digits_split_sizes_and_stratification(digits):
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1169, 269, 359)
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    total = torch.cat([digits.train.y, digits.val.y, digits.test.y]).bincount()
    for split in (digits.train, digits.val, digits.test):
        counts = split.y.bincount(minlength=10)
        expected = total.double() * len(split) / total.sum()
        # every class keeps its share in every split, up to rounding
        assert torch.all((counts - expected).abs() <= 1.0), (counts, expected)
    # together the three splits are exactly the whole data set
    from sklearn.datasets import load_digits

    full = torch.from_numpy((load_digits().images * (255.0 / 16.0)).round()).to(torch.uint8)
    pooled = torch.cat([digits.train.x, digits.val.x, digits.test.x])
    assert len(pooled) == len(full) == 1797
    assert _rows(pooled) == _rows(full[:, None])


def test_digits_split_reproducible_and_seeded():
    a = nasprune.load_dataset("digits", seed=0)
    b = nasprune.load_dataset("digits", seed=0)
    c = nasprune.load_dataset("digits", seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert len(a.train) == len(c.train)


def test_exact_holdout_hits_the_requested_total():
    y = torch.tensor([0] * 7 + [1] * 11 + [2] * 13)
    pool = Split(torch.arange(31, dtype=torch.uint8).view(31, 1, 1, 1), y)
    rest, held = holdout(pool, 1 / 6, seed=0, exact=True)
    assert len(held) == round(31 / 6) and len(rest) == 31 - len(held)
    assert set(held.x.flatten().tolist()).isdisjoint(rest.x.flatten().tolist())
    # per-class shares within one of the exact share
    for c, n in ((0, 7), (1, 11), (2, 13)):
        assert abs(int((held.y == c).sum()) - n / 6) < 1
    with pytest.raises(NaspruneError, match="val_fraction"):
        three_way_split(pool, 0.7, 0.4, seed=0)


# ----------------------------------------------------------------------------- loader


def test_loader_batch_shapes_and_lengths(digits):
    loader = digits.loader("train", batch_size=64)
    assert len(loader) == -(-1169 // 64) and loader.num_samples == 1169
    xb, yb = next(iter(loader))
    assert xb.shape == (64, 1, 8, 8) and xb.dtype == torch.float32
    assert yb.shape == (64,) and yb.dtype == torch.int64
    sizes = [len(y) for _, y in loader]
    assert sum(sizes) == 1169 and sizes[-1] == 1169 % 64
    assert len(digits.loader("train", batch_size=64, drop_last=True)) == 1169 // 64


def test_loader_normalises_to_zero_mean_unit_std(digits):
    xs = torch.cat([x for x, _ in digits.loader("train", batch_size=256)])
    assert abs(xs.mean().item()) < 0.02
    assert abs(xs.std().item() - 1.0) < 0.02


def test_loader_shuffle_covers_every_sample_once(digits):
    ys = torch.cat([y for _, y in digits.loader("train", batch_size=100, shuffle=True)])
    assert torch.equal(ys.bincount(), digits.train.y.bincount())
    assert not torch.equal(ys, digits.train.y)


def _cifar_like(n: int = 16, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
    s = Split(x, torch.arange(n) % 10)
    return Dataset("toy", s, s, s, [str(i) for i in range(10)], (0.0,) * 3, (1.0,) * 3,
                   aug_pad=4, aug_flip=True)


def test_augmentation_changes_pixels_keeps_shapes_and_is_seeded():
    data = _cifar_like()
    plain = next(iter(data.loader("train", batch_size=16)))[0]
    aug = next(iter(data.loader("train", batch_size=16, augment=True, seed=3)))[0]
    again = next(iter(data.loader("train", batch_size=16, augment=True, seed=3)))[0]
    other = next(iter(data.loader("train", batch_size=16, augment=True, seed=4)))[0]
    assert aug.shape == plain.shape == (16, 3, 12, 12)
    assert not torch.equal(aug, plain)
    assert torch.equal(aug, again)
    assert not torch.equal(aug, other)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    data = _cifar_like()
    loader = BatchLoader(data.train, batch_size=16, mean=(0.0,) * 3, std=(1.0,) * 3,
                         pad=4, flip=False, seed=7)
    out = (next(iter(loader))[0] * 255.0).round().to(torch.uint8)  # mean 0, std 1/255
    padded = torch.nn.functional.pad(data.train.x, (4, 4, 4, 4))
    offsets = []
    for i in range(16):
        hits = [(oy, ox) for oy in range(9) for ox in range(9)
                if torch.equal(out[i], padded[i, :, oy:oy + 12, ox:ox + 12])]
        assert len(hits) == 1, f"image {i} is not a window of its padded original"
        offsets.append(hits[0])
    assert len(set(offsets)) > 3  # windows really move around
    # check one image against a hand-made crop at the found offset
    oy, ox = offsets[0]
    manual = torch.zeros(3, 20, 20, dtype=torch.uint8)
    manual[:, 4:16, 4:16] = data.train.x[0]
    assert torch.equal(out[0], manual[:, oy:oy + 12, ox:ox + 12])


def test_flip_mirrors_some_images_and_leaves_the_rest():
    data = _cifar_like(32)
    loader = BatchLoader(data.train, batch_size=32, mean=(0.0,) * 3, std=(1.0,) * 3,
                         pad=0, flip=True, seed=1)
    out = (next(iter(loader))[0] * 255.0).round().to(torch.uint8)
    flipped = [torch.equal(out[i], data.train.x[i].flip(2)) for i in range(32)]
    same = [torch.equal(out[i], data.train.x[i]) for i in range(32)]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert 4 < sum(flipped) < 28


def test_unknown_split_is_a_clear_error(digits):
    with pytest.raises(NaspruneError, match="unknown split 'bogus'"):
        digits.split("bogus")
    with pytest.raises(NaspruneError, match="unknown split"):
        digits.loader("bogus")


def test_unknown_dataset_name_or_option_is_a_clear_error():
    with pytest.raises(NaspruneError, match="did you mean 'cifar10'"):
        nasprune.load_dataset("cifar-10x")
    with pytest.raises(NaspruneError, match="'digits' has no option image_sise.*val_fraction"):
        nasprune.load_dataset("digits", image_sise=32)


# ----------------------------------------------------------------------------- cifar10


def _check_cifar(data: Dataset, batches) -> None:
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 20)
    assert data.classes == cifar.CLASSES and data.input_shape == (3, 32, 32)
    assert data.aug_pad == 4 and data.aug_flip and data.mean == cifar.MEAN
    assert data.val.y.bincount(minlength=10).tolist() == [2] * 10  # stratified
    test_x = torch.from_numpy(batches[5][0].reshape(-1, 3, 32, 32))
    assert torch.equal(data.test.x, test_x)
    assert data.test.y.tolist() == batches[5][1]
    train_x = np.concatenate([b[0] for b in batches[:5]]).reshape(-1, 3, 32, 32)
    pooled = torch.cat([data.train.x, data.val.x])
    assert _rows(pooled) == _rows(torch.from_numpy(train_x))


def test_cifar10_from_official_pickles(tmp_path):
    batches = _cifar_arrays()
    _write_cifar_pickles(tmp_path / cifar.BATCH_DIR, batches)
    data = nasprune.load_dataset("cifar10", root=tmp_path)
    _check_cifar(data, batches)
    assert data.meta["format"] == "pickles"
    # the batch files directly in root work too, and the split is seeded
    direct = nasprune.load_dataset("cifar10", root=tmp_path / cifar.BATCH_DIR)
    assert torch.equal(direct.val.x, data.val.x)
    other = nasprune.load_dataset("cifar10", root=tmp_path, seed=5)
    assert not torch.equal(other.val.x, data.val.x)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_cifar10_pickle_cannot_execute_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = _write_cifar_pickles(tmp_path / cifar.BATCH_DIR, _cifar_arrays())
    (d / "data_batch_3").write_bytes(pickle.dumps({"data": _Evil(), "labels": []}))
    with pytest.raises(NaspruneError, match=r"refusing to unpickle '(posix|nt|os)\.system'"):
        nasprune.load_dataset("cifar10", root=tmp_path)
    assert not (tmp_path / "pwned.txt").exists()


def test_cifar10_corrupt_or_missing_batch_named(tmp_path):
    d = _write_cifar_pickles(tmp_path / cifar.BATCH_DIR, _cifar_arrays())
    (d / "data_batch_2").write_bytes(b"\x80\x02garbage")
    with pytest.raises(NaspruneError, match="data_batch_2"):
        nasprune.load_dataset("cifar10", root=tmp_path)
    (d / "data_batch_2").unlink()
    with pytest.raises(NaspruneError, match="data_batch_2 missing"):
        nasprune.load_dataset("cifar10", root=tmp_path)


def _make_archive(src: Path, dest: Path, arcname: str) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(src, arcname=arcname)
    return dest


def test_cifar10_from_pickle_archive_and_download(tmp_path, monkeypatch):
    batches = _cifar_arrays()
    src = _write_cifar_pickles(tmp_path / "src" / cifar.BATCH_DIR, batches)
    archive = _make_archive(src, tmp_path / "official.tar.gz", cifar.BATCH_DIR)
    data = nasprune.load_dataset("cifar10", root=archive, cache_dir=tmp_path / "c")
    _check_cifar(data, batches)
    assert data.meta["format"] == "archive"

    # download: a file:// URL stands in for the official server
    monkeypatch.setattr(cifar, "URL", archive.as_uri())
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", "0" * 32)
    with pytest.raises(NaspruneError, match="wrong checksum"):
        nasprune.load_dataset("cifar10", root=tmp_path / "dl", download=True)
    assert not (tmp_path / "dl" / cifar.ARCHIVE).exists()  # nothing half-verified left
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", _md5(archive))
    data = nasprune.load_dataset("cifar10", root=tmp_path / "dl", download=True)
    _check_cifar(data, batches)
    assert (tmp_path / "dl" / cifar.ARCHIVE).is_file()
    # an archive already there with the wrong checksum is refused, not silently used
    (tmp_path / "dl" / cifar.ARCHIVE).write_bytes(b"not the archive")
    with pytest.raises(NaspruneError, match="wrong checksum"):
        nasprune.load_dataset("cifar10", root=tmp_path / "dl", download=True)


def test_cifar10_missing_directory(tmp_path):
    with pytest.raises(NaspruneError, match="does not exist.*download=True"):
        nasprune.load_dataset("cifar10", root=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NaspruneError, match="holds no CIFAR-10 data"):
        nasprune.load_dataset("cifar10", root=tmp_path / "empty")


def test_cifar10_from_png_tree_matches_pixels_and_standard_order(tmp_path):
    written = _write_tree(tmp_path, {"train": 3, "test": 1}, cifar.CLASSES, fmt="png")
    data = nasprune.load_dataset("cifar10", root=tmp_path, workers=1)
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 10)
    assert data.test.y.tolist() == list(range(10))  # classes in the standard order
    truck = torch.from_numpy(written[str(tmp_path / "test" / "truck" / "000.png")])
    assert torch.equal(data.test.x[9], truck.permute(2, 0, 1))  # PNG is lossless
    pooled = torch.cat([data.train.x, data.val.x]).permute(0, 2, 3, 1)
    expected = [v for k, v in written.items() if "/train/" in k]
    assert _rows(pooled) == _rows(torch.from_numpy(np.stack(expected)))


def test_cifar10_from_jpeg_tree_and_tree_archive(tmp_path):
    written = _write_tree(tmp_path / "tree", {"train": 2, "test": 1}, cifar.CLASSES,
                          fmt="jpg")
    data = nasprune.load_dataset("cifar10", root=tmp_path / "tree")
    path = tmp_path / "tree" / "test" / "cat" / "000.jpg"
    got = data.test.x[3].permute(1, 2, 0)
    assert torch.equal(got, torch.from_numpy(np.array(Image.open(path).convert("RGB"))))
    diff = (got.float() - torch.from_numpy(written[str(path)]).float()).abs().mean()
    assert diff < 8  # JPEG is lossy, but it is the same picture
    # the same tree as a .tar.gz with a wrapper directory, as distributed
    archive = _make_archive(tmp_path / "tree", tmp_path / "cifar10-jpg.tar.gz", "cifar10")
    from_tar = nasprune.load_dataset("cifar10", root=archive)
    assert torch.equal(from_tar.test.x, data.test.x)
    assert torch.equal(from_tar.train.x, data.train.x)


def test_decode_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    _write_tree(tmp_path, {"train": 2, "test": 1}, cifar.CLASSES, fmt="png")
    first = nasprune.load_dataset("cifar10", root=tmp_path)
    cache_file = Path(first.meta["cache"])
    assert cache_file.is_file() and cache_file.parent == tmp_path / ".nasprune-cache"
    assert cache_file.suffix == ".safetensors" and not first.meta["cache_hit"]
    mtime = cache_file.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("decoder called although the cache is fresh")

    monkeypatch.setattr(imagetree, "decode_images", boom)
    second = nasprune.load_dataset("cifar10", root=tmp_path)
    assert second.meta["cache_hit"] and cache_file.stat().st_mtime_ns == mtime
    assert torch.equal(second.train.x, first.train.x)
    assert torch.equal(second.test.y, first.test.y)
    # editing one image changes the fingerprint: the decoder must run again
    p = tmp_path / "test" / "dog" / "000.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(p)
    os.utime(p, ns=(mtime + 10**9, mtime + 10**9))
    with pytest.raises(AssertionError, match="decoder called"):
        nasprune.load_dataset("cifar10", root=tmp_path)
    monkeypatch.undo()
    third = nasprune.load_dataset("cifar10", root=tmp_path)
    assert not third.meta["cache_hit"] and int(third.test.x[5].sum()) == 0
    # the stale cache of the old contents was replaced, not kept next to the new one
    assert [f.name for f in (tmp_path / ".nasprune-cache").iterdir()] == \
        [Path(third.meta["cache"]).name]


def test_parallel_decode_equals_serial(tmp_path, monkeypatch):
    written = _write_tree(tmp_path, {"": 5}, ["a", "b", "c"], fmt="png", size=(9, 7))
    items = [(p, p) for p in sorted(written)]
    serial, _ = images_mod.decode_images(items, workers=1)
    monkeypatch.setattr(images_mod, "_POOL_MIN_IMAGES", 0)
    parallel, gray = images_mod.decode_images(items, workers=2)
    assert serial.shape == (15, 7, 9, 3) and np.array_equal(serial, parallel)
    assert not gray.any()
    assert np.array_equal(serial[0], written[items[0][0]])


# ----------------------------------------------------------------------------- mnist


def test_mnist_from_gz_idx_files(tmp_path):
    arrays = _write_idx_set(tmp_path, gz=True)
    data = nasprune.load_dataset("mnist", root=tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (100, 20, 30)
    assert data.input_shape == (1, 28, 28) and data.aug_pad == 2 and not data.aug_flip
    assert data.val.y.bincount().tolist() == [2] * 10
    assert torch.equal(data.test.x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    pooled = torch.cat([data.train.x, data.val.x])[:, 0]
    assert _rows(pooled) == _rows(torch.from_numpy(arrays["train-images-idx3-ubyte"]))


def test_fashion_mnist_raw_idx_in_torchvision_layout(tmp_path):
    _write_idx_set(tmp_path / "FashionMNIST" / "raw", gz=False, n_train=60, n_test=10)
    data = nasprune.load_dataset("fashion-mnist", root=tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (50, 10, 10)
    assert data.classes[9] == "Ankle boot" and data.aug_flip


def test_mnist_download_verifies_checksums(tmp_path, monkeypatch):
    server = tmp_path / "server"
    _write_idx_set(server, gz=True)
    md5s = {p.name: _md5(p) for p in server.iterdir()}
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [server.as_uri() + "/"])
    bad = dict(md5s, **{"t10k-labels-idx1-ubyte.gz": "f" * 32})
    monkeypatch.setattr(mnist, "MNIST_MD5", bad)
    with pytest.raises(NaspruneError, match="wrong checksum.*t10k-labels"):
        nasprune.load_dataset("mnist", root=tmp_path / "dl", download=True)
    monkeypatch.setattr(mnist, "MNIST_MD5", md5s)
    data = nasprune.load_dataset("mnist", root=tmp_path / "dl", download=True)
    assert len(data.test) == 30
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(md5s)


def test_mnist_errors_missing_and_corrupt(tmp_path):
    with pytest.raises(NaspruneError, match="does not exist"):
        nasprune.load_dataset("mnist", root=tmp_path / "none")
    _write_idx_set(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(NaspruneError, match="lacks t10k-labels-idx1-ubyte"):
        nasprune.load_dataset("mnist", root=tmp_path)
    _write_idx_set(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(NaspruneError, match="train-images-idx3-ubyte' is corrupt"):
        nasprune.load_dataset("mnist", root=tmp_path)
    f.write_bytes(b"\x1f\x8b not really")
    with pytest.raises(NaspruneError, match="not an IDX file"):
        nasprune.load_dataset("mnist", root=tmp_path)
    f.unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08 truncated gzip")
    with pytest.raises(NaspruneError, match="cannot read IDX file .*train-images-idx3"):
        nasprune.load_dataset("mnist", root=tmp_path)


# ----------------------------------------------------------------------------- imagefolder


def test_imagefolder_single_tree_grayscale_resized(tmp_path):
    _write_tree(tmp_path, {"": 10}, ["circle", "square", "star"], size=(20, 30), mode="L")
    data = nasprune.load_dataset("imagefolder", root=tmp_path, image_size=16,
                                 val_fraction=0.1, test_fraction=0.2)
    assert data.input_shape == (1, 16, 16)  # all grayscale: one channel
    assert data.classes == ["circle", "square", "star"]
    assert (len(data.train), len(data.val), len(data.test)) == (21, 3, 6)
    assert data.test.y.bincount().tolist() == [2, 2, 2]
    xs = torch.cat([x for x, _ in data.loader("train", batch_size=8)])
    assert abs(xs.mean().item()) < 0.01 and abs(xs.std().item() - 1) < 0.01
    rgb = nasprune.load_dataset("imagefolder", root=tmp_path, image_size=16, channels=3)
    assert rgb.input_shape == (3, 16, 16)
    # the same tree packed as an archive gives the same data
    archive = _make_archive(tmp_path, tmp_path.parent / f"{tmp_path.name}.tgz", "shapes")
    packed = nasprune.load_dataset("imagefolder", root=archive, image_size=16, cache=False)
    assert torch.equal(packed.train.x, data.train.x) and packed.classes == data.classes


def test_imagefolder_split_dirs_rgb_and_native_size(tmp_path):
    _write_tree(tmp_path, {"train": 5, "val": 2, "test": 3}, ["x", "y"], size=(10, 10))
    data = nasprune.load_dataset("imagefolder", root=tmp_path, image_size=None)
    assert data.input_shape == (3, 10, 10)
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 6)
    assert data.aug_pad == 1 and data.aug_flip


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    _write_tree(tmp_path, {"": 2}, ["a"], size=(10, 10))
    _write_tree(tmp_path, {"": 2}, ["b"], size=(12, 10), seed=1)
    with pytest.raises(NaspruneError, match="differ in size.*image_size"):
        nasprune.load_dataset("imagefolder", root=tmp_path, image_size=None, cache=False)
    ok = nasprune.load_dataset("imagefolder", root=tmp_path, image_size=8, cache=False,
                               val_fraction=0.0, test_fraction=0.25)
    assert ok.input_shape == (3, 8, 8)


@pytest.mark.parametrize("name", ["cifar10", "imagefolder"])
def test_tree_errors_name_the_problem(tmp_path, name):
    classes = cifar.CLASSES
    with pytest.raises(NaspruneError, match="does not exist"):
        nasprune.load_dataset(name, root=tmp_path / "missing")
    # no images at all
    for c in classes:
        (tmp_path / "empty" / "train" / c).mkdir(parents=True)
        (tmp_path / "empty" / "test" / c).mkdir(parents=True)
    with pytest.raises(NaspruneError, match="no images found"):
        nasprune.load_dataset(name, root=tmp_path / "empty")
    # a class of train/ missing from test/
    _write_tree(tmp_path / "t", {"train": 1}, classes)
    _write_tree(tmp_path / "t", {"test": 1}, [c for c in classes if c != "frog"])
    with pytest.raises(NaspruneError, match="class 'frog' is in train/ but has no images "
                                            "in test/"):
        nasprune.load_dataset(name, root=tmp_path / "t")
    # a class of test/ unknown to train/
    _write_tree(tmp_path / "t", {"test": 1}, ["frog", "unicorn"])
    with pytest.raises(NaspruneError, match="class 'unicorn' in test/.*does not exist in "
                                            "train/"):
        nasprune.load_dataset(name, root=tmp_path / "t")
    # a corrupt image file is named
    (tmp_path / "t" / "test" / "unicorn" / "000.png").unlink()
    (tmp_path / "t" / "test" / "unicorn").rmdir()
    bad = tmp_path / "t" / "train" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(NaspruneError, match=r"cannot read image '.*cat/broken\.png'"):
        nasprune.load_dataset(name, root=tmp_path / "t")


def test_corrupt_image_inside_archive_is_named(tmp_path):
    _write_tree(tmp_path / "tree", {"train": 1, "test": 1}, cifar.CLASSES)
    (tmp_path / "tree" / "test" / "ship" / "000.png").write_bytes(b"garbage")
    archive = _make_archive(tmp_path / "tree", tmp_path / "a.tar.gz", ".")
    with pytest.raises(NaspruneError, match=r"a\.tar\.gz:test/ship/000\.png"):
        nasprune.load_dataset("cifar10", root=archive, cache=False)


def test_cifar10_tree_with_foreign_classes_points_to_imagefolder(tmp_path):
    _write_tree(tmp_path, {"train": 1, "test": 1}, ["apple", "pear"])
    with pytest.raises(NaspruneError, match="imagefolder"):
        nasprune.load_dataset("cifar10", root=tmp_path)


def test_cache_is_safetensors_holding_the_uint8_arrays(tmp_path):
    from safetensors.numpy import load_file

    _write_tree(tmp_path, {"train": 1, "test": 1}, cifar.CLASSES)
    data = nasprune.load_dataset("cifar10", root=tmp_path)
    arrays = load_file(data.meta["cache"])  # safetensors: no pickle involved
    assert arrays["test.x"].dtype == np.uint8 and arrays["test.x"].shape == (10, 3, 32, 32)
    assert np.array_equal(arrays["test.x"], data.test.x.numpy())
