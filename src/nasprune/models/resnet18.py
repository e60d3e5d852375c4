"""ResNet-18 in its CIFAR form (the one most CIFAR pruning papers use, ≈ 11.2 M parameters).

The ImageNet stem (7×7 stride 2 + max-pool) would leave a 32×32 image at 8×8 before the first
block, so the stem is a single 3×3 stride-1 conv and there is no max-pool. Four stages of two
BasicBlocks with 64, 128, 256, 512 channels (strides 1, 2, 2, 2), 1×1 conv + BN projection
shortcuts, adaptive average pooling and one linear layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasprune.models.registry import register_model
from nasprune.models.resnet_cifar import basic_stages
from nasprune.models.weight_init import kaiming_init


class ResNet18(nn.Module):
    """Stem, ``layer1..4`` (two BasicBlocks each), global pool, ``fc``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 widths: tuple[int, ...] = (64, 128, 256, 512), blocks: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1, self.layer2, self.layer3, self.layer4 = basic_stages(widths[0], widths, blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-18: 3×3 stem, no max-pool, BasicBlocks 64..512."""
    return ResNet18(num_classes, in_channels)
