"""Small CNNs: the seed text's ``simplecnn``, ``lenet5`` and ``digitscnn`` for 8×8 digits."""

from __future__ import annotations

import torch
from torch import nn

from nasprune.models.registry import register_model
from nasprune.models.weight_init import kaiming_init


class SimpleCNN(nn.Module):
    """Two 3×3 convs (32, 64), adaptive average pool to 6×6, fc 128, fc classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(6),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 6 * 6, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling; adaptive pooling accepts any input size ≥ 8."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(5),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DigitsCNN(nn.Module):
    """A compact conv-BN net for 8×8 digits: three conv blocks then a linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, w),
            *block(w, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * w, num_classes))
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("simplecnn")
def simplecnn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return SimpleCNN(num_classes, in_channels)


@register_model("lenet5")
def lenet5(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return LeNet5(num_classes, in_channels)


@register_model("digitscnn")
def digitscnn(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> nn.Module:
    return DigitsCNN(num_classes, in_channels, width)
