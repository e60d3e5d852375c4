"""Transformer units: whole attention heads and FFN width pruned, the hidden width kept.

Hugging Face BERT and ViT built from small configs with random weights (no download). The
reference for every cut is the unpruned model with the removed channels zeroed
(``arch_models.mask_like``): q/k/v rows of a removed head at zero give it uniform attention
over zero values, so it adds nothing, which is what physically removing it must reproduce.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import nasprune
from arch_models import mask_like
from nasprune.checkpoint import load, read_spec, save
from nasprune.errors import NaspruneError
from nasprune.metrics import count_macs, count_params
from nasprune.pruning import groups, plan, removed_channels
from nasprune.pruning.attention import select_heads
from nasprune.pruning.layers import residual_blocks, without_blocks
from nasprune.pruning.module_kinds import Skip
from nasprune.pruning.spec import validate_spec
from nasprune.search.space import SearchSpace

HEAD = 8  # head size of both models: hidden 32, 4 heads


def _transformers():
    return pytest.importorskip(
        "transformers", reason="Hugging Face transformers not installed (pip install nasprune[hf])")


def _bert():
    tf = _transformers()
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=16, num_labels=3,
                        initializer_range=0.2)  # weights large enough that heads matter
    ids = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(1))
    return tf.BertForSequenceClassification(cfg).eval(), {"input_ids": ids}


def _vit():
    tf = _transformers()
    torch.manual_seed(0)
    cfg = tf.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       num_labels=3, initializer_range=0.2)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return tf.ViTForImageClassification(cfg).eval(), x


def _logits(model, example):
    with torch.no_grad():
        return (model(**example) if isinstance(example, dict) else model(example)).logits


BERT_ATTN = "bert.encoder.layer.{}.attention.self"
VIT_ATTN = "vit.layers.{}.attention"


def test_select_heads_removes_the_lowest_whole_heads():
    scores = torch.tensor([5.0, 5, 1, 1, 3, 0, 9, 9])  # heads of 2: sums 10, 2, 3, 18
    assert select_heads(scores.double(), keep=4, head_dim=2) == [2, 3, 4, 5]
    assert select_heads(scores.double(), keep=6, head_dim=2) == [2, 3]
    assert select_heads(scores.double(), keep=8, head_dim=2) == []


def test_groups_are_heads_and_ffn_and_never_the_hidden_width():
    model, ex = _bert()
    found = {g.name: g for g in groups(model, ex)}
    assert {n for n, g in found.items() if g.kind == "heads"} == {BERT_ATTN.format(0),
                                                                  BERT_ATTN.format(1)}
    head = found[BERT_ATTN.format(0)]
    assert (head.channels, head.divisor) == (32, HEAD)
    assert head.in_layers == ["bert.encoder.layer.0.attention.output.dense"]
    ffn = {n for n, g in found.items() if g.kind == "ffn"}
    assert ffn == {"bert.encoder.layer.0.intermediate.dense",
                   "bert.encoder.layer.1.intermediate.dense"}
    assert found["bert.pooler.dense"].kind == "channels"  # pooler → classifier: not an FFN
    # The residual stream (embeddings, every output dense, every LayerNorm) is not a group.
    everything = {n for g in found.values() for n in g.layers}
    assert "bert.encoder.layer.0.attention.output.dense" not in {
        n for g in found.values() for n in g.out_layers}
    assert not any("LayerNorm" in n or "embeddings" in n for n in everything)


@pytest.mark.parametrize("family", ["bert", "vit"])
def test_pruned_heads_equal_the_model_with_those_heads_zeroed(family):
    model, ex = _bert() if family == "bert" else _vit()
    attn = BERT_ATTN if family == "bert" else VIT_ATTN
    ffn = {n.name: n for n in groups(model, ex) if n.kind == "ffn"}
    ratios = {attn.format(0): 0.5, attn.format(1): 0.3, **dict.fromkeys(ffn, 0.5)}
    plans = plan(model, ex, ratios)
    pruned = nasprune.prune(model, ex, ratios)
    reference = _logits(mask_like(model, plans), ex)
    assert torch.allclose(_logits(pruned, ex), reference, atol=1e-5)
    assert not torch.allclose(_logits(model, ex), reference, atol=1e-3)  # heads mattered
    removed = removed_channels(model, ex, ratios)
    for layer, heads in ((0, 2), (1, 3)):  # 4 × 0.7 = 2.8 rounds to 3 heads
        gone = removed[attn.format(layer)]
        assert len(gone) == (4 - heads) * HEAD
        assert all(set(range(h * HEAD, (h + 1) * HEAD)) <= set(gone) for h in {i // HEAD
                                                                             for i in gone})
        mod = pruned.get_submodule(attn.format(layer))
        assert mod.num_attention_heads == heads
        if family == "bert":
            assert mod.all_head_size == heads * HEAD and mod.attention_head_size == HEAD
            assert mod.query.out_features == mod.key.out_features == heads * HEAD
        else:
            assert mod.head_dim == HEAD and mod.o_proj.in_features == heads * HEAD
    assert model.config.num_attention_heads == 4  # the input model is untouched


def test_removing_heads_whose_output_columns_are_zero_changes_nothing():
    model, ex = _bert()
    attn = model.bert.encoder.layer[0].attention
    with torch.no_grad():
        for h in (1, 3):
            cols = slice(h * HEAD, (h + 1) * HEAD)
            attn.output.dense.weight[:, cols] = 0
            for proj in (attn.self.query, attn.self.key, attn.self.value):
                proj.weight[cols] *= 0.01  # the lowest L1: the heads the criterion removes
    pruned = nasprune.prune(model, ex, {BERT_ATTN.format(0): 0.5})
    assert removed_channels(model, ex, {BERT_ATTN.format(0): 0.5})[BERT_ATTN.format(0)] == [
        *range(HEAD, 2 * HEAD), *range(3 * HEAD, 4 * HEAD)]
    assert torch.equal(_logits(pruned, ex), _logits(model, ex))


def test_pruning_a_vit_prints_no_torch_pruning_notice(recwarn):
    model, x = _vit()  # its position embeddings and class token are parameters outside a layer
    nasprune.prune(model, x, 0.5)
    assert not [str(w.message) for w in recwarn if "Unwrapped" in str(w.message)]


def test_head_counts_round_to_whole_heads_and_never_remove_all():
    model, ex = _bert()
    for ratio, heads in ((0.95, 1), (0.3, 3), (0.1, 4), (0.6, 2)):
        (p,) = [p for p in plan(model, ex, ratio) if p.group.name == BERT_ATTN.format(1)]
        assert p.keep == heads * HEAD, ratio


def test_search_space_sees_heads_and_ffn_and_its_costs_are_the_real_ones():
    model, x = _vit()
    space = SearchSpace(model, x[:1])
    assert space.names == [VIT_ATTN.format(0), "vit.layers.0.mlp.fc1", VIT_ATTN.format(1),
                           "vit.layers.1.mlp.fc1"]
    keep = np.array([0.5, 0.7, 0.3, 0.6])
    assert space.kept(keep).tolist() == [16, 45, 8, 38]  # heads in 8s, FFN any width
    pruned = nasprune.prune(model, x[:1], space.prune_ratios(keep))
    assert space.cost(keep) == (count_macs(pruned, x[:1]), count_params(pruned))


def test_uniform_vit_config_follows_and_save_pretrained_round_trips(tmp_path):
    tf = _transformers()
    model, x = _vit()
    pruned = nasprune.prune(model, x[:1], 0.5)
    cfg = pruned.config
    assert (cfg.num_attention_heads, cfg.head_dim, cfg.intermediate_size) == (2, HEAD, 32)
    assert cfg.hidden_size == 32
    pruned.save_pretrained(tmp_path / "vit")
    again = tf.ViTForImageClassification.from_pretrained(tmp_path / "vit").eval()
    assert torch.equal(_logits(again, x), _logits(pruned, x))


def test_bert_ffn_width_round_trips_through_save_pretrained(tmp_path):
    """BERT's config cannot state a head size (always hidden / heads): its uniform FFN width
    goes into the config, a head-pruned BERT keeps its original head count there."""
    tf = _transformers()
    model, ex = _bert()
    ffn = [g.name for g in groups(model, ex) if g.kind == "ffn"]
    pruned = nasprune.prune(model, ex, dict.fromkeys(ffn, 0.25))
    assert pruned.config.intermediate_size == 48
    pruned.save_pretrained(tmp_path / "bert")
    again = tf.BertForSequenceClassification.from_pretrained(tmp_path / "bert").eval()
    assert torch.equal(_logits(again, ex), _logits(pruned, ex))
    heads_cut = nasprune.prune(model, ex, 0.5)
    assert heads_cut.config.num_attention_heads == 4
    assert heads_cut.bert.encoder.layer[0].attention.self.num_attention_heads == 2


def test_nasprune_save_load_round_trip_restores_heads(tmp_path):
    model, ex = _bert()
    ratios = {BERT_ATTN.format(0): 0.5, BERT_ATTN.format(1): 0.25,
              "bert.encoder.layer.1.intermediate.dense": 0.5}
    pruned = nasprune.prune(model, ex, ratios)
    spec = read_spec(save(pruned, tmp_path / "b"))["spec"]
    assert spec["attention"]["heads"] == {BERT_ATTN.format(0): 2, BERT_ATTN.format(1): 3}
    loaded = load(tmp_path / "b", base=_bert()[0])
    assert torch.equal(_logits(loaded, ex), _logits(pruned, ex))
    assert [layer.attention.self.num_attention_heads for layer in loaded.bert.encoder.layer] \
        == [2, 3]
    assert loaded.bert.encoder.layer[1].attention.self.all_head_size == 3 * HEAD


def test_spec_attention_record_is_validated(tmp_path):
    model, ex = _bert()
    spec = read_spec(save(nasprune.prune(model, ex, 0.5), tmp_path / "b"))["spec"]
    for bad in ({"heads": {"x": 0}}, {"config": {"vocab_size": 7}}, {"other": {}}, []):
        with pytest.raises(NaspruneError, match="spec 'attention'"):
            validate_spec({**spec, "attention": bad})
    wrong = copy.deepcopy(spec)
    wrong["attention"]["heads"][BERT_ATTN.format(0)] = 3
    with pytest.raises(NaspruneError, match="records attention heads"):
        nasprune.pruning.spec.apply_spec(_bert()[0], wrong)


def test_dropping_a_transformer_layer_equals_zeroing_its_residual_branches():
    model, x = _vit()
    assert residual_blocks(model, x[:1]) == ["vit.layers.0", "vit.layers.1"]
    dropped = without_blocks(model, ["vit.layers.1"], "manual", {})
    zeroed = copy.deepcopy(model)
    with torch.no_grad():  # pre-LN: x + attn(ln(x)) + mlp(ln(·)) with both branches at zero
        for branch in (zeroed.vit.layers[1].attention.o_proj, zeroed.vit.layers[1].mlp.fc2):
            branch.weight.zero_()
            branch.bias.zero_()
    assert torch.equal(_logits(dropped, x), _logits(zeroed, x))
    assert not torch.allclose(_logits(dropped, x), _logits(model, x), atol=1e-3)


def test_bert_layer_removed_by_score_round_trips_through_save(tmp_path):
    model, ex = _bert()  # called with masks and caches: the dropped layer passes them by
    assert residual_blocks(model, ex) == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    slim = nasprune.pruning.remove_blocks(model, ex, n=1)
    (gone,) = slim.nasprune_pruning["removed"]
    assert isinstance(slim.get_submodule(gone), Skip)
    loaded = load(save(slim, tmp_path / "blocks"), base=_bert()[0])
    assert isinstance(loaded.get_submodule(gone), Skip)
    assert torch.equal(_logits(loaded, ex), _logits(slim, ex))
