"""Text corpora as tasks for transformers: a package-made tokenizer and dict batches.

The tokenizer is a byte-level BPE trained with Hugging Face's ``tokenizers`` library (it
comes with ``transformers``) on the *training split only*. Why not a published vocabulary:
none can be fetched from a hub here; a word list shipped inside a package fixes the
vocabulary to that package's language and text, while a byte-level BPE learnt from the
corpus itself fits it and encodes any script (the fortune corpora are German, Russian,
Polish, ...) with no unknown token. Training on the training split keeps
validation and test text out of the vocabulary; the same texts give the same tokenizer.

``classification_task`` gives batches ``{"input_ids", "attention_mask", "labels"}`` (one
class per sequence, padded to the longest in the batch) for e.g. ``BertForSequenceClassification``;
``language_model_task`` cuts each split's token stream into blocks for a causal LM
(``labels`` = ``input_ids``; the model shifts them) scored by negative perplexity. Both are
:class:`~nasprune.task.Task` objects for ``nasprune.fit`` / ``evaluate`` / ``search``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from nasprune.data.textcorpus import TextCorpus
from nasprune.errors import NaspruneError
from nasprune.metrics.language import negative_perplexity
from nasprune.task import Task

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2  # the trainer numbers special tokens first, in this order
IGNORE_INDEX = -100  # label of padding: skipped by HF losses and by negative_perplexity


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise NaspruneError("text tasks need the 'tokenizers' package (it comes with "
                            "transformers): pip install nasprune[hf]") from exc
    return tokenizers


def _positive_int(value: Any, what: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise NaspruneError(f"{what} must be an integer >= {least}, got {value!r}")
    return value


def train_tokenizer(texts: Sequence[str], vocab_size: int = 4096, min_frequency: int = 2) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` learnt from ``texts`` (the training split).

    Ids 0, 1, 2 are ``<pad>``, ``<s>``, ``</s>``; then the 256 byte symbols, then merges up
    to ``vocab_size`` (fewer when the texts do not support that many).
    """
    tk = _tokenizers()
    _positive_int(vocab_size, "vocab_size", least=len(SPECIAL_TOKENS) + 256)
    _positive_int(min_frequency, "min_frequency")
    if not texts:
        raise NaspruneError("cannot train a tokenizer on no texts")
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                     special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    if [tok.token_to_id(t) for t in SPECIAL_TOKENS] != [PAD_ID, BOS_ID, EOS_ID]:
        raise NaspruneError("the tokenizer did not number its special tokens 0, 1, 2")
    return tok


def load_tokenizer(path: str | os.PathLike) -> Any:
    """A tokenizer saved with ``tokenizer.save(path)`` (one JSON file)."""
    tk = _tokenizers()
    try:
        tok = tk.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception subclass
        raise NaspruneError(f"cannot read tokenizer '{path}': {str(exc).splitlines()[0]}") from exc
    if [tok.token_to_id(t) for t in SPECIAL_TOKENS] != [PAD_ID, BOS_ID, EOS_ID]:
        raise NaspruneError(f"tokenizer '{path}' does not have {', '.join(SPECIAL_TOKENS)} "
                            "as ids 0, 1, 2")
    return tok


def encode(tokenizer: Any, texts: Sequence[str], max_len: int | None = None) -> list[list[int]]:
    """Token ids of each text after ``<s>`` (cut to ``max_len`` ids in all)."""
    ids = [[BOS_ID, *e.ids] for e in tokenizer.encode_batch(list(texts))]
    return ids if max_len is None else [s[:max_len] for s in ids]


class TokenBatches:
    """Re-iterable dict batches over token sequences (padded to the batch's longest).

    With ``labels`` each sequence has one class; without, ``labels`` are the ids themselves
    (causal LM) with ``IGNORE_INDEX`` on padding. With ``seed`` the order is shuffled anew
    on every pass (pass k draws with ``seed + k``: different epochs, same run every time);
    without it the order is fixed.
    """

    def __init__(self, sequences: list[list[int]], labels: list[int] | None, batch_size: int,
                 seed: int | None = None) -> None:
        self.sequences, self.batch_size, self.seed = sequences, batch_size, seed
        self.labels = None if labels is None else torch.tensor(labels, dtype=torch.long)
        self._passes = 0

    def __len__(self) -> int:
        return -(-len(self.sequences) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self.sequences)
        if self.seed is None:
            order = torch.arange(n)
        else:
            g = torch.Generator().manual_seed(self.seed + self._passes)
            order = torch.randperm(n, generator=g)
            self._passes += 1
        for start in range(0, n, self.batch_size):
            yield self._batch(order[start:start + self.batch_size].tolist())

    def _batch(self, idx: list[int]) -> dict[str, torch.Tensor]:
        width = max(len(self.sequences[i]) for i in idx)
        ids = torch.full((len(idx), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = self.sequences[i]
            ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, :len(seq)] = 1
        if self.labels is not None:
            labels = self.labels[idx]
        else:
            labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _held_out_order(n: int, seed: int) -> list[int]:
    """One seeded order for a validation or test split, the same on every pass. A corpus
    lists its records class by class (file by file), and a search proxy scores the first
    ``val_size`` samples: in corpus order those would be the first classes or files only.
    Whole-split scores do not depend on the order."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def classification_task(corpus: TextCorpus, tokenizer: Any, max_len: int = 128,
                        batch_size: int = 32, seed: int = 0) -> Task:
    """The corpus as sequence classification: ``<s>`` + text ids (cut to ``max_len``), its
    class as ``labels``; top-1 score. Training batches reshuffle every pass (``seed``);
    validation and test batches keep one seeded order (any first ``n`` of them are a random
    sample of the split)."""
    _positive_int(max_len, "max_len", least=2)
    _positive_int(batch_size, "batch_size")
    if corpus.num_classes < 2:
        raise NaspruneError(f"corpus '{corpus.name}' has {corpus.num_classes} class; "
                            "classification needs at least two (one per file or folder)")
    splits = {}
    for name in ("train", "val", "test"):
        part = corpus.split(name)
        if not len(part):
            raise NaspruneError(f"corpus '{corpus.name}' has an empty {name} split")
        ids, labels = encode(tokenizer, part.texts, max_len), part.labels
        if name != "train":
            order = _held_out_order(len(ids), seed)
            ids, labels = [ids[i] for i in order], [labels[i] for i in order]
        splits[name] = TokenBatches(ids, labels, batch_size, seed if name == "train" else None)
    return Task(**splits, name=corpus.name, num_classes=corpus.num_classes)


def token_blocks(tokenizer: Any, texts: Sequence[str], seq_len: int) -> list[list[int]]:
    """One stream ``<s> text </s> <s> text </s> ...`` cut into ``seq_len``-id blocks (the
    last may be shorter: it is padded in its batch, and padding is not scored)."""
    stream: list[int] = []
    for ids in encode(tokenizer, texts):
        stream.extend(ids)
        stream.append(EOS_ID)
    return [stream[i:i + seq_len] for i in range(0, len(stream), seq_len)]


def language_model_task(corpus: TextCorpus, tokenizer: Any, seq_len: int = 128,
                        batch_size: int = 16, seed: int = 0) -> Task:
    """The corpus's texts (classes ignored) as causal-LM blocks of ``seq_len`` ids, scored
    by negative perplexity (``maximize=True``; perplexity = ``-score``). Training blocks
    reshuffle every pass (``seed``); validation and test blocks keep one seeded order."""
    _positive_int(seq_len, "seq_len", least=2)
    _positive_int(batch_size, "batch_size")
    splits = {}
    for name in ("train", "val", "test"):
        blocks = token_blocks(tokenizer, corpus.split(name).texts, seq_len)
        if not blocks:
            raise NaspruneError(f"corpus '{corpus.name}' has an empty {name} split")
        if name != "train":
            blocks = [blocks[i] for i in _held_out_order(len(blocks), seed)]
        splits[name] = TokenBatches(blocks, None, batch_size, seed if name == "train" else None)
    score = functools.partial(negative_perplexity, shift=True, ignore_index=IGNORE_INDEX)
    return Task(**splits, score=score, maximize=True, name=f"{corpus.name}-lm")


__all__ = ["BOS", "BOS_ID", "EOS", "EOS_ID", "IGNORE_INDEX", "PAD", "PAD_ID", "SPECIAL_TOKENS",
           "TokenBatches", "classification_task", "encode", "language_model_task",
           "load_tokenizer", "token_blocks", "train_tokenizer"]
