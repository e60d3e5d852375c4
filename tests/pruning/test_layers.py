"""Layer pruning: residual blocks found from the model, scored, replaced by identity."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nasprune
from nasprune.errors import NaspruneError
from nasprune.metrics import count_macs, evaluate, layer_macs
from nasprune.pruning.layers import (
    has_identity_shortcut,
    output_norm_scores,
    remove_blocks,
    residual_blocks,
)

RGB = torch.randn(2, 3, 8, 8)
GRAY = torch.randn(2, 1, 8, 8)


class Residual(nn.Module):
    """A user block: y = relu(x + body(x)), written with torch.add."""

    def __init__(self, c: int, scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c))
        with torch.no_grad():
            self.body[4].weight.fill_(scale)

    def forward(self, x):
        return torch.relu(torch.add(self.body(x), x))


class NotResidual(nn.Module):
    """Same shape in and out, adds something — but not its own input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 1)
        self.b = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.a(x) + self.b(x)


class UserNet(nn.Module):
    def __init__(self, scales=(1.0, 0.01, 0.5, 0.001)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(*[Residual(8, s) for s in scales])
        self.mix = NotResidual(8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(F.relu(self.mix(self.blocks(self.stem(x)))))


def n_convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


def test_finds_identity_shortcut_blocks_in_the_zoo():
    r20 = nasprune.create_model("resnet20")
    assert residual_blocks(r20, RGB) == ["layer1.0", "layer1.1", "layer1.2", "layer2.1",
                                         "layer2.2", "layer3.1", "layer3.2"]
    mbv2 = nasprune.create_model("mobilenetv2")
    found = residual_blocks(mbv2, RGB)
    assert found == [f"features.{i}" for i, b in enumerate(mbv2.features)
                     if getattr(b, "use_residual", False)]
    assert len(found) == 10


def test_user_blocks_and_look_alikes():
    net = UserNet()
    assert residual_blocks(net, GRAY) == [f"blocks.{i}" for i in range(4)]
    assert has_identity_shortcut(net.blocks[0])
    assert not has_identity_shortcut(net.mix)  # adds two branches, not its input
    assert not has_identity_shortcut(net.stem)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_remove_blocks_cuts_depth_and_macs_and_keeps_the_output_shape(name):
    model = nasprune.create_model(name).eval()
    before = copy.deepcopy(model.state_dict())
    blocks = residual_blocks(model, RGB)
    scores = output_norm_scores(model, blocks, RGB)
    pruned = remove_blocks(model, RGB, n=3).eval()
    removed = pruned.nasprune_pruning["removed"]
    assert len(removed) == 3
    # The removed blocks are exactly the three lowest-scored ones.
    assert sorted(removed, key=scores.get) == sorted(blocks, key=scores.get)[:3]
    assert all(isinstance(pruned.get_submodule(b), nn.Identity) for b in removed)
    # MACs drop by exactly the MACs of the convs inside the removed blocks.
    per_layer = layer_macs(model, RGB)
    gone = sum(v for n, v in per_layer.items() if any(n.startswith(b + ".") for b in removed))
    assert count_macs(pruned, RGB) == count_macs(model, RGB) - gone > 0
    assert n_convs(pruned) < n_convs(model)
    assert pruned(RGB).shape == model(RGB).shape == (2, 10)
    # The input model is untouched.
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_output_norm_removes_the_blocks_with_the_weakest_branch():
    net = UserNet(scales=(1.0, 0.01, 0.5, 0.001)).eval()
    pruned = remove_blocks(net, GRAY, n=2)
    assert pruned.nasprune_pruning["removed"] == ["blocks.1", "blocks.3"]
    scores = pruned.nasprune_pruning["scores"]
    assert scores["blocks.3"] < scores["blocks.1"] < scores["blocks.2"] < scores["blocks.0"]
    # A branch scaled to almost nothing: removing it barely changes the output.
    assert torch.allclose(pruned.eval()(GRAY), net(GRAY), atol=0.05)
    # fraction: half of the four blocks.
    assert remove_blocks(net, GRAY, fraction=0.5).nasprune_pruning["removed"] == [
        "blocks.1", "blocks.3"]


def test_a_second_round_keeps_one_record_of_everything_removed():
    net = UserNet()
    once = remove_blocks(net, GRAY, n=1)
    twice = remove_blocks(once, GRAY, n=1)
    assert residual_blocks(once, GRAY) == ["blocks.0", "blocks.1", "blocks.2"]
    assert twice.nasprune_pruning["removed"] == ["blocks.3", "blocks.1"]


def test_sensitivity_criterion_uses_the_validation_drop(digits):
    torch.manual_seed(0)
    net = UserNet(scales=(1.0, 1.0, 1.0, 1.0))
    nasprune.fit(net, digits, epochs=2, progress=False)
    pruned = remove_blocks(net, digits.example_input(2), n=1, criterion="sensitivity",
                           data=digits, bn_batches=0)
    scores = pruned.nasprune_pruning["scores"]
    (removed,) = pruned.nasprune_pruning["removed"]
    assert removed == min(scores, key=scores.get)
    # The recorded score is the real val-accuracy drop of removing that block.
    base = evaluate(net, digits, split="val")["top1"]
    after = evaluate(pruned, digits, split="val")["top1"]
    assert scores[removed] == pytest.approx(base - after, abs=1e-9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one"),
        ({"n": 1, "fraction": 0.5}, "exactly one"),
        ({"n": 5}, "4 residual blocks"),
        ({"n": -1}, "non-negative"),
        ({"fraction": 1.5}, "fraction"),
        ({"n": 1, "criterion": "magic"}, "unknown block criterion"),
        ({"n": 1, "criterion": "sensitivity"}, "needs data"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(NaspruneError, match=message):
        remove_blocks(UserNet(), GRAY, **kwargs)


def test_model_without_blocks_has_nothing_to_remove():
    model = nasprune.create_model("digitscnn", in_channels=1)
    assert residual_blocks(model, GRAY) == []
    assert remove_blocks(model, GRAY, n=0).nasprune_pruning["removed"] == []
    with pytest.raises(NaspruneError, match="0 residual blocks"):
        remove_blocks(model, GRAY, n=1)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_save_load_rebuilds_the_removed_blocks(tmp_path, name):
    model = nasprune.create_model(name).eval()
    pruned = remove_blocks(model, RGB, n=2).eval()
    nasprune.save(pruned, tmp_path / "ckpt")
    loaded = nasprune.load(tmp_path / "ckpt").eval()
    for b in pruned.nasprune_pruning["removed"]:
        assert isinstance(loaded.get_submodule(b), nn.Identity)
    assert loaded.nasprune_pruning["removed"] == pruned.nasprune_pruning["removed"]
    assert torch.equal(loaded(RGB), pruned(RGB))


def test_save_load_of_a_user_model_with_removed_blocks(tmp_path):
    net = UserNet().eval()
    pruned = remove_blocks(net, GRAY, n=2).eval()
    nasprune.save(pruned, tmp_path / "ckpt")
    loaded = nasprune.load(tmp_path / "ckpt", base=UserNet()).eval()
    assert torch.equal(loaded(GRAY), pruned(GRAY))
