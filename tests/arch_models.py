"""Small architectures outside the zoo, for pruning tests.

Each stresses one dependency pattern: a concatenation (DenseNet), depthwise-separable
blocks (MobileNetV1), a squeeze-and-excitation gate, multi-head attention over conv tokens,
grouped convolutions, residual adds and a plain MLP. All take ``(N, 3, 16, 16)`` inputs and
use random BatchNorm statistics so masking tests cannot pass by accident.
"""

from __future__ import annotations

import torch
from torch import nn


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class DenseBlockNet(nn.Module):
    """Two DenseNet layers: every layer's output is concatenated onto its input."""

    def __init__(self, num_classes: int = 10, growth: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.layer1 = nn.Sequential(_bn(16), nn.ReLU(), nn.Conv2d(16, growth, 3, padding=1))
        self.layer2 = nn.Sequential(
            _bn(16 + growth), nn.ReLU(), nn.Conv2d(16 + growth, growth, 3, padding=1)
        )
        self.transition = nn.Sequential(_bn(16 + 2 * growth), nn.ReLU(),
                                        nn.Conv2d(16 + 2 * growth, 24, 1), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([x, self.layer1(x)], 1)
        x = torch.cat([x, self.layer2(x)], 1)
        return self.head(self.transition(x))


class DepthwiseSeparableNet(nn.Module):
    """MobileNetV1-style: 3×3 depthwise conv + BN + ReLU, then 1×1 pointwise conv + BN + ReLU."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def dws(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), _bn(cin), nn.ReLU(),
                    nn.Conv2d(cin, cout, 1, bias=False), _bn(cout), nn.ReLU()]

        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), _bn(16), nn.ReLU(),
            *dws(16, 32, 1), *dws(32, 32, 2), *dws(32, 48, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class SENet(nn.Module):
    """Conv-BN-ReLU blocks with a squeeze-and-excitation gate and a residual add."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), _bn(32), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, bias=False), _bn(32))
        self.se = SqueezeExcite(32)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.se(self.conv(x)))
        return self.head(x)


class AttentionNet(nn.Module):
    """Conv stem → 4×4 tokens → multi-head self-attention (+ residual) → MLP → linear head."""

    def __init__(self, num_classes: int = 10, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, stride=4), _bn(dim), nn.ReLU())
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.stem(x).flatten(2).transpose(1, 2)  # (N, tokens, dim)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        t = t + self.mlp(t)
        return self.head(t.mean(1))


class GroupedConvNet(nn.Module):
    """ResNeXt-like: 1×1 conv, 3×3 grouped conv (4 groups), 1×1 conv, plus a residual add."""

    def __init__(self, num_classes: int = 10, groups: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), _bn(32), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(32, 32, 1, bias=False), _bn(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=groups, bias=False), _bn(32), nn.ReLU(),
            nn.Conv2d(32, 32, 1, bias=False), _bn(32),
        )
        self.grouped2 = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1, groups=groups),
                                      _bn(64), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(self.grouped2(x))


class ResidualNet(nn.Module):
    """Two basic residual blocks sharing one channel group, then a flatten into a linear layer."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), _bn(16), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), _bn(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, bias=False), _bn(16))
            for _ in range(2)
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(16 * 4, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self.blocks:
            x = torch.relu(x + b(x))
        return self.fc2(torch.relu(self.fc1(self.pool(x).flatten(1))))


class MLP(nn.Module):
    """Linear layers only (with a BatchNorm1d), on flattened 3×16×16 inputs."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 64), nn.BatchNorm1d(64),
                                 nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


ARCHITECTURES = {
    "dense": DenseBlockNet,
    "depthwise": DepthwiseSeparableNet,
    "se": SENet,
    "attention": AttentionNet,
    "grouped": GroupedConvNet,
    "residual": ResidualNet,
    "mlp": MLP,
}


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm layer non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(ARCHITECTURES[name](), seed).eval()


@torch.no_grad()
def mask_like(model: nn.Module, plans) -> nn.Module:
    """A copy of ``model`` with the channels of ``plans`` (``nasprune.pruning.plan``) zeroed.

    Zeroing a channel where it is produced — conv/linear rows and biases, norm γ and β (so the
    norm outputs exactly 0), attention q/k/v and output rows — makes it contribute nothing
    downstream, which is what physically removing it must reproduce.
    """
    import copy

    masked = copy.deepcopy(model)
    mods = dict(masked.named_modules())
    for p in plans:
        for name, idx in p.out_channels.items():
            if not idx:
                continue
            i = torch.tensor(idx)
            owner, _, proj = name.rpartition(".")
            if name not in mods and isinstance(mods.get(owner), nn.MultiheadAttention):
                # A head cut names the q/k/v projections of the converted layer
                # (nasprune.pruning.mha): here they are thirds of the packed in-projection.
                mha = mods[owner]
                rows = i + ("q_proj", "k_proj", "v_proj").index(proj) * mha.embed_dim
                mha.in_proj_weight[rows] = 0
                mha.in_proj_bias[rows] = 0
                continue
            mod = mods[name]
            if isinstance(mod, nn.MultiheadAttention):
                e = mod.embed_dim
                for off in (0, e, 2 * e):
                    mod.in_proj_weight[i + off] = 0
                    mod.in_proj_bias[i + off] = 0
                mod.out_proj.weight[i] = 0
                mod.out_proj.bias[i] = 0
                continue
            mod.weight[i] = 0
            if mod.bias is not None:
                mod.bias[i] = 0
    return masked
