"""Tiny random-init Hugging Face Transformers for cost and search tests (no download).

One per attention family the cost model must be exact for: BERT (q/k/v Linears), ViT
(patch conv + q/k/v), GPT-2 (fused ``Conv1D`` c_attn, tied lm_head) and Llama with
grouped-query attention (4 query heads, 2 key/value heads, rotary). Each builder returns
``(model in eval mode, batch-1 example)``; it skips the test when transformers is absent.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

FAMILIES = ("bert", "vit", "gpt2", "llama")


def _tf():
    return pytest.importorskip(
        "transformers", reason="Hugging Face transformers not installed (pip install nasprune[hf])")


def tiny_transformer(family: str, layers: int = 2, seq: int = 12, attn: str = "sdpa",
                     vocab: int = 50) -> tuple[nn.Module, Any]:
    """A 32-wide, 4-head model of ``family`` with ``layers`` layers and its example input."""
    tf = _tf()
    torch.manual_seed(0)
    ids = {"input_ids": torch.randint(0, vocab, (1, seq),
                                      generator=torch.Generator().manual_seed(1))}
    common = {"attn_implementation": attn}
    if family == "bert":
        cfg = tf.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers,
                            num_attention_heads=4, intermediate_size=64,
                            max_position_embeddings=32, num_labels=3, **common)
        return tf.BertForSequenceClassification(cfg).eval(), ids
    if family == "vit":
        cfg = tf.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32,
                           num_hidden_layers=layers, num_attention_heads=4,
                           intermediate_size=64, num_labels=3, **common)
        x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        return tf.ViTForImageClassification(cfg).eval(), x
    if family == "gpt2":
        cfg = tf.GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_layer=layers, n_head=4,
                            bos_token_id=0, eos_token_id=0, pad_token_id=0, use_cache=False,
                            **common)
        return tf.GPT2LMHeadModel(cfg).eval(), ids
    if family == "llama":
        cfg = tf.LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                             max_position_embeddings=32, bos_token_id=0, eos_token_id=0,
                             pad_token_id=0, use_cache=False, **common)
        return tf.LlamaForCausalLM(cfg).eval(), ids
    raise ValueError(family)


def docstring_lm_task(tmp_dir, seq_len: int = 24, batch_size: int = 8):
    """A causal-LM task over real text (the docstrings of Python's ``math``, ``str`` and
    ``posixpath``, as tests/data/test_text.py uses) and its vocabulary size."""
    import math
    import posixpath

    from nasprune.data import language_model_task, read_text_corpus, train_tokenizer

    for name, obj in {"math": math, "str": str, "posixpath": posixpath}.items():
        docs = [getattr(obj, n).__doc__.strip() for n in sorted(dir(obj))
                if not n.startswith("_") and callable(getattr(obj, n)) and getattr(obj, n).__doc__]
        (tmp_dir / name).write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    corpus = read_text_corpus(tmp_dir, seed=0)
    tok = train_tokenizer(corpus.train.texts, vocab_size=300)
    return language_model_task(corpus, tok, seq_len=seq_len, batch_size=batch_size,
                               seed=0), tok.get_vocab_size()
