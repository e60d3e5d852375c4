"""CIFAR ResNets of He et al. 2016 (§4.2): ResNet-20/32/44/56/110.

Three stages of ``n`` BasicBlocks with 16, 32 and 64 channels (depth = 6n + 2), a 3×3 stem
and global average pooling. Shortcuts follow the paper's option B: identity where shapes
match, a 1×1 conv + BN projection where the stage changes width and stride — unlike
option A's zero-padding this is an ordinary layer the dependency graph can prune. The
residual sum is never written in place, so the forward traces cleanly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasprune.models.registry import register_model
from nasprune.models.weight_init import kaiming_init


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN, plus the (identity or projected) input, then ReLU."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def basic_stages(cin: int, widths: tuple[int, ...], blocks: int) -> list[nn.Sequential]:
    """One stage of ``blocks`` BasicBlocks per width; every stage after the first halves
    the resolution in its first block."""
    stages = []
    for i, w in enumerate(widths):
        layer = []
        for j in range(blocks):
            layer.append(BasicBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
            cin = w
        stages.append(nn.Sequential(*layer))
    return stages


class CifarResNet(nn.Module):
    """Stem, three stages (``layer1..3``) of ``blocks`` BasicBlocks, pool, ``fc``."""

    def __init__(self, blocks: int, num_classes: int = 10, in_channels: int = 3,
                 widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1, self.layer2, self.layer3 = basic_stages(widths[0], widths, blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _factory(depth: int):
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")

    def build(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return CifarResNet((depth - 2) // 6, num_classes, in_channels)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth} (He et al. 2016, option B shortcuts)."
    return build


resnet20 = register_model("resnet20")(_factory(20))
resnet32 = register_model("resnet32")(_factory(32))
resnet44 = register_model("resnet44")(_factory(44))
resnet56 = register_model("resnet56")(_factory(56))
resnet110 = register_model("resnet110")(_factory(110))
