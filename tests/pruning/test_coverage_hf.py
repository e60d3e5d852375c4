"""Issue 14's coverage goal over Hugging Face models (main environment: transformers):
BERT and ViT classifiers, GPT-2 and Llama (grouped-query attention) causal LMs are
searched at 50 % of their MACs, pruned, run, saved and loaded (``coverage_checks``).

Tiny random-weight configs (nothing can be downloaded). The text is real: the Zen of
Python (CPython's ``this`` module), as ASCII byte tokens; the images are scikit-learn's
digits upscaled to RGB.
"""

from __future__ import annotations

import codecs

import pytest
import torch

import nasprune
from coverage_checks import check_coverage, digit_images

tf = pytest.importorskip(
    "transformers", reason="Hugging Face transformers not installed (pip install nasprune[hf])")

VOCAB, SEQ = 128, 16


def zen_tokens(n: int) -> torch.Tensor:
    """``n`` windows of ``SEQ`` ASCII bytes of the Zen of Python (real human text)."""
    import this  # noqa: F401  (prints the Zen once; its text is rot13 in this.s)

    text = codecs.decode(__import__("this").s, "rot13").encode("ascii")
    ids = torch.tensor(list(text), dtype=torch.long)
    return torch.stack([ids[i * SEQ:(i + 1) * SEQ] for i in range(n)])


def _bert():
    torch.manual_seed(0)
    return tf.BertForSequenceClassification(tf.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=SEQ, num_labels=2))


def _vit():
    torch.manual_seed(0)
    return tf.ViTForImageClassification(tf.ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=10))


def _gpt2():
    torch.manual_seed(0)
    return tf.GPT2LMHeadModel(tf.GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=4, use_cache=False))


def _llama():
    torch.manual_seed(0)
    return tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=SEQ,
        use_cache=False))


def _accuracy(outputs, batches) -> float:
    hits = [(o.logits.argmax(-1) == b["labels"]).float().mean()
            for o, b in zip(outputs, batches, strict=True)]
    return float(torch.stack(hits).mean())


def _neg_loss(outputs, batches) -> float:
    """Minus the mean next-token loss (higher is better)."""
    return -float(torch.stack([o.loss for o in outputs]).mean())


def _text_task(lm: bool):
    ids = zen_tokens(16)
    labels = ids if lm else (ids[:, 0] % 2)  # LM: next bytes; else: a parity class
    batches = [{"input_ids": ids[i:i + 8], "labels": labels[i:i + 8]} for i in (0, 8)]
    task = nasprune.Task(train=batches[:1], val=batches[1:],
                         score=_neg_loss if lm else _accuracy)
    return task, {"input_ids": ids[:2]}


def _image_task():
    x, y = digit_images(16, 16)
    batches = [{"pixel_values": x[i:i + 8], "labels": y[i:i + 8]} for i in (0, 8)]
    return nasprune.Task(train=batches[:1], val=batches[1:], score=_accuracy), x[:2]


@pytest.mark.parametrize(("build", "data"), [
    pytest.param(_bert, lambda: _text_task(lm=False), id="hf-bert", marks=pytest.mark.slow),
    pytest.param(_vit, _image_task, id="hf-vit"),
    pytest.param(_gpt2, lambda: _text_task(lm=True), id="hf-gpt2"),
    pytest.param(_llama, lambda: _text_task(lm=True), id="hf-llama-gqa"),
])
def test_hf_model_is_searched_pruned_run_saved_and_loaded(build, data, tmp_path, request):
    task, example = data()
    numbers = check_coverage(build, example, task, tmp_path)
    assert numbers["macs_kept"] <= 0.51
    print(f"\ncoverage {request.node.callspec.id}: " +
          " ".join(f"{k}={v:.3f}" for k, v in numbers.items()))
