"""``nn.MultiheadAttention`` loses whole heads (nasprune.pruning.mha), the residual width stays.

The model is a small pure-torch Transformer (``nn.TransformerEncoder`` over the 8 pixel rows
of scikit-learn's digits, random weights): the reference for every cut is the unpruned
model with the removed heads' q/k/v rows zeroed (``arch_models.mask_like``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nasprune
from arch_models import mask_like
from nasprune.checkpoint import load, read_spec, save
from nasprune.metrics import count_macs, count_params
from nasprune.pruning import groups, plan, removed_channels
from nasprune.pruning.mha import NarrowMultiheadAttention, split_attention
from nasprune.search.space import SearchSpace

ATTN = "encoder.layers.{}.self_attn"
HEAD = 8  # width 32, 4 heads


class RowTransformer(nn.Module):
    """Digits as 8 tokens (pixel rows) → 2 Transformer encoder layers → mean → classes."""

    def __init__(self, width: int = 32, heads: int = 4, batch_first: bool = True) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Linear(8, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0,
                                           batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.flatten(1, 2))  # (N, 8 rows, width)
        t = t if self.batch_first else t.transpose(0, 1)
        t = self.encoder(t)
        return self.head(t.mean(1 if self.batch_first else 0))


def _model(batch_first: bool = True) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = RowTransformer(batch_first=batch_first).eval()
    with torch.no_grad():  # weights large enough that every head matters
        for layer in model.encoder.layers:
            layer.self_attn.in_proj_weight.mul_(3.0)
    digits = nasprune.load_dataset("digits").val
    x = digits.x[:6].float() / 16.0  # real 8×8 scans
    return model, x


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_narrow_attention_equals_nn_multihead_attention():
    torch.manual_seed(0)
    b, lq, s = 3, 5, 7
    for batch_first, kdim in ((True, None), (False, 6)):
        mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim).eval()
        narrow = NarrowMultiheadAttention.from_mha(mha)
        q = torch.randn(b, lq, 16) if batch_first else torch.randn(lq, b, 16)
        k = torch.randn(b, s, kdim or 16) if batch_first else torch.randn(s, b, kdim or 16)
        pad = torch.zeros(b, s, dtype=torch.bool)
        pad[0, 3:] = True
        causal = torch.triu(torch.ones(lq, s, dtype=torch.bool), 1)
        for kw in ({}, {"key_padding_mask": pad}, {"attn_mask": causal, "need_weights": False},
                   {"attn_mask": torch.randn(b * 4, lq, s), "key_padding_mask": pad.float()},
                   {"average_attn_weights": False}):
            want, got = mha(q, k, k, **kw), narrow(q, k, k, **kw)
            torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
            assert (got[1] is None) == (want[1] is None)
            if want[1] is not None:
                torch.testing.assert_close(got[1], want[1], atol=1e-6, rtol=0)
        one = q[0] if batch_first else q[:, 0]  # unbatched (L, E)
        key = k[0] if batch_first else k[:, 0]
        torch.testing.assert_close(narrow(one, key, key)[0], mha(one, key, key)[0], atol=1e-5,
                                   rtol=0)
        assert torch.equal(narrow.to_mha()(q, k, k)[0], mha(q, k, k)[0])


def test_groups_are_whole_heads_and_ffn_never_the_residual_width():
    model, x = _model()
    found = {g.name: g for g in groups(model, x)}
    heads = {n: (g.channels, g.divisor) for n, g in found.items() if g.kind == "heads"}
    assert heads == {ATTN.format(0): (32, HEAD), ATTN.format(1): (32, HEAD)}
    assert {n for n, g in found.items() if g.kind == "ffn"} == {
        "encoder.layers.0.linear1", "encoder.layers.1.linear1"}
    assert "embed" not in found and len(found) == 4
    assert isinstance(model.encoder.layers[0].self_attn, nn.MultiheadAttention)  # untouched


@pytest.mark.parametrize("batch_first", [True, False])
def test_pruned_heads_equal_the_model_with_those_heads_zeroed(batch_first):
    model, x = _model(batch_first)
    ratios = {ATTN.format(0): 0.5, ATTN.format(1): 0.3, "encoder.layers.1.linear1": 0.5}
    plans = plan(model, x, ratios)
    pruned = nasprune.prune(model, x, ratios)
    reference = _out(mask_like(model, plans), x)
    torch.testing.assert_close(_out(pruned, x), reference, atol=1e-5, rtol=0)
    assert (_out(model, x) - reference).abs().max() > 1e-2  # the removed heads mattered
    removed = removed_channels(model, x, ratios)
    for i, kept in ((0, 2), (1, 3)):  # 4 × 0.7 = 2.8 rounds to 3 heads
        gone = removed[ATTN.format(i)]
        assert len(gone) == (4 - kept) * HEAD and all(
            set(range(h * HEAD, (h + 1) * HEAD)) <= set(gone) for h in {g // HEAD for g in gone})
        attn = pruned.get_submodule(ATTN.format(i))
        assert isinstance(attn, NarrowMultiheadAttention)
        assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (kept, HEAD, 32)
        assert attn.q_proj.out_features == attn.out_proj.in_features == kept * HEAD
    assert count_params(pruned) < count_params(model)


def test_a_layer_that_keeps_every_head_stays_nn_multihead_attention():
    model, x = _model()
    pruned = nasprune.prune(model, x, {ATTN.format(0): 0.5})
    untouched = pruned.encoder.layers[1].self_attn
    assert type(untouched) is nn.MultiheadAttention
    assert torch.equal(untouched.in_proj_weight, model.encoder.layers[1].self_attn.in_proj_weight)


def test_removing_heads_whose_output_columns_are_zero_changes_nothing():
    model, x = _model()
    attn = model.encoder.layers[0].self_attn
    with torch.no_grad():
        for h in (1, 3):
            rows = slice(h * HEAD, (h + 1) * HEAD)
            attn.out_proj.weight[:, rows] = 0
            for third in range(3):  # the lowest L1: the heads the criterion removes
                attn.in_proj_weight[third * 32:][rows] *= 0.01
    ratios = {ATTN.format(0): 0.5}
    assert removed_channels(model, x, ratios)[ATTN.format(0)] == [*range(8, 16), *range(24, 32)]
    pruned = nasprune.prune(model, x, ratios)
    # Equal up to float summation order (the out-projection sums 16 columns instead of 32
    # of which 16 are zero: BLAS orders the sums differently, so not bit for bit).
    full = _out(split_attention(copy.deepcopy(model)), x)
    torch.testing.assert_close(_out(pruned, x), full, atol=2e-6, rtol=0)
    torch.testing.assert_close(_out(pruned, x), _out(model, x), atol=2e-6, rtol=0)


def test_save_load_round_trip_restores_heads(tmp_path):
    model, x = _model()
    pruned = nasprune.prune(model, x, {ATTN.format(0): 0.5, ATTN.format(1): 0.25})
    spec = read_spec(save(pruned, tmp_path / "t"))["spec"]
    assert spec["attention"]["heads"] == {ATTN.format(0): 2, ATTN.format(1): 3}
    assert spec["modules"][ATTN.format(1)]["type"] == "NarrowMultiheadAttention"
    loaded = load(tmp_path / "t", base=_model()[0])
    assert torch.equal(_out(loaded, x), _out(pruned, x))
    assert [layer.self_attn.num_heads for layer in loaded.encoder.layers] == [2, 3]


def test_search_space_costs_heads_as_the_pruned_model_counts_them():
    model, x = _model()
    space = SearchSpace(model, x[:1])
    assert space.names == [ATTN.format(0), "encoder.layers.0.linear1", ATTN.format(1),
                           "encoder.layers.1.linear1"]
    keep = [0.5, 0.7, 0.3, 0.6]
    assert space.kept(keep).tolist() == [16, 45, 8, 38]  # heads in 8s, FFN any width
    pruned = nasprune.prune(model, x[:1], space.prune_ratios(keep))
    assert space.cost(keep) == (count_macs(pruned, x[:1]), count_params(pruned))
    assert isinstance(model.encoder.layers[0].self_attn, nn.MultiheadAttention)
