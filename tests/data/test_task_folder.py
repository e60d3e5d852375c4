"""Bring your own data: an image folder on disk read lazily by a DataLoader with two worker
processes gives the same scores as the in-memory data set holding the same images, through
search, prune, finetune and evaluate; long passes over user batches show progress."""

from __future__ import annotations

import copy
import io
import sys

import pytest
import torch
from torch import nn

import nasprune
from nasprune import _progress
from nasprune.data import FolderImages, folder_loader
from nasprune.errors import NaspruneError
from nasprune.search import Budget, Proxy, SearchSpace
from nasprune.task import Task

WORKERS = 2


@pytest.fixture(scope="module")
def digits_folder(digits, tmp_path_factory):
    """The digits splits as 8×8 grayscale PNGs in ``<split>/<class>/<index>.png``, where
    ``index`` is the image's position in the in-memory split."""
    from PIL import Image

    root = tmp_path_factory.mktemp("digits-png")
    for split in ("train", "val", "test"):
        s = digits.split(split)
        for i, (x, y) in enumerate(zip(s.x, s.y, strict=True)):
            folder = root / split / str(int(y))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[0].numpy(), mode="L").save(folder / f"{i:04d}.png")
    return root


def loader(root, digits, split, order=None, **kw):
    """A 2-worker loader of one split; ``order`` lists in-memory indices to read in turn."""
    sampler = None
    if order is not None:
        files = FolderImages(root, split, digits.mean, digits.std).items
        where = {int(path[-8:-4]): pos for pos, (path, _) in enumerate(files)}
        sampler = [where[int(i)] for i in order]
    kw.setdefault("num_workers", WORKERS)
    return folder_loader(root, split, digits.mean, digits.std, sampler=sampler, **kw)


def folder_task(root, digits) -> Task:
    return Task(train=loader(root, digits, "train", shuffle=True, batch_size=64),
                val=loader(root, digits, "val"), test=loader(root, digits, "test"),
                name="digits-png", num_classes=10)


def test_the_folder_holds_the_in_memory_images_exactly(digits_folder, digits):
    images = FolderImages(digits_folder, "test", digits.mean, digits.std)
    assert images.classes == digits.classes and len(images) == len(digits.test)
    x, y = images[0]
    index = int(images.items[0][0][-8:-4])
    ref_x, ref_y = next(iter(digits.loader(digits.test.subset(len(digits.test)),
                                           batch_size=len(digits.test))))
    assert y == int(digits.test.y[index]) == 0
    assert torch.equal(x, ref_x[index])  # uint8 PNG round trip, same normalisation


def test_evaluate_on_the_folder_equals_the_in_memory_path(trained_digits_cnn, digits_folder,
                                                          digits):
    out = nasprune.evaluate(trained_digits_cnn, Task(test=loader(digits_folder, digits, "test")))
    ref = nasprune.evaluate(trained_digits_cnn, digits)
    assert out["n"] == ref["n"] == len(digits.test)
    assert out["score"] == pytest.approx(ref["top1"], abs=1e-12)
    assert 0.9 < out["score"] < 1.0  # a trained model, and a score that can be wrong
    assert out["loss"] == pytest.approx(ref["loss"], rel=1e-5)


def test_proxy_on_the_folder_equals_the_in_memory_proxy(trained_digits_cnn, digits_folder,
                                                        digits):
    """Read in the in-memory proxy's order, the folder gives its batches and its scores."""
    model = trained_digits_cnn
    mem = Proxy(model, digits, bn_batches=4, val_size=1000, device="cpu", channels_last=False)
    shuffled = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(0))
    task = Task(train=loader(digits_folder, digits, "train", shuffled, batch_size=64),
                val=loader(digits_folder, digits, "val", range(len(digits.val))))
    disk = Proxy(model, task, bn_batches=4, val_size=1000, device="cpu", progress=False,
                 channels_last=False)
    assert disk.val_count == mem.val_count == len(digits.val)
    for ours, theirs in zip(disk._train_batches + disk._val_batches,
                            mem._train_batches + mem._val_batches, strict=True):
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    space = SearchSpace(model, digits.example_input())
    scores = []
    for m in (0.3, 0.6):
        ratios = space.prune_ratios(space.project(torch.full((space.dim,), 0.5).numpy(),
                                                  Budget(macs=m)))
        scores.append(disk.score(ratios))
        assert scores[-1] == pytest.approx(mem.score(ratios), abs=1e-9)
    assert scores[0] < scores[1]  # a real ranking: the smaller network scores lower


def test_search_prune_finetune_evaluate_on_the_folder(trained_digits_cnn, digits_folder,
                                                      digits):
    model = trained_digits_cnn
    task = folder_task(digits_folder, digits)
    example = digits.example_input()
    result = nasprune.search(model, example, task, strategy="random",
                             target=Budget(macs=0.5), trials=3, bn_batches=4, val_size=300,
                             progress=False)
    pruned = nasprune.prune(model, example, result.best.ratios)
    assert nasprune.metrics.count_macs(pruned, example) <= 0.5 * nasprune.metrics.count_macs(
        model, example) * 1.01
    before = nasprune.evaluate(pruned, task, progress=False)["score"]
    # A copy as teacher: fit freezes its teacher's parameters, and ``model`` is shared.
    fit = nasprune.finetune(pruned, task, epochs=2, teacher=copy.deepcopy(model),
                            progress=False)
    assert fit.samples == 2 * len(digits.train) and fit.history[-1]["val_score"] > 0.85
    after = nasprune.evaluate(pruned, task, progress=False)
    assert after["score"] > 0.85 and after["score"] >= before - 0.02
    assert after["score"] == pytest.approx(nasprune.evaluate(pruned, digits)["top1"], abs=1e-12)


class _Flattens(nn.Module):
    """A user CNN that ``.view()`` s its conv output: it cannot take NHWC images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(144, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.view(x.shape[0], -1))


def test_the_proxy_runs_an_image_task_in_nhwc_when_the_model_allows(trained_digits_cnn,
                                                                    digits_folder, digits):
    """NHWC is what keeps the DataLoader proxy as fast as the in-memory one (BENCHMARKS.md)."""
    task = Task(train=loader(digits_folder, digits, "train", batch_size=64, num_workers=0),
                val=loader(digits_folder, digits, "val", num_workers=0))
    fast = Proxy(trained_digits_cnn, task, bn_batches=2, val_size=100, progress=False)
    assert fast.channels_last
    assert fast._val_batches[0][0].is_contiguous(memory_format=torch.channels_last)
    flat = _Flattens()
    nhwc = copy.deepcopy(flat).to(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="view"):  # why the check is needed
        nhwc(digits.example_input(2).contiguous(memory_format=torch.channels_last))
    plain = Proxy(flat, task, bn_batches=2, val_size=100, progress=False)
    assert not plain.channels_last and flat.training is True
    assert flat.conv.weight.is_contiguous()  # the user's model is left as it was
    assert 0.0 <= plain.score({}) <= 1.0  # it still scores, in NCHW


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_long_passes_over_user_batches_show_progress(trained_digits_cnn, digits_folder, digits,
                                                     monkeypatch):
    monkeypatch.setattr(_progress, "DELAY", 0.0)  # every pass counts as long here
    task = Task(train=loader(digits_folder, digits, "train", batch_size=64, num_workers=0),
                val=loader(digits_folder, digits, "val", num_workers=0),
                test=loader(digits_folder, digits, "test", num_workers=0))
    for enabled, stream in ((True, _Terminal()), (False, _Terminal()), (True, io.StringIO())):
        monkeypatch.setattr(sys, "stderr", stream)
        nasprune.evaluate(trained_digits_cnn, task, progress=enabled)
        Proxy(trained_digits_cnn, task, bn_batches=3, val_size=200, progress=enabled)
        text = stream.getvalue()
        shown = enabled and stream.isatty()
        assert ("evaluate test" in text and f"/{len(task.test)}" in text) is shown
        assert ("proxy: training batches" in text and "proxy: validation samples" in text) is shown
        assert (text == "") is not shown


def test_bad_folders_are_one_clear_error(digits_folder, digits, tmp_path):
    with pytest.raises(NaspruneError, match="has no val/ folder"):
        (tmp_path / "train" / "a").mkdir(parents=True)
        folder_loader(tmp_path, "val", (0.5,), (0.5,))
    with pytest.raises(NaspruneError, match="unknown split 'dev'"):
        folder_loader(digits_folder, "dev", (0.5,), (0.5,))
    with pytest.raises(NaspruneError, match="1 \\(grayscale\\) or 3 \\(RGB\\) values"):
        folder_loader(digits_folder, "test", (0.5, 0.5), (0.5, 0.5))
    with pytest.raises(NaspruneError, match="does not exist"):
        folder_loader(tmp_path / "missing", "test", (0.5,), (0.5,))
    bad = next((digits_folder / "test" / "3").iterdir())
    saved = bad.read_bytes()
    try:
        bad.write_bytes(b"not a png")
        with pytest.raises(NaspruneError, match=f"cannot read image '.*{bad.name}'"):
            list(folder_loader(digits_folder, "test", digits.mean, digits.std, num_workers=0))
    finally:
        bad.write_bytes(saved)
