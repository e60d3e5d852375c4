"""Pruning criteria: each one scores channels the way its paper says, every registered one
prunes exactly (masking == removal), and the registry gives clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nasprune
from arch_models import build, mask_like
from nasprune.errors import NaspruneError
from nasprune.pruning import CRITERIA, groups, plan, prune, removed_channels
from nasprune.pruning.criteria import ScoreContext, combine
from nasprune.pruning.graph import build_graph, iter_tp_groups, members


class TwoConv(nn.Module):
    """conv(3→6) → ReLU → conv(6→4) → pool → linear: one prunable group of 6 channels."""

    def __init__(self, bn: bool = False, width: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 1, bias=False)
        self.bn = nn.BatchNorm2d(width) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(width, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv2(torch.relu(self.bn(self.conv1(x)))).mean((2, 3)))


def _scores(model: nn.Module, x: torch.Tensor, criterion: str, data=None) -> torch.Tensor:
    graph = build_graph(model, x)
    info, tp_group = next(g for g in iter_tp_groups(model, graph, x) if g[0].name == "conv1")
    return CRITERIA.get(criterion)(members(model, graph, tp_group), info.channels,
                                   ScoreContext(model, x, data))


X = torch.randn(2, 3, 4, 4)


def test_l1_and_l2_drop_the_smallest_filter():
    model = TwoConv()
    with torch.no_grad():
        model.conv1.weight.normal_()
        model.conv2.weight.normal_()
        model.conv1.weight[3] *= 0.01
        model.conv2.weight[:, 3] *= 0.01
    for crit in ("l1", "l2"):
        s = _scores(model, X, crit)
        assert s.shape == (6,) and int(s.argmin()) == 3
        assert removed_channels(model, X, {"conv1": 1 / 6}, criterion=crit)["conv1"] == [3]


def test_l1_matches_a_hand_computation():
    model = TwoConv()
    w1, w2 = model.conv1.weight.detach(), model.conv2.weight.detach()
    out_l1 = w1.abs().flatten(1).sum(1).double()
    in_l1 = w2.abs().transpose(0, 1).flatten(1).sum(1).double()
    expected = (out_l1 / out_l1.mean() + in_l1 / in_l1.mean()) / 2  # per-layer normalised
    torch.testing.assert_close(_scores(model, X, "l1"), expected)


def test_fpgm_drops_the_filter_nearest_the_geometric_median():
    # Filters c + v: the one with v = 0 is the median (redundant: the others stand in for
    # it); L1 would instead drop c - 10 = 0, the smallest filter.
    model = TwoConv(width=7)
    v = torch.tensor([-3.0, -2.0, 0.0, 2.0, 3.0, -10.0, 5.0])
    with torch.no_grad():
        model.conv1.weight.copy_((10.0 + v).view(7, 1, 1, 1).expand(7, 3, 1, 1))
    assert int(_scores(model, X, "fpgm").argmin()) == 2
    assert int(_scores(model, X, "l1").argmin()) == 5


def test_bn_scale_uses_gamma_and_falls_back_to_l1():
    model = TwoConv(bn=True)
    with torch.no_grad():
        model.bn.weight.copy_(torch.tensor([1.0, 0.9, 0.001, 1.1, 0.8, 1.2]))
    assert int(_scores(model, X, "bn_scale").argmin()) == 2
    plain = TwoConv()
    torch.testing.assert_close(_scores(plain, X, "bn_scale"), _scores(plain, X, "l1"))


def test_random_is_seeded():
    model = TwoConv()
    a = removed_channels(model, X, 0.5, criterion="random", seed=1)
    assert a == removed_channels(model, X, 0.5, criterion="random", seed=1)
    others = [removed_channels(model, X, 0.5, criterion="random", seed=s) for s in range(2, 8)]
    assert any(o != a for o in others)


def test_taylor_needs_data_and_zero_weights_score_zero(digits):
    model = nasprune.create_model("digitscnn", in_channels=1, width=8).eval()
    x = digits.example_input(2)
    with pytest.raises(NaspruneError, match="taylor.*data"):
        prune(model, x, 0.5, criterion="taylor")
    name = groups(model, x)[0].name  # features.0 → features.3
    with torch.no_grad():
        model.features[0].weight[5] = 0
        model.features[1].weight[5] = 0
        model.features[1].bias[5] = 0
        model.features[3].weight[:, 5] = 0
    removed = removed_channels(model, x, {name: 1 / 8}, criterion="taylor", data=digits)
    assert removed[name] == [5]
    pruned = prune(model, x, 0.5, criterion="taylor", data=digits)
    assert all(p.grad is None for p in pruned.parameters())  # scoring leaves no gradients
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("criterion", CRITERIA.names())
def test_every_criterion_prunes_exactly(criterion, digits):
    # A residual net and a concat net: groups with several layers exercise the per-layer
    # normalisation and channel maps of every criterion.
    data = digits if criterion == "taylor" else None
    for arch in ("residual", "dense"):
        model = build(arch)
        x = torch.randn(3, 3, 16, 16)
        if data is not None:  # Taylor needs a model that matches the data
            model = nasprune.create_model("resnet20", in_channels=1).eval()
            x = torch.randn(2, 1, 8, 8)
        plans = plan(model, x, 0.5, criterion=criterion, data=data)
        pruned = prune(model, x, 0.5, criterion=criterion, data=data)
        with torch.no_grad():
            torch.testing.assert_close(pruned(x), mask_like(model, plans)(x), atol=1e-4, rtol=0)
        for info, p in ((p.group, p) for p in plans):
            assert len(p.removed) == info.channels - info.kept(0.5)
        if data is not None:
            break


def test_combine_normalises_each_layer():
    big, small = torch.tensor([100.0, 300.0]), torch.tensor([0.3, 0.1])
    torch.testing.assert_close(combine([big, small], 2), torch.tensor([1.0, 1.0]))
    assert combine([], 3).tolist() == [0.0, 0.0, 0.0]


def test_custom_criterion_plugs_in(monkeypatch):
    monkeypatch.setitem(CRITERIA._items, "reverse_index",
                        lambda ms, channels, ctx: torch.arange(channels, 0, -1).double())
    model = TwoConv()
    assert removed_channels(model, X, 0.5, criterion="reverse_index")["conv1"] == [3, 4, 5]
