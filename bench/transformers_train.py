"""Benchmark: train three Hugging Face transformers (random init) on real data with
``nasprune.fit`` through the task interface, and save nasprune checkpoints that the
pruning benchmarks start from (issue 14).

(a) ``vit``: a ViT-tiny (``ViTForImageClassification``: 32×32 input, patch 4, hidden 192,
    6 layers, 3 heads, MLP 768) on a seeded subset of CIFAR-10 from the shared JPEG tarball
    (the built-in data set: 40k/10k train/val split of the 50k, official 10k test);
(b) ``bert``: a BERT-style encoder (``BertForSequenceClassification``: hidden 128, 4 layers,
    4 heads, MLP 512) telling the noun supersense (24 classes: noun.animal, noun.artifact,
    ...) of a WordNet 3.0 definition (``--bert-corpus supersense``, the default), or the
    topic (12 classes: art, computers, ..., startrek) of an English Debian fortune cookie
    (``--bert-corpus topics``); see ``bert_corpus``;
(c) ``llama``: a Llama causal LM (``LlamaForCausalLM``: hidden 256, 4 layers, 8 query
    heads sharing 2 key/value heads — grouped-query attention) on the English fortunes,
    scored by validation/test perplexity.

Text comes from ``bench/transformers_prepare.sh`` (Debian packages; licences there and
in BENCHMARKS.md); tokenizers are byte-level BPEs trained on each training split
(``nasprune.data.train_tokenizer``). Each checkpoint directory holds ``spec.json`` +
weights (``nasprune.save``; ``meta`` has the HF class and config to rebuild the model, see
``load_hf``), and ``tokenizer.json`` for the text models. After saving, the checkpoint is
loaded back and re-scored: the score must match.

Usage: ``nice .venv/bin/python bench/transformers_train.py [--models vit,bert,llama]
[--fortunes data/fortunes] [--cifar ../shared/data/cifar10-jpg.tar.gz]
[--bert-corpus supersense|topics] [--out bench/results/transformers] [--threads 1]
[--quick]``.
Prints one JSON line per model and writes it to ``OUT/<checkpoint>.json`` (the models can run
as separate processes at once).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

import nasprune
from nasprune.data import (
    classification_task,
    language_model_task,
    read_text_corpus,
    train_tokenizer,
)
from nasprune.task import dataset_task

# Tokens per text, per BERT corpus (the checkpoint records its own): fortunes are short and
# most fit in 96; WordNet definitions are shorter still.
BERT_MAX_LEN = {"topics": 96, "supersense": 64}
BERT_CHECKPOINTS = {"topics": "bert-fortunes-topics", "supersense": "bert-wordnet-supersense"}


def load_hf(directory: str | os.PathLike) -> torch.nn.Module:
    """Rebuild a saved HF model: its class and config are in the checkpoint's meta."""
    import transformers

    meta = nasprune.checkpoint.read_spec(directory)["meta"]
    cls = getattr(transformers, meta["hf_class"])
    config = getattr(transformers, meta["hf_config_class"]).from_dict(meta["hf_config"])
    return nasprune.load(directory, base=cls(config))


def _save(model: torch.nn.Module, out: Path, record: dict, meta: dict, tokenizer=None) -> None:
    """Save the checkpoint under ``out``: ``meta``, the training ``record`` (which learns
    the checkpoint's name) and the HF class and config that ``load_hf`` rebuilds it from."""
    record["checkpoint"] = out.name
    meta = {**meta, "seed": 0, **record, "hf_class": type(model).__name__,
            "hf_config_class": type(model.config).__name__,
            "hf_config": model.config.to_dict()}
    nasprune.save(model, out, meta=meta)
    if tokenizer is not None:
        tokenizer.save(str(out / "tokenizer.json"))


def _affordable_steps(model: torch.nn.Module, task, minutes: float, lr: float) -> int:
    """Training steps that fit ``minutes`` of CPU time (this process), from the CPU time of
    steps on a copy: CPU time, unlike wall time, hardly depends on what else runs. A 1-step
    run is subtracted from a 4-step run so one-off costs (first batches, allocator warm-up,
    building the optimizer) do not count as per-step time."""
    cpu = []
    for steps in (1, 4):
        probe = copy.deepcopy(model)
        t0 = time.process_time()
        nasprune.fit(probe, task, epochs=1, max_steps=steps, optimizer="adamw", lr=lr, seed=0,
                     progress=False, validate=False)
        cpu.append(time.process_time() - t0)
    return max(1, int(minutes * 60 / max((cpu[1] - cpu[0]) / 3, 1e-3)))


def _fit(model: torch.nn.Module, task, minutes: float, lr: float, weight_decay: float,
         quick: bool) -> tuple[object, int, float]:
    """Train for what ``minutes`` of CPU time afford (one-cycle schedule over exactly those
    steps); returns the fit result, the steps and the wall seconds."""
    steps = 20 if quick else _affordable_steps(model, task, minutes, lr)
    epochs = -(-steps // len(task.train))
    t0 = time.perf_counter()
    fit = nasprune.fit(model, task, epochs=epochs, max_steps=steps, optimizer="adamw", lr=lr,
                       weight_decay=weight_decay, schedule="onecycle", seed=0, progress=False)
    return fit, steps, time.perf_counter() - t0


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _rescored(out: Path, data, score: float, split: str = "test") -> float:
    """The saved checkpoint, loaded back, scores what the trained model scored."""
    again = nasprune.evaluate(load_hf(out), data, split=split, progress=False)
    assert abs(again["score"] - score) < 1e-4, f"reloaded: {again['score']}, trained: {score}"
    return again["score"]


def train_vit(args: argparse.Namespace) -> dict:
    from transformers import ViTConfig, ViTForImageClassification

    data = nasprune.load_dataset("cifar10", root=args.cifar, seed=0)
    n = 2000 if args.quick else args.vit_train
    data.train = data.train.subset(n, seed=0)  # seeded subsets: bounded CPU time
    data.val = data.val.subset(500 if args.quick else args.vit_val, seed=0)
    data.test = data.test.subset(500 if args.quick else args.vit_test, seed=0)
    config = ViTConfig(image_size=32, patch_size=4, num_channels=3, hidden_size=192,
                       num_hidden_layers=6, num_attention_heads=3, intermediate_size=768,
                       num_labels=10, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    # Through the task interface: fit's in-memory Dataset path takes tensor outputs only,
    # the task's loss and score read the ``.logits`` of the HF output. Training batches are
    # the built-in fast loader's (random crop + flip, reshuffled every epoch).
    task = dataset_task(data, batch_size=256).with_splits(
        train=data.loader("train", batch_size=128, shuffle=True, augment=True, seed=0,
                          drop_last=True))
    fit, steps, seconds = _fit(model, task, args.vit_minutes, 1e-3, 0.05, args.quick)
    test = nasprune.evaluate(model, task, split="test", progress=False)
    out = args.out / "vit-tiny-cifar10"
    record = {"model": "vit-tiny", "data": f"cifar10 (train subset {n} of 40000, val "
              f"{len(data.val)} of 10000, test {len(data.test)} of 10000)",
              "params": _params(model), "steps": steps, "epochs": round(steps / len(task.train), 2),
              "batches_per_epoch": len(task.train), "train_seconds": round(seconds, 1),
              "val_top1": fit.history[-1]["val_score"], "test_top1": test["score"]}
    _save(model, out, record, {"data": "cifar10", "train_subset": n,
                               "val_subset": len(data.val), "test_subset": len(data.test)})
    _rescored(out, task, fit.history[-1]["val_score"], split="val")
    return record


def bert_corpus(root: Path, kind: str = "supersense", quick: bool = False):
    """The BERT-style model's classification corpus under ``root`` (see
    ``transformers_prepare.sh``). ``supersense``: WordNet's noun definitions, one class per
    lexicographer file of ``supersense/``, 80/10/10 % train/val/test per class.
    ``topics``: one class per fortune file of ``topic-id/``, 70/10/20 % (a larger test
    split: the classes are small)."""
    cap = 60 if quick else None
    if kind == "supersense":
        return read_text_corpus(root / "supersense", classes="file", records="line",
                                val_fraction=0.1, test_fraction=0.1, seed=0,
                                max_per_class=cap, name="wordnet-supersense")
    return read_text_corpus(root / "topic-id", classes="file", records="fortune",
                            val_fraction=0.1, test_fraction=0.2, min_chars=20, seed=0,
                            max_per_class=cap, name="fortunes-topics")


def train_bert(args: argparse.Namespace) -> dict:
    from transformers import BertConfig, BertForSequenceClassification

    corpus = bert_corpus(args.fortunes, args.bert_corpus, args.quick)
    max_len = BERT_MAX_LEN[args.bert_corpus]
    tok = train_tokenizer(corpus.train.texts, vocab_size=4096)
    task = classification_task(corpus, tok, max_len=max_len, batch_size=32, seed=0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=128, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=512,
                        max_position_embeddings=max_len, num_labels=corpus.num_classes,
                        pad_token_id=0, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    fit, steps, seconds = _fit(model, task, args.bert_minutes, 1e-3, 0.01, args.quick)
    test = nasprune.evaluate(model, task, split="test", progress=False)
    out = args.out / BERT_CHECKPOINTS[args.bert_corpus]
    record = {"model": "bert-4x128", "data": f"{corpus.name} classification",
              "classes": corpus.classes, "records": {s: len(corpus.split(s)) for s in
                                                     ("train", "val", "test")},
              "params": _params(model), "steps": steps, "epochs": round(steps / len(task.train), 2),
              "batches_per_epoch": len(task.train), "train_seconds": round(seconds, 1),
              "val_top1": fit.history[-1]["val_score"], "test_top1": test["score"]}
    _save(model, out, record, {"data": corpus.name, "max_len": max_len}, tok)
    _rescored(out, task, test["score"])
    return record


def train_llama(args: argparse.Namespace) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    corpus = read_text_corpus(args.fortunes / "topics", classes="file", records="fortune",
                              val_fraction=0.05, test_fraction=0.05, seed=0, name="fortunes-en",
                              max_per_class=60 if args.quick else None)
    tok = train_tokenizer(corpus.train.texts, vocab_size=4096)
    task = language_model_task(corpus, tok, seq_len=128, batch_size=16, seed=0)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=256,
                         intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                         num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    before = -nasprune.evaluate(model, task, split="val", progress=False)["score"]
    fit, steps, seconds = _fit(model, task, args.llama_minutes, 2e-3, 0.01, args.quick)
    test = nasprune.evaluate(model, task, split="test", progress=False)
    out = args.out / "llama-fortunes-en"
    record = {"model": "llama-gqa-4x256", "data": "fortunes (English) language model",
              "tokens": {s: sum(int(b["attention_mask"].sum()) for b in task.split(s))
                         for s in ("train", "val", "test")},
              "params": _params(model), "steps": steps, "epochs": round(steps / len(task.train), 2),
              "batches_per_epoch": len(task.train), "train_seconds": round(seconds, 1),
              "val_ppl_init": before, "val_ppl": -fit.history[-1]["val_score"],
              "test_ppl": -test["score"]}
    _save(model, out, record, {"data": "fortunes-en"}, tok)
    _rescored(out, task, test["score"])
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vit,bert,llama")
    p.add_argument("--fortunes", type=Path, default=Path("data/fortunes"))
    p.add_argument("--cifar", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--out", type=Path, default=Path("bench/results/transformers"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny runs: check the script works")
    p.add_argument("--bert-corpus", choices=sorted(BERT_MAX_LEN), default="supersense")
    p.add_argument("--vit-train", type=int, default=10000)
    p.add_argument("--vit-val", type=int, default=1000)
    p.add_argument("--vit-test", type=int, default=2000)
    # CPU-minutes of training per model (one thread): the steps are sized to fit
    p.add_argument("--vit-minutes", type=float, default=1.5)
    p.add_argument("--bert-minutes", type=float, default=1.0)
    p.add_argument("--llama-minutes", type=float, default=1.5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    trainers = {"vit": train_vit, "bert": train_bert, "llama": train_llama}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        cpu0 = time.process_time()
        record = trainers[name](args)
        record["cpu_seconds"] = round(time.process_time() - cpu0, 1)
        record["quick"] = args.quick
        print(json.dumps({name: record}), flush=True)
        # Named for the checkpoint: the BERT-style model's corpora must not overwrite each other.
        (args.out / f"{record['checkpoint']}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
