"""A torchvision detector pruned, fine-tuned on its own loss dict, evaluated, saved, loaded.

fasterrcnn_mobilenet_v3_large_fpn returns a loss dict in train mode and a list of dicts
(boxes, labels, scores) in eval mode, so its output layers — the box predictor's
``cls_score``/``bbox_pred`` and the RPN head's ``cls_logits``/``bbox_pred`` — are never
"the last layer that ran" alone; ``nasprune.prune`` must find and keep them (and keep the
FPN outputs that the RPN head, shared by every level, reads).

The images are real: scikit-learn's digits, three classes (0, 1, 2), each digit upscaled
×4 to 32×32 and pasted at a seeded position on a 96×96 black canvas, so every box is the
exact square the digit was pasted into. The model is randomly initialised (weights=None,
weights_backbone=None) and trained a few steps only: this checks the mechanics (pruning
keeps the heads, the loss dict trains, scores and checkpoints round-trip), not accuracy.

torchvision needs the torch it was built for, which is not the torch of the main
environment: these tests run in the vision environment (``make test`` builds
``.venv-vision``) and skip elsewhere.
"""

from __future__ import annotations

import pytest
import torch

import nasprune
from vision_env import vision_modules

(detection,) = vision_modules("torchvision.models.detection")
fasterrcnn_mobilenet_v3_large_fpn = detection.fasterrcnn_mobilenet_v3_large_fpn

pytestmark = [pytest.mark.vision, pytest.mark.slow]

CANVAS, SCALE, CLASSES = 96, 4, 3
HEADS = {"roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred",
         "rpn.head.cls_logits", "rpn.head.bbox_pred"}


def digit_scenes(n: int, seed: int) -> list[tuple[torch.Tensor, dict]]:
    """``n`` canvases with one or two pasted digits each and their true boxes and labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    keep = [i for i, y in enumerate(bunch.target) if y < CLASSES]
    g = torch.Generator().manual_seed(seed)
    size = 8 * SCALE
    scenes = []
    for _ in range(n):
        img = torch.zeros(3, CANVAS, CANVAS)
        boxes, labels = [], []
        count = int(torch.randint(1, 3, (1,), generator=g))
        for k in range(count):
            i = keep[int(torch.randint(len(keep), (1,), generator=g))]
            digit = torch.tensor(bunch.images[i], dtype=torch.float32) / 16.0
            patch = digit.repeat_interleave(SCALE, 0).repeat_interleave(SCALE, 1)
            # Two digits go to the left and right halves, so their boxes never overlap.
            lo, hi = (0, CANVAS - size) if count == 1 else (k * CANVAS // 2,
                                                             (k + 1) * CANVAS // 2 - size)
            x = int(torch.randint(lo, hi + 1, (1,), generator=g))
            y = int(torch.randint(0, CANVAS - size + 1, (1,), generator=g))
            img[:, y:y + size, x:x + size] = patch
            boxes.append([x, y, x + size, y + size])
            labels.append(int(bunch.target[i]) + 1)  # 0 is the background class
        scenes.append((img, {"boxes": torch.tensor(boxes, dtype=torch.float32),
                             "labels": torch.tensor(labels)}))
    return scenes


def batched(scenes: list, size: int) -> list[tuple[list, list]]:
    return [([s[0] for s in scenes[i:i + size]], [s[1] for s in scenes[i:i + size]])
            for i in range(0, len(scenes), size)]


def detector_forward(model, batch):
    """Train mode: the loss dict (needs the targets); eval mode: the detections."""
    images, targets = batch
    return model(images, targets) if model.training else model(images)


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def map50(outputs, batches) -> float:
    """Mean over classes of the average precision at IoU 0.5 (all-point interpolation)."""
    aps = []
    for c in range(1, CLASSES + 1):
        dets, n_true = [], 0
        for out, (_, targets) in zip(outputs, batches, strict=True):
            for det, t in zip(out, targets, strict=True):
                truth = t["boxes"][t["labels"] == c]
                n_true += len(truth)
                mine = det["labels"] == c
                boxes, scores = det["boxes"][mine], det["scores"][mine]
                used = torch.zeros(len(truth), dtype=torch.bool)
                for j in scores.argsort(descending=True).tolist():
                    hit = False
                    if len(truth):
                        iou = _iou(boxes[j:j + 1], truth)[0].masked_fill(used, 0)
                        k = int(iou.argmax())
                        if iou[k] >= 0.5:
                            used[k] = hit = True
                    dets.append((float(scores[j]), hit))
        if n_true == 0:
            continue
        dets.sort(key=lambda d: -d[0])
        hits = torch.tensor([h for _, h in dets], dtype=torch.float32)
        tp = hits.cumsum(0)
        recall = torch.cat([torch.zeros(1), tp / n_true])
        precision = torch.cat([torch.ones(1), tp / torch.arange(1, len(dets) + 1)])
        for i in range(len(precision) - 2, -1, -1):  # the precision envelope
            precision[i] = max(precision[i], precision[i + 1])
        aps.append(float(((recall[1:] - recall[:-1]) * precision[1:]).sum()))
    return sum(aps) / len(aps) if aps else 0.0


def make_detector() -> torch.nn.Module:
    torch.manual_seed(0)
    return fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=CLASSES + 1,
        min_size=CANVAS, max_size=CANVAS, rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=50, box_detections_per_img=20)


@pytest.fixture(scope="module")
def task() -> nasprune.Task:
    return nasprune.Task(train=batched(digit_scenes(16, seed=0), 4),
                         val=batched(digit_scenes(8, seed=1), 4),
                         test=batched(digit_scenes(8, seed=2), 4),
                         forward=detector_forward, score=map50, name="digit-boxes")


@pytest.fixture(scope="module")
def trained(task):
    model = make_detector()
    nasprune.fit(model, task, epochs=2, optimizer="adam", lr=1e-3, progress=False,
                 validate=False)
    return model.eval()


def _loss(model, batches) -> float:
    """Mean summed loss dict over fixed batches (train mode, no gradients)."""
    model.train()
    torch.manual_seed(0)  # the RPN and ROI heads sample proposals at random
    with torch.no_grad():
        total = sum(float(sum(model(x, t).values())) for x, t in batches)
    model.eval()
    return total / len(batches)


def test_map50_scores_the_true_boxes_one_and_shifted_boxes_zero(task):
    perfect = [[{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))}
                for t in targets] for _, targets in task.test]
    assert map50(perfect, task.test) == 1.0
    shifted = [[{**d, "boxes": d["boxes"] + 20.0} for d in out] for out in perfect]
    assert map50(shifted, task.test) == 0.0  # IoU of a 32-px box shifted 20 px: < 0.5


def test_prune_keeps_the_output_heads_and_the_model_still_detects(trained, task):
    example = ([task.val[0][0][0]],)
    # Their inputs may shrink with the layers before them; their outputs never do.
    cut = {n for g in nasprune.pruning.groups(trained, example) for n in g.out_layers}
    assert not cut & HEADS
    assert not any(n.startswith("backbone.fpn.layer_blocks") for n in cut)
    assert "roi_heads.box_head.fc7" in cut
    pruned = nasprune.prune(trained, example, 0.3)
    layers = dict(pruned.named_modules())
    assert layers["roi_heads.box_predictor.cls_score"].out_features == CLASSES + 1
    assert layers["roi_heads.box_predictor.bbox_pred"].out_features == 4 * (CLASSES + 1)
    assert layers["rpn.head.cls_logits"].out_channels == 15  # 5 sizes × 3 aspect ratios
    assert layers["rpn.head.bbox_pred"].out_channels == 60
    assert layers["roi_heads.box_head.fc6"].out_features < 1024  # the rest is pruned
    assert nasprune.metrics.count_params(pruned) < 0.8 * nasprune.metrics.count_params(trained)
    with torch.no_grad():
        (det,) = pruned(example[0])
    assert set(det) == {"boxes", "labels", "scores"} and det["boxes"].shape[1] == 4


def test_finetune_on_the_loss_dict_then_evaluate_save_and_load(trained, task, tmp_path):
    example = ([task.val[0][0][0]],)
    pruned = nasprune.prune(trained, example, 0.3)
    before = _loss(pruned, task.train[:3])
    nasprune.finetune(pruned, task, epochs=2, optimizer="adam", lr=1e-3, progress=False,
                      validate=False)
    after = _loss(pruned, task.train[:3])
    assert after < before  # the detector's own loss dict (RPN + ROI terms) trained it
    result = nasprune.evaluate(pruned, task, split="test")
    assert 0.0 <= result["score"] <= 1.0 and result["maximize"] is True
    assert result["n"] == 8 and result["loss"] is None  # eval mode returns no loss dict
    path = nasprune.save(pruned, tmp_path / "detector")
    back = nasprune.load(path, base=make_detector())
    with torch.no_grad():
        a, b = pruned.eval()(task.test[0][0]), back(task.test[0][0])
    for da, db in zip(a, b, strict=True):
        assert torch.equal(da["labels"], db["labels"])
        torch.testing.assert_close(da["boxes"], db["boxes"])
    assert nasprune.evaluate(back, task, split="test")["score"] == result["score"]
