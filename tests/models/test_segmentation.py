"""Demonstration 2 of bring-your-own-task: segmentation scored by mIoU, end to end.

A U-Net learns the 11-class digits segmentation (thresholded strokes labelled with the
digit), is searched and pruned to half its MACs with mIoU as the proxy score, then
fine-tuned on its own pixel-wise loss with itself as the distillation teacher.
"""

from __future__ import annotations

import copy

import pytest
import torch

import nasprune
from nasprune.data import load_dataset, segmentation_digits
from nasprune.data.segmentation import NUM_CLASSES, stroke_masks
from nasprune.metrics import count_macs, miou

EXAMPLE = torch.randn(1, 1, 8, 8)
FIT = dict(optimizer="adam", schedule="onecycle", lr=0.01, progress=False)


@pytest.fixture(scope="module")
def task() -> nasprune.Task:
    return segmentation_digits(seed=0, batch_size=128)


@pytest.fixture(scope="module")
def trained(task) -> torch.nn.Module:
    torch.manual_seed(0)
    model = nasprune.create_model("unet", num_classes=NUM_CLASSES, in_channels=1, width=8)
    nasprune.fit(model, task, epochs=20, **FIT)
    return model


def all_background_miou(task) -> float:
    batches = list(task.test)
    background = torch.zeros(1, NUM_CLASSES, 1, 1)
    background[0, 0] = 1.0
    outputs = [background.expand(y.shape[0], NUM_CLASSES, 8, 8) for _, y in batches]
    return miou(NUM_CLASSES)(outputs, batches)


def test_masks_are_thresholded_strokes_labelled_with_the_digit(task):
    digits = load_dataset("digits", seed=0)
    x, masks = zip(*task.test, strict=True)
    masks = torch.cat(masks)
    assert torch.equal(masks, stroke_masks(digits.test))  # same split, same order
    raw = digits.test.x[:, 0].float() * 16 / 255  # back to the 0..16 intensities
    assert torch.equal(masks > 0, raw >= 7.99)
    labels = digits.test.y[:, None, None].expand_as(masks)
    assert torch.equal(masks[masks > 0], labels[masks > 0] + 1)
    assert 0.25 < float((masks > 0).float().mean()) < 0.4  # strokes: about a third
    # Normalised like the built-in loader.
    ref = torch.cat([xb for xb, _ in digits.loader("test", batch_size=500)])
    torch.testing.assert_close(torch.cat(x), ref)


@pytest.mark.slow  # ~30 s on 2 busy cores: train, search, prune, fine-tune
def test_search_prune_finetune_a_segmentation_model_on_miou(task, trained):
    baseline = all_background_miou(task)
    assert baseline == pytest.approx(1 / 11 * 0.68, abs=0.01)  # background IoU / 11 classes
    unpruned = nasprune.evaluate(trained, task)["score"]
    assert unpruned > 0.85 > 10 * baseline

    result = nasprune.search(trained, EXAMPLE, task, strategy="random", trials=4,
                             target=nasprune.Budget(macs=0.5), bn_batches=5, progress=False)
    pruned = nasprune.prune(trained, EXAMPLE, result.best.ratios)
    assert count_macs(pruned, EXAMPLE) <= 0.5 * count_macs(trained, EXAMPLE)
    before = nasprune.evaluate(pruned, task)["score"]
    teacher = copy.deepcopy(trained)
    nasprune.finetune(pruned, task, epochs=10, teacher=teacher, kd_weight=0.5,
                      **{**FIT, "lr": 0.003})
    after = nasprune.evaluate(pruned, task)["score"]
    assert torch.equal(teacher.head.weight, trained.head.weight)  # the teacher is frozen
    assert after > before + 0.3
    assert after > unpruned - 0.2  # recovers to within 20 points of the unpruned model


def test_a_pruned_unet_round_trips_save_and_load(tmp_path):
    torch.manual_seed(1)
    model = nasprune.create_model("unet", num_classes=NUM_CLASSES, in_channels=1, width=8)
    ratios = {g.name: 0.25 + 0.5 * (i % 2)
              for i, g in enumerate(nasprune.pruning.groups(model, EXAMPLE))}
    pruned = nasprune.prune(model, EXAMPLE, ratios).eval()
    # Concatenated skips: the decoder convs read exactly the kept encoder channels.
    assert pruned.dec1[0].in_channels == pruned.dec2[3].out_channels + pruned.enc1[3].out_channels
    nasprune.save(pruned, tmp_path / "unet")
    loaded = nasprune.load(tmp_path / "unet").eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x))
    assert loaded(x).shape == (3, NUM_CLASSES, 8, 8)
