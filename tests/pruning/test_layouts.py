"""Layouts Torch-Pruning's channel maps got wrong (issue 14's table), in small models.

- GhostNet: ``cat(primary, depthwise(primary))`` ties group channels ``j`` and ``C/2 + j``
  to one primary channel; a ratio must remove both or neither and never empty the layer.
- ShuffleNet: ``chunk`` + ``cat`` + channel shuffle permutes channels; groups that cross a
  shuffle are left alone, the branches' middle widths are pruned.
- LeViT: a slice over the rows of a channels-last view is not a slice of the channels.
- ReXNet: a residual added onto the first channels of a wider output (``x[:, :c] += s``).

Each pruned model must equal the original with the removed channels zeroed.
"""

from __future__ import annotations

import torch
from torch import nn

from arch_models import mask_like, randomize_bn
from nasprune.pruning import groups, plan, prune


def _bn_conv(c_in: int, c_out: int, k: int = 1, groups: int = 1, act: bool = True):
    layers = [nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, *([nn.ReLU()] if act else []))


class Ghost(nn.Module):
    def __init__(self, c_in: int, c_out: int, act: bool = True) -> None:
        super().__init__()
        half = c_out // 2
        self.primary = _bn_conv(c_in, half, act=act)
        self.cheap = _bn_conv(half, half, 3, groups=half, act=act)

    def forward(self, x):
        a = self.primary(x)
        return torch.cat([a, self.cheap(a)], 1)


class GhostNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _bn_conv(3, 16, 3)
        self.ghost1, self.ghost2 = Ghost(16, 32), Ghost(32, 16, act=False)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        # This operand order makes the 16-channel stem the group's root (as in timm's
        # GhostNet), so its channels j and 8 + j meet in one primary channel.
        x = self.ghost2(self.ghost1(x)) + x
        return self.head(x.mean((2, 3)))


def _shuffle(x: torch.Tensor, g: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, g, c // g, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(_bn_conv(half, half), _bn_conv(half, half, 3, half, False),
                                    _bn_conv(half, half))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return _shuffle(torch.cat([a, self.branch(b)], 1))


class ShuffleNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _bn_conv(3, 16, 3)
        self.units = nn.Sequential(ShuffleUnit(16), ShuffleUnit(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.units(self.stem(x)).mean((2, 3)))


class TokenDownsample(nn.Module):
    """LeViT's subsampling: 4×4 tokens viewed channels-last, every other row and column."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        t = self.fc1(x).relu()
        b, n, c = t.shape
        t = t.view(b, 4, 4, c)[:, ::2, ::2].reshape(b, -1, c)
        return self.head(self.fc2(t).relu().mean(1))


class PartialResidual(nn.Module):
    """ReXNet's block: the input is added onto the first channels of a wider output."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _bn_conv(3, 8, 3)
        self.expand = _bn_conv(8, 24)
        self.project = _bn_conv(24, 12, act=False)
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        x = self.stem(x)
        out = self.project(self.expand(x))
        out = torch.cat([out[:, :8] + x, out[:, 8:]], 1)
        return self.head(out.mean((2, 3)))


def _exact(model: nn.Module, x: torch.Tensor, ratios) -> nn.Module:
    """Prune and check the result against the original with those channels zeroed."""
    model = randomize_bn(model).eval()
    plans = plan(model, x, ratios)
    pruned = prune(model, x, ratios)
    with torch.no_grad():
        want, got, orig = mask_like(model, plans)(x), pruned(x), model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert (want - orig).abs().max() > 1e-3  # the cut removed something that mattered
    return pruned


def test_ghost_halves_are_removed_in_pairs_and_never_emptied():
    torch.manual_seed(0)
    model, x = GhostNetLike(), torch.randn(2, 3, 8, 8)
    found = {g.name: g for g in groups(model, x)}
    stem = found["stem.0"]
    assert (stem.channels, stem.divisor, stem.aligned) == (16, 2, True)
    cut = {p.group.name: p.removed for p in plan(model, x, 0.5)}["stem.0"]
    assert len(cut) == 8 and all(j + 8 in cut for j in cut if j < 8)
    pruned = _exact(model, x, 0.5)
    assert pruned.ghost2.primary[0].out_channels == 4
    # A ratio near 1 keeps one pair: the primary conv keeps a channel, never zero.
    nearly_all = _exact(GhostNetLike(), x, 0.95)
    assert nearly_all.ghost2.primary[0].out_channels == 1
    assert nearly_all.ghost1.primary[0].out_channels == 1


def test_cost_model_counts_the_ghost_halves_exactly():
    """A primary conv holds half of its aligned group: kept / 2 channels, BN included."""
    import numpy as np

    from nasprune.metrics import count_macs, count_params
    from nasprune.search import Budget, SearchSpace

    torch.manual_seed(0)
    model, x = GhostNetLike().eval(), torch.randn(1, 3, 8, 8)
    space = SearchSpace(model, x)
    assert space.cost_model.cost(space.channels) == (count_macs(model, x), count_params(model))
    for raw in np.random.default_rng(0).uniform(0.2, 1.0, (4, space.dim)):
        keep = space.project(raw, Budget(macs=0.5))
        net = prune(model, x, space.prune_ratios(keep))
        real = (count_macs(net, x), count_params(net))
        kept = space.kept(keep)
        assert space.cost_model.cost(kept) == real
        assert space.cost_model.cost_exact(kept) == real


def test_channel_shuffle_is_not_crossed_and_branches_are_pruned():
    torch.manual_seed(0)
    model, x = ShuffleNetLike(), torch.randn(2, 3, 8, 8)
    names = {g.name for g in groups(model, x)}
    assert "stem.0" not in names  # its channels cross both shuffles
    assert {"units.0.branch.0.0", "units.1.branch.0.0"} <= names
    pruned = _exact(model, x, 0.5)
    assert pruned.units[0].branch[0][0].out_channels == 4
    assert pruned.stem[0].out_channels == 16


def test_a_row_slice_of_a_channels_last_view_keeps_the_channels():
    torch.manual_seed(0)
    model, x = TokenDownsample(), torch.randn(2, 16, 8)
    pruned = _exact(model, x, {"fc1": 0.5})
    assert pruned.fc1.out_features == 8 and pruned.fc2.in_features == 8


def test_a_residual_onto_a_channel_slice_prunes_exactly():
    torch.manual_seed(0)
    model, x = PartialResidual(), torch.randn(2, 3, 8, 8)
    pruned = _exact(model, x, 0.5)
    assert pruned.expand[0].out_channels == 12
