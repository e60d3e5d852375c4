"""Structured pruning: every zoo model shrinks and still runs, masking equals removal,
ratio 0 is the identity, rounding/divisors hold, and user mistakes end in clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import nasprune
from arch_models import ARCHITECTURES, build, mask_like, randomize_bn
from nasprune.errors import NaspruneError
from nasprune.metrics import count_macs, count_params
from nasprune.pruning import groups, kept_channels, plan, prune, removed_channels

# Big models are pruned at one ratio only, so the file stays fast.
BIG = {"resnet110", "vgg19"}


def _zoo(name: str) -> tuple[nn.Module, torch.Tensor]:
    if name == "digitscnn":
        return nasprune.create_model(name, in_channels=1).eval(), torch.randn(2, 1, 8, 8)
    return nasprune.create_model(name).eval(), torch.randn(2, 3, 32, 32)


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("name", nasprune.list_models())
def test_every_zoo_model_prunes(name):
    model, x = _zoo(name)
    randomize_bn(model)
    ref = _out(model, x)
    assert torch.equal(_out(prune(model, x, 0.0), x), ref)  # ratio 0: exactly the same
    macs, params = count_macs(model, x), count_params(model)
    last_macs = macs
    for ratio in (0.5,) if name in BIG else (0.1, 0.5, 0.9):
        pruned = prune(model, x, ratio)
        out = _out(pruned, x)
        assert out.shape == ref.shape and torch.isfinite(out).all()
        m, p = count_macs(pruned, x), count_params(pruned)
        assert m < last_macs and p < params
        last_macs = m
        # Uniform ratio r keeps ~(1-r) of every group, so MACs fall roughly as (1-r)^2.
        assert m / macs < (1 - ratio) + 0.12
    assert torch.equal(_out(model, x), ref)  # the input model was not touched


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_masking_equals_pruning(name, ratio):
    model = build(name)
    x = torch.randn(4, 3, 16, 16)
    plans = plan(model, x, ratio)
    assert any(p.removed for p in plans)
    pruned = prune(model, x, ratio)
    masked = mask_like(model, plans)
    assert count_params(pruned) < count_params(model)
    torch.testing.assert_close(_out(pruned, x), _out(masked, x), atol=1e-4, rtol=0)
    # The masked channels matter: without masking the output differs.
    assert not torch.allclose(_out(model, x), _out(masked, x), atol=1e-4)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "vgg11", "digitscnn"])
def test_masking_equals_pruning_zoo(name):
    model, x = _zoo(name)
    randomize_bn(model)
    ratios = {g.name: (0.25 + 0.5 * (i % 2)) for i, g in enumerate(groups(model, x))}
    pruned = prune(model, x, ratios)
    masked = mask_like(model, plan(model, x, ratios))
    torch.testing.assert_close(_out(pruned, x), _out(masked, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_ratio_zero_is_identity(name):
    model = build(name)
    x = torch.randn(3, 3, 16, 16)
    pruned = prune(model, x, 0.0)
    assert torch.equal(_out(pruned, x), _out(model, x))
    assert count_params(pruned) == count_params(model)


def test_attention_loses_whole_heads_and_keeps_its_width():
    model = build("attention")
    x = torch.randn(4, 3, 16, 16)
    found = {g.name: g for g in groups(model, x)}
    assert (found["attn"].kind, found["attn"].channels, found["attn"].divisor) == ("heads", 32, 8)
    assert "stem.0" not in found  # the residual stream into q/k/v is not a group
    pruned = prune(model, x, {"attn": 0.4})  # 4 heads × 0.6 = 2.4: 2 kept
    assert (pruned.attn.num_heads, pruned.attn.head_dim, pruned.attn.embed_dim) == (2, 8, 32)
    removed = removed_channels(model, x, {"attn": 0.4})["attn"]
    assert len(removed) == 16 and {i // 8 for i in removed} == {i // 8 for i in removed[::8]}
    assert all(set(range(h * 8, h * 8 + 8)) <= set(removed) for h in {i // 8 for i in removed})


def test_grouped_conv_groups_stay_aligned():
    model = build("grouped")
    x = torch.randn(2, 3, 16, 16)
    found = {g.name: g for g in groups(model, x)}
    assert all(g.divisor == 4 for g in found.values())
    pruned = prune(model, x, 0.3)
    for conv in (pruned.block[3], pruned.grouped2[0]):
        assert conv.groups == 4 and conv.in_channels % 4 == 0 and conv.out_channels % 4 == 0
    # The stem group feeds a grouped conv's input: the same offsets go from every conv group.
    stem = removed_channels(model, x, 0.3)["stem.0"]
    offsets = [sorted(i % 8 for i in stem if i // 8 == g) for g in range(4)]
    assert all(o == offsets[0] for o in offsets) and offsets[0]


def test_round_to_and_min_channels():
    model, x = _zoo("resnet20")
    for p in plan(model, x, 0.3, round_to=8):
        assert p.keep % 8 == 0 or p.keep == p.group.channels
    pruned = prune(model, x, 0.3, round_to=8)
    widths = {m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)}
    assert all(w % 8 == 0 for w in widths)
    tiny = prune(model, x, 0.95, min_channels=4)
    assert min(m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d)) >= 4


def test_kept_channels_rule():
    assert kept_channels(64, 0.0, round_to=8) == 64
    assert kept_channels(20, 0.0, round_to=8) == 20  # ratio 0 never rounds channels away
    assert kept_channels(64, 0.5) == 32
    assert kept_channels(64, 0.4, round_to=8) == 40  # 38.4 -> 38 -> 40
    assert kept_channels(16, 0.99) == 1 and kept_channels(16, 0.99, min_channels=3) == 3
    assert kept_channels(32, 0.3, divisor=4) == 24  # 22.4 -> 22 -> 24
    assert kept_channels(32, 0.99, min_channels=5, divisor=4) == 8
    assert kept_channels(48, 0.5, round_to=8, divisor=3) == 24


def test_dict_ratios_leave_unnamed_groups_alone():
    model, x = _zoo("resnet20")
    names = [g.name for g in groups(model, x)]
    target = names[1]
    pruned = prune(model, x, {target: 0.5})
    assert pruned.nasprune_pruning["ratios"] == {n: (0.5 if n == target else 0.0) for n in names}
    widths = pruned.nasprune_pruning["channels"]
    assert widths[target][1] == widths[target][0] // 2
    assert all(b == a for n, (a, b) in widths.items() if n != target)
    before = dict(model.named_modules())
    changed = [n for n, m in pruned.named_modules()
               if isinstance(m, nn.Conv2d) and m.weight.shape != before[n].weight.shape]
    assert changed and all(n.startswith("layer") or n == target for n in changed)


def test_input_untouched_mode_and_metadata_kept():
    model, x = _zoo("resnet20")
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune(model, x, 0.5, criterion="l2", round_to=4)
    assert pruned.training and model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert pruned.nasprune_arch == model.nasprune_arch
    rec = pruned.nasprune_pruning
    assert rec["method"] == "structured" and rec["criterion"] == "l2" and rec["round_to"] == 4
    assert set(rec["ratios"]) == {g.name for g in groups(model, x)}
    # Pruned models train: a backward pass reaches every parameter.
    nn.functional.cross_entropy(pruned(x), torch.tensor([1, 2])).backward()
    assert all(p.grad is not None for p in pruned.parameters())
    again = prune(pruned.eval(), x, 0.2)  # pruning a pruned model keeps the history
    assert again.nasprune_pruning["previous"]["criterion"] == "l2"
    model.conv1.weight.requires_grad_(False)  # frozen layers are pruned and stay frozen
    frozen = prune(model, x, 0.5)
    assert not frozen.conv1.weight.requires_grad and frozen.conv1.out_channels == 8
    assert not model.conv1.weight.requires_grad and model.conv1.weight.shape[0] == 16


def test_global_ranking():
    model, x = _zoo("resnet20")
    randomize_bn(model)
    total = sum(g.channels for g in groups(model, x))
    pruned = prune(model, x, "global", global_target=0.4)
    rec = pruned.nasprune_pruning
    kept = sum(after for _, after in rec["channels"].values())
    assert math.isclose(1 - kept / total, 0.4, abs_tol=0.02)
    assert rec["global_target"] == 0.4 and len(set(rec["ratios"].values())) > 2
    # Replaying the recorded per-group ratios gives the same network.
    replay = prune(model, x, rec["ratios"])
    torch.testing.assert_close(_out(replay, x), _out(pruned, x))
    with pytest.raises(NaspruneError, match="global_target"):
        prune(model, x, "global")
    with pytest.raises(NaspruneError, match="global_target"):
        prune(model, x, 0.3, global_target=0.5)
    with pytest.raises(NaspruneError, match="global_target"):
        prune(model, x, "global", global_target=1.5)


def test_ignored_layers_are_kept():
    model, x = _zoo("resnet20")
    names = [g.name for g in groups(model, x)]
    kept_name = names[2]
    assert kept_name not in [g.name for g in groups(model, x, ignored=[kept_name])]
    pruned = prune(model, x, 0.5, ignored=[kept_name])
    layer = dict(pruned.named_modules())[kept_name]
    assert layer.out_channels == dict(model.named_modules())[kept_name].out_channels
    with pytest.raises(NaspruneError, match="does not exist"):
        prune(model, x, 0.5, ignored=["layer9.conv"])


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), 1.5, True, "half", None])
def test_bad_ratio_is_rejected(bad):
    model, x = _zoo("digitscnn")
    with pytest.raises(NaspruneError, match=r"\[0, 1\)|ratios must be"):
        prune(model, x, bad)


def test_bad_group_names_and_options():
    model, x = _zoo("digitscnn")
    name = groups(model, x)[0].name
    with pytest.raises(NaspruneError, match=f"group '{name}'"):
        prune(model, x, {name: 1.0})
    with pytest.raises(NaspruneError, match=f"did you mean '{name}'"):
        prune(model, x, {name + "x": 0.5})
    with pytest.raises(NaspruneError, match="did you mean 'fpgm'"):
        prune(model, x, 0.5, criterion="fgpm")
    with pytest.raises(NaspruneError, match="unknown pruning criterion 'l3'.*l1"):
        prune(model, x, 0.5, criterion="l3")
    with pytest.raises(NaspruneError, match="round_to"):
        prune(model, x, 0.5, round_to=0)
    with pytest.raises(NaspruneError, match="min_channels"):
        prune(model, x, 0.5, min_channels=0)


class _Raises(nn.Module):
    """Data-dependent control flow that rejects the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = self.conv(x)
        if y.mean() > -1e9:
            raise ValueError("unsupported input statistics")
        return self.fc(y.mean((2, 3)))


class _ReturnsString(_Raises):
    def forward(self, x):
        return "not a tensor"


@pytest.mark.parametrize("cls, words", [(_Raises, "unsupported input statistics"),
                                        (_ReturnsString, "not a tensor")])
def test_untraceable_model_is_a_clear_error(cls, words):
    model = cls()
    with pytest.raises(NaspruneError, match=f"cannot be traced.*{words}"):
        prune(model, torch.randn(1, 3, 8, 8), 0.5)
    assert not any(m._forward_hooks for m in model.modules())  # no tracing hooks left behind


def test_wrong_example_shape_is_a_clear_error():
    model, _ = _zoo("resnet20")
    with pytest.raises(NaspruneError, match="forward failed"):
        prune(model, torch.randn(1, 5, 32, 32), 0.5)
