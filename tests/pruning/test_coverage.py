"""Issue 14's coverage goal over torchvision and timm: every model of the issue's table is
searched at 50 % of its MACs, pruned, run, saved and loaded (``coverage_checks``).

Random weights, the smallest input each model accepts (64×64 mostly; LeViT's attention
biases are built for its ``img_size``), real images: scikit-learn's digits upscaled to RGB.
The table's failures before this check — GhostNet and MobileViT-v2 emptying a layer,
ShuffleNet's channel shuffle, EdgeNeXt's and LeViT's channel maps, ReXNet and SSDlite
taking minutes — are all here. torchvision and timm need the torch they were built for:
these tests run in the vision environment (``make test``) and skip elsewhere.
"""

from __future__ import annotations

import pytest
import torch

import nasprune
from coverage_checks import check_coverage, digit_images
from vision_env import vision_modules

timm, tvm, detection, segmentation = vision_modules(
    "timm", "torchvision.models", "torchvision.models.detection",
    "torchvision.models.segmentation")

pytestmark = pytest.mark.vision
slow = pytest.mark.slow


def _tv(name: str, **kw):
    return lambda: getattr(tvm, name)(weights=None, num_classes=10, **kw)


def _timm(name: str, **kw):
    return lambda: timm.create_model(name, pretrained=False, num_classes=10, **kw)


def _seg(name: str):
    return lambda: getattr(segmentation, name)(weights=None, weights_backbone=None,
                                               num_classes=2)


# (id, builder, input size, kind, marks): kind "cls" (logits), "seg" (dict of masks),
# "det" (list of images in, list of box dicts out).
MODELS = [
    ("tv-resnet18", _tv("resnet18"), 64, "cls", []),
    ("tv-resnext50_32x4d", _tv("resnext50_32x4d"), 64, "cls", [slow]),
    ("tv-wide_resnet50_2", _tv("wide_resnet50_2"), 64, "cls", [slow]),
    ("tv-densenet121", _tv("densenet121"), 64, "cls", [slow]),
    ("tv-googlenet", _tv("googlenet", aux_logits=False, init_weights=False), 64, "cls", [slow]),
    ("tv-inception_v3", _tv("inception_v3", aux_logits=False, init_weights=False), 80, "cls",
     [slow]),
    ("tv-mobilenet_v2", _tv("mobilenet_v2"), 64, "cls", []),
    ("tv-mobilenet_v3_small", _tv("mobilenet_v3_small"), 64, "cls", []),
    ("tv-mnasnet0_5", _tv("mnasnet0_5"), 64, "cls", []),
    ("tv-squeezenet1_0", _tv("squeezenet1_0"), 64, "cls", []),
    ("tv-efficientnet_b0", _tv("efficientnet_b0"), 64, "cls", [slow]),
    ("tv-efficientnet_v2_s", _tv("efficientnet_v2_s"), 64, "cls", [slow]),
    ("tv-regnet_x_400mf", _tv("regnet_x_400mf"), 64, "cls", [slow]),
    ("tv-convnext_tiny", _tv("convnext_tiny"), 64, "cls", [slow]),
    ("tv-alexnet", _tv("alexnet"), 64, "cls", [slow]),
    ("tv-vgg16_bn", _tv("vgg16_bn"), 64, "cls", [slow]),
    ("tv-shufflenet_v2_x1_0", _tv("shufflenet_v2_x1_0"), 64, "cls", [slow]),
    ("tv-fcn_resnet50", _seg("fcn_resnet50"), 64, "seg", [slow]),
    ("tv-deeplabv3_mobilenet_v3_large", _seg("deeplabv3_mobilenet_v3_large"), 64, "seg", [slow]),
    ("tv-lraspp_mobilenet_v3_large", _seg("lraspp_mobilenet_v3_large"), 64, "seg", [slow]),
    ("tv-fasterrcnn_mobilenet_v3_large_fpn", lambda: detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=96, max_size=96,
        rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_detections_per_img=10),
     96, "det", [slow]),
    ("tv-ssdlite320_mobilenet_v3_large", lambda: detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3, detections_per_img=10),
     96, "det", [slow]),
    ("timm-resnet26d", _timm("resnet26d"), 64, "cls", [slow]),
    ("timm-efficientnet_b0", _timm("efficientnet_b0"), 64, "cls", [slow]),
    ("timm-convnext_atto", _timm("convnext_atto"), 64, "cls", []),
    ("timm-regnetx_002", _timm("regnetx_002"), 64, "cls", []),
    ("timm-ghostnet_100", _timm("ghostnet_100"), 64, "cls", [slow]),
    ("timm-mobilevitv2_050", _timm("mobilevitv2_050"), 64, "cls", [slow]),
    ("timm-rexnet_100", _timm("rexnet_100"), 64, "cls", [slow]),
    ("timm-edgenext_xx_small", _timm("edgenext_xx_small"), 64, "cls", [slow]),
    ("timm-levit_128s", _timm("levit_128s", img_size=64), 64, "cls", [slow]),
    ("tv-vit_b_16", _tv("vit_b_16", image_size=64), 64, "cls", [slow]),
    ("tv-swin_t", _tv("swin_t"), 64, "cls", [slow]),
    # MaxViT's attention is refused with one message naming the layer
    # (test_vision_attention.py checks the refusal).
    ("tv-maxvit_t", _tv("maxvit_t"), 224, "cls", [pytest.mark.xfail(
        run=False, reason="MaxViT attention is refused: its heads are not cut exactly yet")]),
    ("timm-deit_tiny_patch16_224", _timm("deit_tiny_patch16_224", img_size=64), 64, "cls",
     [slow]),
]


def _pixel_accuracy(outputs, batches) -> float:
    """Digit foreground segmentation: the share of pixels whose class is right."""
    hits = [(o["out"].argmax(1) == (x[:, 0] > 0.5).long()).float().mean()
            for o, (x, _) in zip(outputs, batches, strict=True)]
    return float(torch.stack(hits).mean())


def _top_score(outputs, batches) -> float:
    """The mean best detection score (random weights: a ranking signal, nothing more)."""
    best = [float(d["scores"].max()) if len(d["scores"]) else 0.0
            for out in outputs for d in out]
    return sum(best) / len(best)


def _task_and_example(kind: str, size: int):
    x, y = digit_images(16, size)
    if kind == "det":
        batches = [([img for img in x[i:i + 4]], y[i:i + 4]) for i in (0, 4)]
        task = nasprune.Task(train=batches[:1], val=batches[1:], score=_top_score,
                             forward=lambda model, batch: model(batch[0]))
        return task, ([x[8]],)
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    score = _pixel_accuracy if kind == "seg" else None
    task = nasprune.Task(train=batches[:1], val=batches[1:],
                         **({"score": score} if score else {}))
    return task, x[:2]


@pytest.mark.parametrize(
    ("build", "size", "kind"),
    [pytest.param(b, s, k, id=i, marks=m) for i, b, s, k, m in MODELS])
def test_model_is_searched_pruned_run_saved_and_loaded(build, size, kind, tmp_path, request):
    task, example = _task_and_example(kind, size)
    numbers = check_coverage(build, example, task, tmp_path, same_shapes=kind != "det")
    assert numbers["macs_kept"] <= 0.51
    # The table of issue 14 (BENCHMARKS.md) is read from these lines (pytest -s).
    print(f"\ncoverage {request.node.callspec.id}: " +
          " ".join(f"{k}={v:.3f}" for k, v in numbers.items()))
