"""A small U-Net (Ronneberger et al. 2015) for dense per-pixel prediction.

Two 2× downsamplings and two upsamplings, conv-BN-ReLU blocks, and skip connections
joined by concatenation, so pruning must keep each skip's channels consistent with the
decoder conv that reads the concatenation. Output: ``(N, num_classes, H, W)`` logits; H
and W must be divisible by 4 (8×8 digits, 28×28 MNIST and 32×32 CIFAR all are).
"""

from __future__ import annotations

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.models.registry import register_model
from nasprune.models.weight_init import kaiming_init


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3×3 conv-BN-ReLU layers: the U-Net's unit at every scale."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder (w, 2w), bottleneck 4w, decoder (2w, w) with concatenated skips, 1×1 head."""

    def __init__(self, num_classes: int = 2, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise NaspruneError(f"unet width must be a positive integer, got {width!r}")
        w = width
        self.enc1 = _block(in_channels, w)
        self.enc2 = _block(w, 2 * w)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _block(2 * w, 4 * w)
        # Nearest upsampling then a conv (not a transposed conv): no checkerboard artefacts,
        # and every learnable layer is an ordinary prunable conv.
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = _block(4 * w + 2 * w, 2 * w)
        self.dec1 = _block(2 * w + w, w)
        self.head = nn.Conv2d(w, num_classes, 1)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.enc1(x)
        s2 = self.enc2(self.pool(s1))
        b = self.bottleneck(self.pool(s2))
        d2 = self.dec2(torch.cat([self.up(b), s2], 1))
        d1 = self.dec1(torch.cat([self.up(d2), s1], 1))
        return self.head(d1)


@register_model("unet")
def unet(num_classes: int = 2, in_channels: int = 1, width: int = 16) -> nn.Module:
    return UNet(num_classes, in_channels, width)
