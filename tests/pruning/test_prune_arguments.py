"""What ``prune`` accepts: ``ignored`` as module objects or container names, dict example
inputs, and a clear error when nothing is prunable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nasprune
from nasprune.errors import NaspruneError
from nasprune.metrics import count_params

X = torch.randn(1, 3, 32, 32)


def widths(model: nn.Module, prefix: str) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules()
            if n.startswith(prefix) and isinstance(m, nn.Conv2d)}


def test_ignored_module_objects_are_left_alone() -> None:
    model = nasprune.create_model("resnet20")
    layer = model.layer1[0].conv1
    pruned = nasprune.prune(model, X, 0.5, ignored=[layer])
    assert pruned.layer1[0].conv1.out_channels == layer.out_channels == 16
    # The same layer by name gives the same network; without it, the layer is cut.
    by_name = nasprune.prune(model, X, 0.5, ignored=["layer1.0.conv1"])
    assert widths(by_name, "") == widths(pruned, "")
    assert nasprune.prune(model, X, 0.5).layer1[0].conv1.out_channels == 8
    with pytest.raises(NaspruneError, match="ignored module Conv2d is not part of the model"):
        nasprune.prune(model, X, 0.5, ignored=[nn.Conv2d(3, 3, 1)])


def test_a_container_name_leaves_every_layer_inside_it_alone() -> None:
    model = nasprune.create_model("resnet20")
    pruned = nasprune.prune(model, X, 0.5, ignored=["layer2"])
    assert widths(pruned, "layer2") == widths(model, "layer2")
    assert widths(pruned, "layer3") != widths(model, "layer3")  # the rest is still pruned
    assert count_params(pruned) < count_params(model)


class KeywordNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 4)

    def forward(self, pixel_values: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(pixel_values))).mean((2, 3))
        return self.head(h) * scale


def test_dict_example_inputs_are_keyword_arguments() -> None:
    torch.manual_seed(0)
    model = KeywordNet().eval()
    example = {"pixel_values": torch.randn(2, 3, 8, 8)}
    pruned = nasprune.prune(model, example, 0.5)
    assert pruned.conv.out_channels == 8 and pruned.head.in_features == 8
    assert pruned(**example).shape == (2, 4)
    assert nasprune.metrics.count_macs(pruned, example) < nasprune.metrics.count_macs(model, example)


def test_a_model_without_prunable_groups_is_an_error_not_a_silent_copy() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(NaspruneError, match="no prunable channel group found in Sequential"):
        nasprune.prune(model, torch.randn(1, 12), 0.5)


def test_pruning_is_reachable_after_a_plain_import() -> None:
    import importlib
    import subprocess
    import sys

    code = ("import nasprune, torch; "
            "print(len(nasprune.pruning.groups(nasprune.create_model('resnet20'), "
            "torch.randn(1, 3, 32, 32))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert int(out) == len(importlib.import_module("nasprune.pruning").groups(
        nasprune.create_model("resnet20"), X))
