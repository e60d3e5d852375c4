"""MobileNetV2 (Sandler et al. 2018) adapted to 32×32 inputs.

Inverted residual blocks: 1×1 expansion, 3×3 depthwise conv, 1×1 linear projection, with an
identity shortcut when stride is 1 and widths match. For CIFAR the stem is stride 1 and the
second stage (24 channels) also keeps stride 1, so a 32×32 image reaches the last stage at
4×4 instead of 1×1 (the usual CIFAR adaptation); adaptive pooling makes 8×8 inputs work too.
``width_mult`` scales every width, rounded to a multiple of 8 as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.models.registry import register_model
from nasprune.models.weight_init import kaiming_init

# (expansion t, output channels c, blocks n, first stride s); strides adjusted for 32×32.
SETTINGS: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # ImageNet: stride 2
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never dropping more than 10 % (paper code)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1,
                   groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1×1) → depthwise 3×3 → project (1×1, no activation); residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout  # fixed at build time: traceable
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu6(cin, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """Stem, 17 inverted residual blocks (``features``), 1×1 conv to 1280, pool, ``classifier``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if width_mult <= 0:
            raise NaspruneError(f"mobilenetv2: width_mult must be positive, got {width_mult!r}")
        cin = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, cin, 3, stride=1)]
        for t, c, n, s in SETTINGS:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(_conv_bn_relu6(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0,
                dropout: float = 0.2) -> nn.Module:
    """CIFAR MobileNetV2 (stride-1 stem and second stage); ``width_mult`` scales all widths."""
    return MobileNetV2(num_classes, in_channels, width_mult, dropout)
