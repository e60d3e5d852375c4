"""Decode image files (or in-memory bytes) into one uint8 array with PIL, in parallel.

Tiny images like CIFAR's decode in ~80 µs each, so for tens of thousands of them the
per-image Python overhead dominates; a process pool over chunks uses every core. Workers
return an error record instead of raising, so the message can name the bad file.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Sequence

import numpy as np

from nasprune.errors import NaspruneError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
# PIL modes without colour: auto channel detection makes a data set grayscale only when
# every image has one of these.
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_POOL_MIN_IMAGES = 2000  # below this a pool's start-up costs more than it saves

Item = tuple[str, "str | bytes"]  # (name for messages, file path or the file's bytes)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def decode_one(payload: str | bytes, size: int | None, mode: str):
    from PIL import Image, ImageOps

    src = io.BytesIO(payload) if isinstance(payload, bytes) else payload
    with Image.open(src) as im:
        gray = im.mode in _GRAY_MODES
        if size is not None and im.format == "JPEG":
            im.draft(mode, (size, size))  # JPEG can decode at reduced scale: much faster
        im = im.convert(mode)
        if size is not None and im.size != (size, size):
            # Keep the aspect ratio: scale the short side, centre-crop the long one.
            im = ImageOps.fit(im, (size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return (arr[:, :, None] if arr.ndim == 2 else arr), gray


def _decode_chunk(args: tuple[Sequence[Item], int | None, str]):
    """Decode a chunk; returns (images NHWC, gray flags, None) or (None, None, (name, why))."""
    items, size, mode = args
    arrays, grays = [], []
    first_shape = None
    for name, payload in items:
        try:
            arr, gray = decode_one(payload, size, mode)
        except Exception as e:  # PIL raises many types for damaged files
            return None, None, (name, f"{type(e).__name__}: {e}")
        if first_shape is None:
            first_shape = (name, arr.shape)
        elif arr.shape != first_shape[1]:
            return None, None, (name, _size_mismatch(first_shape, (name, arr.shape)))
        arrays.append(arr)
        grays.append(gray)
    if not arrays:
        return np.zeros((0, 0, 0, 0), np.uint8), np.zeros(0, bool), None
    return np.stack(arrays), np.array(grays, dtype=bool), None


def _size_mismatch(a: tuple[str, tuple], b: tuple[str, tuple]) -> str:
    return (f"images differ in size ({a[1][1]}x{a[1][0]} in '{a[0]}', {b[1][1]}x{b[1][0]} in "
            f"'{b[0]}'); pass image_size= to resize them all")


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def decode_images(items: Sequence[Item], size: int | None = None, mode: str = "RGB",
                  workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``items`` in order into ``(N, H, W, C)`` uint8 and per-image "was gray" flags.

    ``size`` resizes every image to ``size``×``size`` (aspect kept, centre crop); ``mode``
    is the PIL mode to convert to ("RGB" or "L"). A file PIL cannot read raises
    :class:`NaspruneError` naming it.
    """
    if not items:
        raise NaspruneError("no images to decode")
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1 or len(items) < _POOL_MIN_IMAGES:
        jobs = [(items, size, mode)]
        results = [_decode_chunk(jobs[0])]
    else:
        chunk = max(64, -(-len(items) // (workers * 8)))
        jobs = [(items[i : i + chunk], size, mode) for i in range(0, len(items), chunk)]
        # fork: workers only run PIL/numpy code and start instantly (spawn would re-import
        # torch in each); fall back to spawn where fork does not exist.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            results = pool.map(_decode_chunk, jobs)
    for job, (arr, _, err) in zip(jobs, results, strict=True):
        if err is not None:
            name, why = err
            if why.startswith("images differ in size"):
                raise NaspruneError(why)
            raise NaspruneError(f"cannot read image '{name}': {why}")
        if arr.shape[1:] != results[0][0].shape[1:]:
            raise NaspruneError(_size_mismatch((jobs[0][0][0][0], results[0][0].shape[1:]),
                                               (job[0][0][0], arr.shape[1:])))
    if len(results) == 1:
        return results[0][0], results[0][1]
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])
