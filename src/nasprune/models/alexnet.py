"""AlexNet (Krizhevsky et al. 2012) resized for 32×32 images, with BatchNorm.

The ImageNet stem (11×11 stride 4) would shrink a CIFAR image to almost nothing, so every
conv is 3×3 stride 1 and only max-pooling downsamples; the five conv widths (64, 192, 384,
256, 256) and the three-layer dropout classifier keep AlexNet's shape. An adaptive max-pool
to 2×2 before the classifier lets any input from 8×8 (digits) upward work.
"""

from __future__ import annotations

import torch
from torch import nn

from nasprune.models.registry import register_model
from nasprune.models.weight_init import kaiming_init


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class AlexNet(nn.Module):
    """Five 3×3 conv-BN-ReLU layers, two max-pools, adaptive pool 2×2, three linears."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, hidden: int = 1024,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(in_channels, 64),
            nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn(64, 192),
            nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn(192, 384),
            *_conv_bn(384, 256),
            *_conv_bn(256, 256),
            nn.AdaptiveMaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(256 * 2 * 2, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("alexnet")
def alexnet(num_classes: int = 10, in_channels: int = 3, hidden: int = 1024,
            dropout: float = 0.5) -> nn.Module:
    return AlexNet(num_classes, in_channels, hidden, dropout)
