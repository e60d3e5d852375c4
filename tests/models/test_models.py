"""Every registered model: shapes, gradients, input sizes, traceability, published sizes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from nasprune.errors import NaspruneError
from nasprune.models import create_model, list_models
from nasprune.pruning.graph import groups

ALL = list_models()
EXPECTED = {
    "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "resnet20", "resnet32", "resnet44",
    "resnet56", "resnet110", "resnet18", "mobilenetv2", "simplecnn", "lenet5", "digitscnn",
    "unet",
}
DENSE = {"unet"}  # per-pixel models: (N, classes, H, W) outputs


def out_shape(name: str, n: int, classes: int, size: int) -> tuple[int, ...]:
    return (n, classes, size, size) if name in DENSE else (n, classes)


def targets(name: str, classes: int, size: int) -> torch.Tensor:
    """Two samples' targets, touching the first and the last class."""
    y = torch.tensor([0, classes - 1])
    return y[:, None, None].expand(2, size, size).contiguous() if name in DENSE else y


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def output_layer(model: nn.Module) -> str:
    """Name of the output layer: the last Linear defined (the last conv of dense models)."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else [
        n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]


def test_zoo_is_complete() -> None:
    assert EXPECTED <= set(ALL)


@pytest.mark.parametrize("num_classes", [10, 7])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name: str, in_channels: int, num_classes: int) -> None:
    model = create_model(name, num_classes=num_classes, in_channels=in_channels).train()
    x = torch.randn(2, in_channels, 32, 32)
    logits = model(x)
    assert logits.shape == out_shape(name, 2, num_classes, 32)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, targets(name, num_classes, 32)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: gradient of {pname} is all zeros"


@pytest.mark.parametrize("size", [8, 28])
@pytest.mark.parametrize("name", ALL)
def test_small_and_odd_inputs(name: str, size: int) -> None:
    # 8×8 is the digits set, 28×28 MNIST: adaptive pooling must carry every model there.
    model = create_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == out_shape(name, 2, 10, size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_symbolically_traceable(name: str) -> None:
    # torch.fx fails on data-dependent Python control flow; the traced graph must agree.
    model = create_model(name).eval()
    traced = fx.symbolic_trace(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parametrize("name", ALL)
def test_dependency_groups(name: str) -> None:
    model = create_model(name)
    found = groups(model, torch.randn(1, 3, 32, 32))
    assert found, f"{name}: no prunable group"
    head = output_layer(model)
    for g in found:
        assert head not in g.out_layers, f"{name}: group {g.name} would prune the output layer"
        assert g.channels >= 1 and g.out_layers
    assert len({g.name for g in found}) == len(found)  # names identify groups


def test_dependency_groups_on_digits_shape() -> None:
    model = create_model("resnet20", in_channels=1)
    found = groups(model, torch.randn(1, 1, 8, 8))
    # 9 blocks' inner convs + 3 stage-wide residual groups (stem/stage 1, stage 2, stage 3).
    assert len(found) == 12
    assert sorted(g.channels for g in found) == [16] * 4 + [32] * 4 + [64] * 4


@pytest.mark.parametrize(
    ("name", "published", "rel"),
    [
        # He et al. 2016, Table 6 (option A); option B adds 2,752 projection parameters.
        ("resnet20", 0.27e6, 0.03),
        ("resnet56", 0.85e6, 0.03),
        ("resnet110", 1.7e6, 0.03),
        ("resnet18", 11.2e6, 0.01),  # the CIFAR ResNet-18 of most pruning papers
        ("mobilenetv2", 2.24e6, 0.01),  # CIFAR head (1280 → 10)
    ],
)
def test_published_parameter_counts(name: str, published: float, rel: float) -> None:
    assert n_params(create_model(name)) == pytest.approx(published, rel=rel)


def test_vgg16_parameter_count() -> None:
    assert 14.7e6 <= n_params(create_model("vgg16")) <= 15.0e6


def test_mobilenetv2_matches_imagenet_size_with_1000_classes() -> None:
    # Strides do not change parameters, so with 1000 classes it is the paper's 3.4 M net
    # (torchvision's count: 3,504,872).
    assert n_params(create_model("mobilenetv2", num_classes=1000)) == 3_504_872


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_resnet_depth_counts_weighted_layers(depth: int) -> None:
    # Depth = 3×3 convs + the fc layer; the 1×1 projection shortcuts are not counted.
    model = create_model(f"resnet{depth}")
    convs3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    proj = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs3) + len(linears) == depth
    assert len(proj) == 2
    assert {m.out_channels for m in convs3} == {16, 32, 64}


def test_mobilenetv2_width_mult() -> None:
    base = create_model("mobilenetv2")
    half = create_model("mobilenetv2", width_mult=0.5)
    assert n_params(half) < 0.5 * n_params(base)
    depthwise = [m for m in half.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert all(m.out_channels % 8 == 0 for m in half.modules() if isinstance(m, nn.Conv2d))
    assert half(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(NaspruneError, match="width_mult"):
        create_model("mobilenetv2", width_mult=0)


@pytest.mark.parametrize("name", ["resnet56", "vgg16", "mobilenetv2", "alexnet"])
def test_kaiming_init(name: str) -> None:
    model = create_model(name)
    for mname, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 2000:
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            std = m.weight.std().item()
            assert std == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.1), mname
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_create_model_records_arch_and_rejects_bad_input() -> None:
    model = create_model("resnet20", num_classes=7, in_channels=1)
    assert model.nasprune_arch == {
        "name": "resnet20", "kwargs": {"num_classes": 7, "in_channels": 1},
    }
    with pytest.raises(NaspruneError, match="unknown model .resnet21."):
        create_model("resnet21")
