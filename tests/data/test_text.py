"""Text folders as tasks: reading, de-duplication, seeded splits, the BPE tokenizer, dict
batches through nasprune.fit / evaluate on a tiny BERT, and a tiny Llama LM's perplexity.

The real text is the documentation Python ships with itself — the docstrings of the
``math`` functions, of the ``str`` methods and of ``posixpath`` (written by the CPython
developers; present wherever these tests run) — written into a folder as one file per
class, paragraphs as records.
"""

from __future__ import annotations

import copy
import math
import posixpath

import pytest
import torch

import nasprune
from nasprune.data import (
    classification_task,
    language_model_task,
    load_tokenizer,
    read_text_corpus,
    train_tokenizer,
)
from nasprune.data.text import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID, TokenBatches, encode
from nasprune.data.textcorpus import split_records
from nasprune.errors import NaspruneError

SOURCES = {"math": math, "str": str, "posixpath": posixpath}


def _docstrings(obj) -> list[str]:
    """The docstrings of the public callables of a module or class, by name."""
    out = []
    for name in sorted(dir(obj)):
        value = getattr(obj, name)
        if not name.startswith("_") and callable(value) and value.__doc__:
            out.append(value.__doc__.strip())
    return out


@pytest.fixture(scope="module")
def doc_folder(tmp_path_factory):
    """One file per class (``math``, ``str``, ``posixpath``), docstrings as paragraphs."""
    root = tmp_path_factory.mktemp("pydocs")
    for name, obj in SOURCES.items():
        (root / name).write_text("\n\n".join(_docstrings(obj)) + "\n", encoding="utf-8")
    return root


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


# ---- reading and splitting ---------------------------------------------------------------

def test_split_is_deterministic_disjoint_and_in_the_stated_proportions(doc_folder):
    corpus = read_text_corpus(doc_folder, val_fraction=0.2, test_fraction=0.1, seed=3)
    again = read_text_corpus(doc_folder, val_fraction=0.2, test_fraction=0.1, seed=3)
    other = read_text_corpus(doc_folder, val_fraction=0.2, test_fraction=0.1, seed=4)
    assert corpus == again and corpus.train != other.train
    assert corpus.classes == ["math", "posixpath", "str"]  # one class per file, sorted
    keys = {s: [_key(t) for t in corpus.split(s).texts] for s in ("train", "val", "test")}
    for s in keys:
        assert len(set(keys[s])) == len(keys[s])
    assert not set(keys["train"]) & set(keys["val"])
    assert not set(keys["train"]) & set(keys["test"]) and not set(keys["val"]) & set(keys["test"])
    for label in range(3):  # every class is split on its own, fractions rounded
        n = {s: corpus.split(s).labels.count(label) for s in ("train", "val", "test")}
        total = sum(n.values())
        assert total > 15
        assert n["val"] == round(total * 0.2) and n["test"] == round(total * 0.1)
    # the same records, whatever the seed: only their assignment changes
    pools = [sorted(t for s in ("train", "val", "test") for t in c.split(s).texts)
             for c in (corpus, other)]
    assert pools[0] == pools[1]


def test_records_duplicates_links_and_indexes(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "de").mkdir()
    (tmp_path / "en" / "quotes").write_text("To be.\n%\nOr not  to be.\n%\n%\n", encoding="utf-8")
    (tmp_path / "en" / "quotes.u8").symlink_to("quotes")  # as fortune packages ship them
    (tmp_path / "en" / "quotes.dat").write_bytes(b"\x00\x02\xff\xfe binary strfile index")
    (tmp_path / "de" / "sprueche").write_text("Sein.\n%\nor NOT to be.\n", encoding="utf-8")
    corpus = read_text_corpus(tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert corpus.classes == ["de", "en"]  # sub-folders are the classes
    # "or NOT to be." (de, read first) and "Or not  to be." (en) are one text: kept once
    assert sorted(zip(corpus.train.labels, corpus.train.texts, strict=True)) == [
        (0, "Sein."), (0, "or NOT to be."), (1, "To be.")]
    assert split_records("a\n\nb\n  \nc", "auto") == ["a", "b", "c"]
    assert split_records("a\nb\n", "line") == ["a", "b"]
    assert split_records(" a\n%\nb ", "file") == ["a\n%\nb"]


def test_max_per_class_and_min_chars(doc_folder):
    corpus = read_text_corpus(doc_folder, max_per_class=10, min_chars=30, seed=1)
    assert [corpus.train.labels.count(k) for k in range(3)] == [8, 8, 8]
    assert all(len(t) >= 30 for s in ("train", "val", "test") for t in corpus.split(s).texts)


@pytest.mark.parametrize("kwargs, message", [
    ({"val_fraction": 0.6, "test_fraction": 0.4}, "below 1"),
    ({"val_fraction": -0.1}, "val_fraction"),
    ({"classes": "lines"}, "unknown class kind"),
    ({"records": "sentences"}, "unknown record kind"),
    ({"max_per_class": 2}, "max_per_class"),
    ({"min_chars": 0}, "min_chars"),
])
def test_bad_arguments_are_one_clear_error(doc_folder, kwargs, message):
    with pytest.raises(NaspruneError, match=message):
        read_text_corpus(doc_folder, **kwargs)


def test_bad_folders_are_one_clear_error(tmp_path):
    with pytest.raises(NaspruneError, match="does not exist"):
        read_text_corpus(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n\n", encoding="utf-8")
    with pytest.raises(NaspruneError, match="no text records"):
        read_text_corpus(tmp_path)
    (tmp_path / "latin1").write_bytes("Grüße\n".encode("latin-1"))
    with pytest.raises(NaspruneError, match="latin1' is not UTF-8"):
        read_text_corpus(tmp_path)


# ---- tokenizer and batches ---------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus_and_tokenizer(doc_folder):
    corpus = read_text_corpus(doc_folder, seed=0)
    return corpus, train_tokenizer(corpus.train.texts, vocab_size=400)


def test_tokenizer_is_deterministic_round_trips_and_saves(corpus_and_tokenizer, tmp_path):
    corpus, tok = corpus_and_tokenizer
    assert tok.get_vocab() == train_tokenizer(corpus.train.texts, vocab_size=400).get_vocab()
    assert tok.get_vocab_size() == 400
    text = corpus.test.texts[0] + " Grüße, мир"  # bytes: no unknown tokens in any script
    ids = encode(tok, [text])[0]
    assert ids[0] == BOS_ID and tok.decode(ids[1:]) == text
    tok.save(str(tmp_path / "tokenizer.json"))
    assert load_tokenizer(tmp_path / "tokenizer.json").encode(text).ids == ids[1:]
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(NaspruneError, match="cannot read tokenizer"):
        load_tokenizer(tmp_path / "bad.json")


def test_token_batches_pad_mask_and_reshuffle():
    seqs = [[1, 5, 6], [1, 7], [1, 8, 9, 10], [1, 4]]
    fixed = TokenBatches(seqs, [0, 1, 0, 1], batch_size=3)
    first = next(iter(fixed))
    assert first["input_ids"].tolist() == [[1, 5, 6, 0], [1, 7, 0, 0], [1, 8, 9, 10]]
    assert first["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert first["labels"].tolist() == [0, 1, 0] and len(fixed) == 2
    lm = list(TokenBatches(seqs, None, batch_size=4))[0]
    assert lm["labels"][1].tolist() == [1, 7, IGNORE_INDEX, IGNORE_INDEX]
    shuffled = TokenBatches(seqs, [0, 1, 2, 3], batch_size=4, seed=0)
    orders = [next(iter(shuffled))["labels"].tolist() for _ in range(4)]
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders) and len({tuple(o) for o in orders}) > 1
    again = TokenBatches(seqs, [0, 1, 2, 3], batch_size=4, seed=0)
    assert [next(iter(again))["labels"].tolist() for _ in range(4)] == orders  # reproducible


def _rows(batches) -> list[tuple[int, ...]]:
    """Each sequence of the batches (padding removed), in the order they come."""
    return [tuple(ids[mask == 1].tolist()) for b in batches
            for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True)]


def test_language_model_blocks_cover_every_token(corpus_and_tokenizer):
    corpus, tok = corpus_and_tokenizer
    task = language_model_task(corpus, tok, seq_len=32, batch_size=4)
    stream = [i for s in encode(tok, corpus.val.texts) for i in (*s, EOS_ID)]
    in_order = [tuple(stream[i:i + 32]) for i in range(0, len(stream), 32)]
    blocks = _rows(task.val)
    assert sorted(blocks) == sorted(in_order) and PAD_ID not in sum(blocks, ())
    assert blocks != in_order and _rows(task.val) == blocks  # one seeded order, every pass
    with pytest.raises(NaspruneError, match="seq_len"):
        language_model_task(corpus, tok, seq_len=1)


def test_held_out_splits_start_with_a_sample_of_every_class(corpus_and_tokenizer):
    """A proxy scores the first samples of the validation split: in corpus order they
    would all be the first class's (the corpus lists its records class by class)."""
    corpus, tok = corpus_and_tokenizer
    assert corpus.val.labels == sorted(corpus.val.labels)  # class by class
    task = classification_task(corpus, tok, max_len=48, batch_size=8, seed=0)
    first = next(iter(task.val))["labels"].tolist()
    assert len(set(first)) == 3
    for split in ("val", "test"):
        part = corpus.split(split)
        labels = [y for b in task.split(split) for y in b["labels"].tolist()]
        assert sorted(labels) == sorted(part.labels)
        assert sorted(_rows(task.split(split))) == sorted(
            tuple(s) for s in encode(tok, part.texts, 48))
    again = classification_task(corpus, tok, max_len=48, batch_size=8, seed=0)
    assert [b["labels"].tolist() for b in again.val] == [b["labels"].tolist() for b in task.val]


# ---- through nasprune.fit / evaluate ----------------------------------------------------

def test_a_tiny_bert_learns_which_docs_a_text_comes_from(corpus_and_tokenizer):
    transformers = pytest.importorskip(
        "transformers", reason="Hugging Face transformers not installed (pip install nasprune[hf])")
    corpus, tok = corpus_and_tokenizer
    task = classification_task(corpus, tok, max_len=48, batch_size=16, seed=0)
    assert task.num_classes == 3
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=48, num_labels=3,
        pad_token_id=PAD_ID, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(config)
    before = nasprune.evaluate(copy.deepcopy(model), task, split="train", progress=False)
    result = nasprune.fit(model, task, epochs=8, optimizer="adamw", lr=1e-2,
                          schedule="constant", progress=False)
    after = nasprune.evaluate(model, task, split="train", progress=False)
    test = nasprune.evaluate(model, task, split="test", progress=False)
    assert len(result.history) == 8 and result.samples == 8 * len(corpus.train)
    assert after["loss"] < 0.3 * before["loss"] and after["score"] > 0.9
    # held-out docstrings: well above the largest class's share (72 of 170 training texts)
    majority = max(corpus.test.labels.count(k) for k in range(3)) / len(corpus.test)
    assert test["n"] == len(corpus.test) and test["score"] > majority + 0.2


def test_a_tiny_llama_perplexity_falls_after_a_few_steps(corpus_and_tokenizer):
    transformers = pytest.importorskip(
        "transformers", reason="Hugging Face transformers not installed (pip install nasprune[hf])")
    corpus, tok = corpus_and_tokenizer
    task = language_model_task(corpus, tok, seq_len=64, batch_size=8, seed=0)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,  # grouped queries
        max_position_embeddings=64, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
        eos_token_id=EOS_ID)
    model = transformers.LlamaForCausalLM(config)
    before = -nasprune.evaluate(model, task, split="val", progress=False)["score"]
    assert before == pytest.approx(tok.get_vocab_size(), rel=0.5)  # untrained: ~uniform
    nasprune.fit(model, task, epochs=1, max_steps=30, optimizer="adamw", lr=1e-2,
                 schedule="constant", progress=False, validate=False)
    after = -nasprune.evaluate(model, task, split="val", progress=False)["score"]
    assert after < 0.5 * before
