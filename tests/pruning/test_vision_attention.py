"""torchvision's and timm's vision transformers lose whole heads and MLP width.

Small configs with random weights (no download), fed scikit-learn's real digits scans upscaled
to 3×32×32. The reference for every cut is the unpruned model with the removed heads'
q/k/v rows zeroed. torchvision and timm need the torch they were built for: these tests run
in the vision environment (``make test`` builds ``.venv-vision``) and skip elsewhere.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nasprune
from nasprune.checkpoint import load, read_spec, save
from nasprune.errors import NaspruneError
from nasprune.metrics import count_macs
from nasprune.pruning import groups, plan
from nasprune.pruning.mha import NarrowMultiheadAttention
from nasprune.search.space import SearchSpace
from vision_env import vision_modules

timm, torchvision = vision_modules("timm", "torchvision")

pytestmark = pytest.mark.vision

TV_ATTN = "encoder.layers.encoder_layer_{}.self_attention"


def _digits(n: int, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` digits scans as 3×32×32 images in [0, 1] and their labels."""
    data = nasprune.load_dataset("digits").split(split)
    x = data.x[:n].float() / 255.0
    return F.interpolate(x, scale_factor=4).repeat(1, 3, 1, 1), data.y[:n]


def _random_head(model: nn.Module, head: nn.Linear) -> nn.Module:
    """torchvision starts its classifier at zero: random weights, so outputs differ."""
    with torch.no_grad():
        head.weight.normal_(0, 0.2)
    return model.eval()


def _tv_vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=10)
    return _random_head(model, model.heads.head)


def _deit() -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32,
                              patch_size=8, depth=2, num_classes=10)
    return _random_head(model, model.head)


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@torch.no_grad()
def _zero_heads(model: nn.Module, plans) -> nn.Module:
    """``model`` with the q/k/v rows of every removed head zeroed (packed or fused qkv)."""
    masked = copy.deepcopy(model)
    for p in plans:
        if p.group.kind != "heads" or not p.removed:
            continue
        attn, rows = masked.get_submodule(p.group.name), torch.tensor(p.removed)
        if isinstance(attn, nn.MultiheadAttention):
            weight, bias, width = attn.in_proj_weight, attn.in_proj_bias, attn.embed_dim
        else:
            weight, bias, width = attn.qkv.weight, attn.qkv.bias, attn.attn_dim
        for third in range(3):
            weight[rows + third * width] = 0
            if bias is not None:
                bias[rows + third * width] = 0
    return masked


@pytest.mark.parametrize("family", ["torchvision", "timm"])
def test_vit_prunes_heads_and_mlp_and_equals_its_zeroed_heads(family, tmp_path):
    model = _tv_vit() if family == "torchvision" else _deit()
    x, _ = _digits(4)
    found = {g.name: g for g in groups(model, x[:1])}
    heads = {n: (g.channels, g.divisor) for n, g in found.items() if g.kind == "heads"}
    if family == "torchvision":
        assert heads == {TV_ATTN.format(0): (64, 16), TV_ATTN.format(1): (64, 16)}
    else:
        assert heads == {"blocks.0.attn": (192, 64), "blocks.1.attn": (192, 64)}
    assert sum(g.kind == "ffn" for g in found.values()) == 2 and len(found) == 4
    plans = plan(model, x, 0.5)
    pruned = nasprune.prune(model, x, 0.5)
    out = _out(pruned, x)
    assert out.shape == (4, 10) and count_macs(pruned, x[:1]) < 0.6 * count_macs(model, x[:1])
    heads_only = {n: 0.5 for n in heads}
    torch.testing.assert_close(_out(nasprune.prune(model, x, heads_only), x),
                               _out(_zero_heads(model, plans), x), atol=1e-5, rtol=0)
    assert (_out(model, x) - _out(_zero_heads(model, plans), x)).abs().max() > 1e-3
    for name in heads:
        attn = pruned.get_submodule(name)
        assert attn.num_heads == 2  # 4 heads × 0.5; DeiT-tiny's 3 × 0.5 = 1.5 rounds to 2
        if family == "torchvision":
            assert isinstance(attn, NarrowMultiheadAttention) and attn.embed_dim == 64
    loaded = load(save(pruned, tmp_path / "vit"), base=_tv_vit() if family == "torchvision"
                  else _deit())
    assert torch.equal(_out(loaded, x), out)
    assert read_spec(tmp_path / "vit")["spec"]["attention"]["heads"] == {
        n: pruned.get_submodule(n).num_heads for n in heads}


def _swin() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
        num_classes=10)
    return _random_head(model, model.head)


def test_swin_loses_whole_heads_with_their_position_bias_columns(tmp_path):
    model, (x, _) = _swin(), _digits(4)
    found = {g.name: g for g in groups(model, x[:1])}
    heads = {n: (g.channels, g.divisor) for n, g in found.items() if g.kind == "heads"}
    assert heads == {"features.1.0.attn": (32, 16), "features.1.1.attn": (32, 16),
                     "features.3.0.attn": (64, 16), "features.3.1.attn": (64, 16)}
    assert sum(g.kind == "ffn" for g in found.values()) == 4 and len(found) == 8
    ratios = dict.fromkeys(heads, 0.5)
    pruned = nasprune.prune(model, x, ratios)
    plans = plan(model, x, ratios)
    masked = copy.deepcopy(model)
    with torch.no_grad():  # a removed head's q/k/v rows at zero: it adds nothing
        for p in (p for p in plans if p.group.kind == "heads"):
            attn, rows = masked.get_submodule(p.group.name), torch.tensor(p.removed)
            for third in range(3):
                attn.qkv.weight[rows + third * p.group.channels] = 0
                attn.qkv.bias[rows + third * p.group.channels] = 0
    torch.testing.assert_close(_out(pruned, x), _out(masked, x), atol=1e-5, rtol=0)
    assert (_out(model, x) - _out(masked, x)).abs().max() > 1e-3
    attn = pruned.get_submodule("features.3.0.attn")
    assert (attn.num_heads, attn.head_dim, attn.relative_position_bias_table.shape[1]) == (2, 16, 2)
    both = nasprune.prune(model, x, 0.5)  # heads and MLP width; patch merging keeps its width
    assert count_macs(both, x[:1]) < 0.8 * count_macs(model, x[:1])
    loaded = load(save(both, tmp_path / "swin"), base=_swin())
    assert torch.equal(_out(loaded, x), _out(both, x))


def test_maxvit_is_refused_at_once_naming_the_layer():
    torch.manual_seed(0)
    maxvit = torchvision.models.MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2,
                                       block_channels=[16], block_layers=[1], head_dim=8,
                                       stochastic_depth_prob=0.0, num_classes=10).eval()
    with pytest.raises(NaspruneError, match=r"\(RelativePositionalMultiHeadAttention\)"):
        nasprune.prune(maxvit, _digits(1)[0], 0.5)


def test_search_on_the_torchvision_vit_sees_heads_and_meets_half_the_macs():
    model = _tv_vit()
    x, y = _digits(64)
    space = SearchSpace(model, x[:1])
    assert [(g.name, g.kind, g.channels // g.divisor) for g in space.groups
            if g.kind == "heads"] == [(TV_ATTN.format(0), "heads", 4),
                                      (TV_ATTN.format(1), "heads", 4)]
    task = nasprune.Task(train=[(x[:32], y[:32])], val=[(x[32:], y[32:])])
    result = nasprune.search(model, x[:1], task, strategy="random",
                             target=nasprune.Budget(macs=0.5), trials=3, progress=False,
                             bn_batches=1, val_size=32, warm_start=False, verify=False)
    pruned = nasprune.prune(model, x[:1], result.best.ratios)
    assert count_macs(pruned, x[:1]) <= 0.5 * count_macs(model, x[:1]) * 1.01
    assert _out(pruned, x).shape == (64, 10)
