"""Causal language models: GPT-2 (Hugging Face ``Conv1D``, fused q|k|v) heads and FFN width.

A tiny ``GPT2LMHeadModel`` with random weights (no download). The reference for every cut
is the unpruned model with the removed channels zeroed: a head's q/k/v columns of
``c_attn`` at zero (bias too) give it uniform attention over zero values, so it adds
nothing; an FFN channel's ``c_fc`` column at zero gives GELU(0) = 0 into ``c_proj``.
"""

from __future__ import annotations

import copy

import pytest
import torch

import nasprune
from nasprune.checkpoint import load, read_spec, save
from nasprune.pruning import groups, plan, removed_channels

HEAD = 8  # hidden 32, 4 heads
ATTN = "transformer.h.{}.attn"
FFN = "transformer.h.{}.mlp.c_fc"


def _gpt2():
    tf = pytest.importorskip(
        "transformers", reason="Hugging Face transformers not installed (pip install nasprune[hf])")
    torch.manual_seed(0)
    cfg = tf.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                        initializer_range=0.2, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    return tf.GPT2LMHeadModel(cfg).eval(), {"input_ids": ids}


def _logits(model, example):
    with torch.no_grad():
        return model(**example).logits


def _zeroed(model, plans):
    """A copy with each plan's removed Conv1D output columns (weight (in, out)) zeroed."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for p in plans:
            for name, idx in p.out_channels.items():
                layer = masked.get_submodule(name)
                layer.weight[:, idx] = 0
                layer.bias[idx] = 0
    return masked


def test_groups_are_whole_heads_and_ffn_widths_never_the_hidden_width():
    model, ex = _gpt2()
    found = {g.name: g for g in groups(model, ex)}
    assert list(found) == [ATTN.format(0), FFN.format(0), ATTN.format(1), FFN.format(1)]
    head = found[ATTN.format(0)]
    assert (head.kind, head.channels, head.divisor) == ("heads", 32, HEAD)
    assert (head.out_layers, head.in_layers) == (["transformer.h.0.attn.c_attn"],
                                                 ["transformer.h.0.attn.c_proj"])
    ffn = found[FFN.format(1)]
    assert (ffn.kind, ffn.channels, ffn.in_layers) == ("ffn", 128, ["transformer.h.1.mlp.c_proj"])
    assert not any("lm_head" in n or "wte" in n or "ln_" in n
                   for g in found.values() for n in g.layers)


def test_pruned_gpt2_equals_the_model_with_those_heads_and_ffn_channels_zeroed():
    model, ex = _gpt2()
    ratios = {ATTN.format(0): 0.5, ATTN.format(1): 0.3, FFN.format(0): 0.5, FFN.format(1): 0.25}
    plans = plan(model, ex, ratios)
    pruned = nasprune.prune(model, ex, ratios)
    reference = _logits(_zeroed(model, plans), ex)
    assert _logits(pruned, ex).shape == (2, 8, 50)
    assert torch.allclose(_logits(pruned, ex), reference, atol=1e-5)
    assert not torch.allclose(_logits(model, ex), reference, atol=1e-3)  # the cut mattered
    removed = removed_channels(model, ex, ratios)
    for layer, heads in ((0, 2), (1, 3)):  # 4 × 0.7 = 2.8 rounds to 3 heads
        gone = removed[ATTN.format(layer)]
        assert len(gone) == (4 - heads) * HEAD and all(  # whole heads only
            set(range(h * HEAD, (h + 1) * HEAD)) <= set(gone) for h in {i // HEAD for i in gone})
        # the same head columns leave each of c_attn's q, k and v thirds
        (p,) = [p for p in plans if p.group.name == ATTN.format(layer)]
        assert p.out_channels[f"{ATTN.format(layer)}.c_attn"] == [
            i + third * 32 for third in range(3) for i in gone]
        attn = pruned.get_submodule(ATTN.format(layer))
        assert (attn.num_heads, attn.split_size, attn.head_dim) == (heads, heads * HEAD, HEAD)
        assert attn.c_attn.weight.shape == (32, 3 * heads * HEAD) == (attn.c_attn.nx,
                                                                      attn.c_attn.nf)
        assert attn.c_proj.weight.shape == (heads * HEAD, 32) == (attn.c_proj.nx, attn.c_proj.nf)
    assert pruned.transformer.h[1].mlp.c_fc.nf == 96 and pruned.transformer.h[1].mlp.c_proj.nx == 96
    assert model.transformer.h[0].attn.num_heads == 4  # the input model is untouched
    assert pruned.lm_head.weight is pruned.transformer.wte.weight  # still tied, hidden kept


def test_removing_heads_with_zero_output_projection_rows_changes_nothing():
    model, ex = _gpt2()
    attn = model.transformer.h[0].attn
    with torch.no_grad():
        for h in (1, 3):
            rows = slice(h * HEAD, (h + 1) * HEAD)
            attn.c_proj.weight[rows] = 0  # Conv1D: the head's rows are its inputs
            for third in range(3):  # the lowest L1: the heads the criterion removes
                attn.c_attn.weight[:, third * 32 + h * HEAD:third * 32 + (h + 1) * HEAD] *= 0.01
    ratios = {ATTN.format(0): 0.5}
    assert removed_channels(model, ex, ratios)[ATTN.format(0)] == [*range(HEAD, 2 * HEAD),
                                                                   *range(3 * HEAD, 4 * HEAD)]
    pruned = nasprune.prune(model, ex, ratios)
    assert torch.allclose(_logits(pruned, ex), _logits(model, ex), atol=1e-6)


def test_pruned_gpt2_generates_and_round_trips(tmp_path):
    tf = pytest.importorskip("transformers")
    model, ex = _gpt2()
    ids = ex["input_ids"]
    pruned = nasprune.prune(model, {**ex, "use_cache": True}, 0.5)  # the cache is ignored
    assert pruned.config.n_inner == 64 and pruned.config.n_head == 4  # see conv1d's docstring
    out = pruned.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5,
                          do_sample=False)
    assert out.shape == (2, 13) and torch.equal(out[:, :8], ids)
    # greedy decoding with the KV cache picks the argmax of the full forward at each step
    full = _logits(pruned, {"input_ids": out[:, :-1]})
    assert torch.equal(full[:, 7:].argmax(-1), out[:, 8:])
    spec = read_spec(save(pruned, tmp_path / "g"))["spec"]
    assert spec["attention"]["heads"] == {ATTN.format(0): 2, ATTN.format(1): 2}
    loaded = load(tmp_path / "g", base=_gpt2()[0])
    assert torch.equal(_logits(loaded, ex), _logits(pruned, ex))
    assert loaded.transformer.h[1].attn.num_heads == 2 and loaded.config.n_inner == 64
    ffn_only = nasprune.prune(model, ex, {FFN.format(0): 0.5, FFN.format(1): 0.5})
    ffn_only.save_pretrained(tmp_path / "hf")  # a uniform FFN width is in the config
    again = tf.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert torch.equal(_logits(again, ex), _logits(ffn_only, ex))


# ---- Llama-style: rotary, grouped-query attention (8 query heads over 4 key/value heads)

KV, G, D = 4, 2, 4  # key/value heads, query heads per key/value head, head size
SELF_ATTN = "model.layers.{}.self_attn"


def _llama():
    tf = pytest.importorskip(
        "transformers", reason="Hugging Face transformers not installed (pip install nasprune[hf])")
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=KV * G, num_key_value_heads=KV, head_dim=D,
                         max_position_embeddings=16, initializer_range=0.2, bos_token_id=0,
                         eos_token_id=0, pad_token_id=0)
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    return tf.LlamaForCausalLM(cfg).eval(), {"input_ids": ids}


def _zeroed_linear(model, plans):
    """A copy with each plan's removed nn.Linear output rows zeroed."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for p in plans:
            for name, idx in p.out_channels.items():
                masked.get_submodule(name).weight[idx] = 0
    return masked


def test_llama_groups_are_key_value_heads_and_gated_ffn():
    model, ex = _llama()  # DepGraph alone looped for minutes on this attention
    found = {g.name: g for g in groups(model, ex)}
    assert list(found) == [SELF_ATTN.format(0), "model.layers.0.mlp.gate_proj",
                           SELF_ATTN.format(1), "model.layers.1.mlp.gate_proj"]
    attn = found[SELF_ATTN.format(1)]
    assert (attn.kind, attn.channels, attn.divisor) == ("heads", KV * D, D)
    assert attn.in_layers == ["model.layers.1.self_attn.o_proj"]
    ffn = found["model.layers.0.mlp.gate_proj"]
    assert ffn.kind == "ffn" and ffn.channels == 64
    assert ffn.in_layers == ["model.layers.0.mlp.down_proj"]


def test_llama_gqa_cut_keeps_each_query_group_with_its_key_value_head():
    model, ex = _llama()
    ratios = {SELF_ATTN.format(0): 0.5, SELF_ATTN.format(1): 0.25,
              "model.layers.0.mlp.gate_proj": 0.5}
    plans = plan(model, ex, ratios)
    pruned = nasprune.prune(model, ex, ratios)
    reference = _logits(_zeroed_linear(model, plans), ex)
    assert torch.allclose(_logits(pruned, ex), reference, atol=1e-5)
    assert not torch.allclose(_logits(model, ex), reference, atol=1e-3)
    removed = removed_channels(model, ex, ratios)
    for layer, kv in ((0, 2), (1, 3)):
        gone = {c // D for c in removed[SELF_ATTN.format(layer)]}
        kept_kv = [h for h in range(KV) if h not in gone]
        assert len(kept_kv) == kv
        before, after = model.get_submodule(SELF_ATTN.format(layer)), \
            pruned.get_submodule(SELF_ATTN.format(layer))
        kept_q = [j for j in range(KV * G) if j // G in kept_kv]  # repeat_kv: head j reads j // G
        rows = lambda heads: [h * D + i for h in heads for i in range(D)]  # noqa: E731
        assert torch.equal(after.k_proj.weight, before.k_proj.weight[rows(kept_kv)])
        assert torch.equal(after.v_proj.weight, before.v_proj.weight[rows(kept_kv)])
        assert torch.equal(after.q_proj.weight, before.q_proj.weight[rows(kept_q)])
        assert torch.equal(after.o_proj.weight, before.o_proj.weight[:, rows(kept_q)])
        assert after.num_key_value_groups == G and after.head_dim == D
    assert pruned.model.layers[0].mlp.up_proj.out_features == 32
    assert pruned.model.layers[0].mlp.down_proj.in_features == 32


def test_pruned_llama_generates_and_round_trips(tmp_path):
    tf = pytest.importorskip("transformers")
    model, ex = _llama()
    ids = ex["input_ids"]
    pruned = nasprune.prune(model, ex, 0.5)
    cfg = pruned.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
            cfg.intermediate_size) == (4, 2, D, 32)
    out = pruned.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5,
                          do_sample=False)
    assert out.shape == (2, 13)
    full = _logits(pruned, {"input_ids": out[:, :-1]})
    assert torch.equal(full[:, 7:].argmax(-1), out[:, 8:])
    loaded = load(save(pruned, tmp_path / "l"), base=_llama()[0])
    assert torch.equal(_logits(loaded, ex), _logits(pruned, ex))
    pruned.save_pretrained(tmp_path / "hf")
    again = tf.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert torch.equal(_logits(again, ex), _logits(pruned, ex))
