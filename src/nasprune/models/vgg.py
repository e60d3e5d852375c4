"""VGG (Simonyan & Zisserman 2015) for CIFAR: 3×3 conv-BN-ReLU stacks, one 512→classes head.

This is the widely used CIFAR variant (VGG-16 ≈ 14.7 M parameters): the ImageNet 4096-wide
classifier is replaced by a single linear layer on the 512-d pooled feature. Max-pools use
``ceil_mode`` and the features end in an adaptive average pool, so inputs from 8×8 (where
the later pools see a 1×1 map) to 32×32 and beyond all work; at 32×32 this is exactly the
usual network.
"""

from __future__ import annotations

import torch
from torch import nn

from nasprune.models.registry import register_model
from nasprune.models.weight_init import kaiming_init

# Numbers are conv widths, "M" a 2×2 max-pool (configurations A, B, D, E of the paper).
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """``features`` (conv stacks + pools + global pool) then ``classifier`` (one linear)."""

    def __init__(self, config: list[int | str], num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                cout = int(item)
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                           nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin, num_classes))
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _factory(name: str):
    def build(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return VGG(CONFIGS[name], num_classes, in_channels)

    build.__name__ = name
    build.__doc__ = f"CIFAR {name.upper()} with BatchNorm."
    return build


vgg11 = register_model("vgg11")(_factory("vgg11"))
vgg13 = register_model("vgg13")(_factory("vgg13"))
vgg16 = register_model("vgg16")(_factory("vgg16"))
vgg19 = register_model("vgg19")(_factory("vgg19"))
