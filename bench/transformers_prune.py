"""Benchmark: prune the three transformers of ``bench/transformers_train.py`` to a params
target and compare uniform, Minitron-style, block-drop and searched allocations after the
same short distillation fine-tune (issue 14).

For each model (``vit``, ``bert``, ``llama``), method (see ``transformers_methods.py``) and
seed: prune to at most ``--budget`` of the Transformer-layer params (embeddings and output
heads, which no method prunes, kept; the fraction of all params is recorded too), score the
test split before fine-tuning, fine-tune ``--steps`` AdamW steps with distillation from the
unpruned model (KL at temperature 4, weight 0.9, plus the task loss; the same for every
method), score again, and time the network against the unpruned one (interleaved, batch 1,
one thread; tokens/s for the LM's 128-token forward). The seed sets the fine-tune's data
order and the search's seed. Each finished (model, method, seed) is written to
``OUT/<model>-<method>-s<seed>.json`` and skipped when the script runs again.

Usage: ``nice .venv/bin/python bench/transformers_prune.py [--models vit,bert,llama]
[--methods tp-uniform,uniform,minitron,blocks,searched] [--seeds 0,1,2] [--budget 0.5]
[--trials 30] [--steps N] [--val-size N] [--space NAME] [--proxy-steps N
[--proxy-optimizer adamw] [--proxy-lr 5e-4] [--proxy-distill]] [--proxy-rungs VAL:STEPS,...
[--proxy-eta 3]] [--vit-val N] [--table]``; ``--table``
prints the markdown summary of the stored results.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers_methods as tm
from transformers_table import table
from transformers_train import BERT_CHECKPOINTS, BERT_MAX_LEN, bert_corpus, load_hf

import nasprune
from nasprune.data import classification_task, language_model_task, read_text_corpus
from nasprune.data.text import TokenBatches, load_tokenizer
from nasprune.metrics import count_params
from nasprune.metrics.runtime import time_ms
from nasprune.pruning.attention import transformer_layers
from nasprune.search.config import DEFAULT_STRATEGY
from nasprune.search.proxy import Proxy
from nasprune.search.rungs import ETA, as_rungs
from nasprune.task import dataset_task, example_inputs

CHECKPOINTS = {"vit": "vit-tiny-cifar10", "llama": "llama-fortunes-en"}  # bert: --bert-corpus
METHODS = ("tp-uniform", "uniform", "minitron", "blocks", "searched")
# Per model: validation samples the proxy scores on (images, texts, 128-token blocks) and
# fine-tune steps (batches of 64 images, 32 texts, 16 blocks): sized for a shared 2-core CPU.
VAL_SIZE = {"vit": 256, "bert": 512, "llama": 48}
STEPS = {"vit": 40, "bert": 60, "llama": 40}


class Unsupported(Exception):
    """A method that cannot run on a model (recorded as skipped, not as a result)."""


@dataclass
class Setup:
    """One trained model, its task (seed 0: scoring, search, block scores) and fresh
    training batches per seed for the fine-tune (a task's training batches count their
    passes, so every fine-tune gets its own, and equal seeds see equal data)."""

    name: str
    model: torch.nn.Module
    meta: dict
    task: Any
    train_for: Any  # seed -> a new iterable of training batches in that seed's order
    lm: bool

    @functools.cached_property
    def example(self) -> Any:
        return example_inputs(self.task)

    def finetune_task(self, seed: int) -> Any:
        return self.task.with_splits(train=self.train_for(seed))


def load_setup(name: str, args: argparse.Namespace) -> Setup:
    """The trained checkpoint and its data, split as ``transformers_train.py`` split it."""
    directory = args.checkpoints / (BERT_CHECKPOINTS[args.bert_corpus] if name == "bert"
                                    else CHECKPOINTS[name])
    model = load_hf(directory).eval()
    meta = nasprune.checkpoint.read_spec(directory)["meta"]
    if name == "vit":
        data = nasprune.load_dataset("cifar10", root=args.cifar, seed=0)
        data.train = data.train.subset(meta["train_subset"], seed=0)
        # Checkpoints saved before the sizes were recorded used 1,000 and 2,000.
        data.val = data.val.subset(args.vit_val or meta.get("val_subset", 1000), seed=0)
        data.test = data.test.subset(meta.get("test_subset", 2000), seed=0)
        return Setup(name, model, meta, dataset_task(data, batch_size=256), lambda seed: data.loader(
            "train", batch_size=64, shuffle=True, augment=True, seed=seed, drop_last=True),
            lm=False)
    tok = load_tokenizer(str(directory / "tokenizer.json"))
    if name == "bert":
        max_len = meta.get("max_len", BERT_MAX_LEN[args.bert_corpus])
        task = classification_task(bert_corpus(args.fortunes, args.bert_corpus), tok,
                                   max_len=max_len, batch_size=32, seed=0)
    else:
        corpus = read_text_corpus(args.fortunes / "topics", classes="file", records="fortune",
                                  val_fraction=0.05, test_fraction=0.05, seed=0,
                                  name="fortunes-en")
        task = language_model_task(corpus, tok, seq_len=128, batch_size=16, seed=0)
    train = task.train
    labels = None if train.labels is None else train.labels.tolist()
    return Setup(name, model, meta, task, lambda seed: TokenBatches(
        train.sequences, labels, train.batch_size, seed), lm=name == "llama")


def test_score(setup: Setup, model: torch.nn.Module) -> float:
    """Test top-1, or test perplexity for the LM."""
    score = nasprune.evaluate(model, setup.task, split="test", progress=False)["score"]
    return -score if setup.lm else score


def latency(setup: Setup, base: torch.nn.Module, net: torch.nn.Module,
            rounds: int = 7, repeats: int = 10) -> dict:
    """Interleaved batch-1 latency of ``net`` and the unpruned ``base`` (one thread)."""
    x = setup.example
    torch.set_num_threads(1)

    def session(m: torch.nn.Module):
        m = copy.deepcopy(m).eval()

        def run() -> Any:
            with torch.inference_mode():
                return m(x) if isinstance(x, torch.Tensor) else m(**x)
        return run

    runs = [session(base), session(net)]
    for r in runs:
        time_ms(r, 0, warmup=3)
    times = np.array([[time_ms(r, repeats) for r in runs] for _ in range(rounds)])
    med = np.median(times, axis=2)  # (rounds, 2)
    out = {"base_ms": float(np.median(times[:, 0])), "ms": float(np.median(times[:, 1])),
           "speedup": float(np.median(med[:, 0] / med[:, 1]))}
    if setup.lm:
        tokens = int(x["input_ids"].shape[1])
        out["tokens_per_s"] = tokens / out["ms"] * 1e3
        out["base_tokens_per_s"] = tokens / out["base_ms"] * 1e3
    return out


def architecture(model: torch.nn.Module, base: torch.nn.Module) -> list:
    """Per Transformer layer: [query heads, FFN width], or "dropped"."""
    mods = dict(model.named_modules())
    out = []
    for name in transformer_layers(base):
        layer = mods[name]
        if not any(True for _ in layer.parameters()):
            out.append("dropped")
            continue
        lin = {n.rsplit(".", 1)[-1]: m for n, m in layer.named_modules()
               if isinstance(m, torch.nn.Linear)}
        q = lin.get("query") or lin["q_proj"]
        att = next(m for m in layer.modules() if any(c is q for c in m.children()))
        size = getattr(att, "attention_head_size", None) or att.head_dim
        ffn = (lin.get("fc1") or lin.get("gate_proj") or
               next(m for n, m in layer.named_modules() if n.endswith("intermediate.dense")))
        out.append([q.out_features // size, ffn.out_features])
    return out


def _proxy_fine_tunes(args: argparse.Namespace) -> bool:
    """Whether the proxy fine-tunes candidates (``--proxy-steps``, or rungs: a top rung
    with steps)."""
    return bool(args.proxy_steps or args.proxy_rungs)


def proxy(setup: Setup, args: argparse.Namespace, cache: dict) -> Proxy:
    """The proxy the search and the Minitron grid score on (built once per model): the
    task's score on ``--val-size`` validation samples, after ``--proxy-steps`` fine-tuning
    steps (``--proxy-optimizer`` at ``--proxy-lr``, ``--proxy-distill``) on the
    fine-tune's own batches (seed 0: 64 images / 32 texts / 16 blocks); with
    ``--proxy-rungs``, in those multi-fidelity rungs (the same recipe), the best
    ``1/--proxy-eta`` of a rung advancing."""
    if "proxy" not in cache:
        task = setup.finetune_task(0) if _proxy_fine_tunes(args) else setup.task
        cache["proxy"] = Proxy(setup.model, task, bn_batches=0, val_size=args.val_size,
                               example_inputs=setup.example, progress=False,
                               finetune_steps=args.proxy_steps,
                               finetune_optimizer=args.proxy_optimizer,
                               finetune_lr=args.proxy_lr, distill=args.proxy_distill,
                               rungs=as_rungs(args.proxy_rungs, args.proxy_eta))
    return cache["proxy"]


def prune_method(setup: Setup, method: str, target: int, seed: int,
                 args: argparse.Namespace, cache: dict) -> tuple[torch.nn.Module, dict]:
    """The network ``method`` delivers at ``target`` params and what it recorded."""
    model, ex, task = setup.model, setup.example, setup.task
    if method == "tp-uniform" and setup.lm:
        raise Unsupported("Torch-Pruning's dependency graph does not finish on HF Llama's "
                          "rotary grouped-query attention (see src/nasprune/pruning/gqa.py); "
                          "'uniform' is the same recipe through nasprune's engine")
    if method == "searched":
        return tm.searched(model, ex, task, target, seed, args, proxy(setup, args, cache))
    if method in cache:  # the other methods do not depend on the seed
        return cache[method]
    if "units" not in cache:
        cache["units"] = tm.unit_groups(model, ex)
        cache["order"] = tm.block_order(model, ex, setup.task)
    units, (order, scores) = cache["units"], cache["order"]
    info: dict = {}
    if method == "tp-uniform":
        # One ratio for heads and FFN; the head ratio capped where Torch-Pruning would
        # remove every head (it then fails), as a user would set head_pruning_ratio.
        heads = tm.largest_working(lambda r: tm.tp_uniform(model, ex, r), 0.99)
        net, info["ratio"] = tm.largest_under(
            lambda r: tm.tp_uniform(model, ex, r, min(r, heads)), target)
        info["head_ratio"] = min(info["ratio"], heads)
    elif method == "uniform":
        net, info["ratio"] = tm.largest_under(
            lambda r: tm.engine_uniform(model, ex, units, r), target)
    elif method == "blocks":
        net = tm.blocks_only(model, order, scores, target)
    elif method == "minitron":
        net, info["grid"] = tm.minitron(model, ex, units, order, scores, target,
                                        proxy(setup, args, cache))
    else:
        raise ValueError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
    cache[method] = (net, info)
    return net, info


def finetune(setup: Setup, net: torch.nn.Module, seed: int, args: argparse.Namespace) -> None:
    """The same short AdamW fine-tune with distillation from the unpruned model, for all."""
    task = setup.finetune_task(seed)
    epochs = math.ceil(args.steps / len(task.train))
    nasprune.finetune(net, task, epochs=epochs, teacher=setup.model, max_steps=args.steps,
                      optimizer="adamw", lr=args.lr, weight_decay=0.01, schedule="cosine",
                      seed=seed, progress=False, validate=False)


def run_one(setup: Setup, method: str, seed: int, args: argparse.Namespace,
            cache: dict, out: Path) -> dict:
    base = count_params(setup.model)
    layers = tm.layer_params(setup.model)
    target = base - layers + int(args.budget * layers)
    cpu0, t0 = time.process_time(), time.perf_counter()
    net, info = prune_method(setup, method, target, seed, args, cache)
    net = copy.deepcopy(net)
    params = count_params(net)
    assert params <= target, f"{method}: {params} params > target {target}"
    record = {"model": setup.name, "method": method, "seed": seed, "budget": args.budget,
              "base_params": base, "target_params": target, "params": params,
              "params_fraction": params / base,
              "layer_params_fraction": (params - (base - layers)) / layers,
              "architecture": architecture(net, setup.model), **info,
              "prune_seconds": round(time.perf_counter() - t0, 1)}
    record["before"] = test_score(setup, net)
    t1 = time.perf_counter()
    finetune(setup, net, seed, args)
    record["finetune_seconds"] = round(time.perf_counter() - t1, 1)
    record["after"] = test_score(setup, net)
    record["latency"] = latency(setup, setup.model, net)
    record.update(proxy_recipe={"steps": args.proxy_steps, "rungs": args.proxy_rungs,
                                "eta": args.proxy_eta,
                                "optimizer": args.proxy_optimizer, "lr": args.proxy_lr,
                                "distill": args.proxy_distill}
                  if _proxy_fine_tunes(args) else {"steps": 0})
    record.update(steps=args.steps, lr=args.lr, metric="test ppl" if setup.lm else "test top-1",
                  cpu_seconds=round(time.process_time() - cpu0, 1), load=os.getloadavg()[0])
    out.write_text(json.dumps(record, indent=1))
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vit,bert,llama")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=float, default=0.5,
                   help="fraction of the Transformer-layer params kept")
    p.add_argument("--checkpoints", type=Path, default=Path("bench/results/transformers"))
    p.add_argument("--out", type=Path, default=Path("bench/results/transformers/prune"))
    p.add_argument("--fortunes", type=Path, default=Path("data/fortunes"))
    p.add_argument("--cifar", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--vit-val", type=int, default=None,
                   help="validation images the ViT's proxy may score (of the 10,000 held "
                        "out of training; default: the checkpoint's own val subset)")
    p.add_argument("--bert-corpus", choices=sorted(BERT_MAX_LEN), default="supersense",
                   help="the BERT-style model's task (as trained by transformers_train.py)")
    p.add_argument("--strategy", default=DEFAULT_STRATEGY,
                   help=f"search strategy (default: nasprune's, {DEFAULT_STRATEGY})")
    p.add_argument("--space", default="blocks",
                   help="search space name (default: blocks: per-layer heads, FFN width and "
                        "depth)")
    p.add_argument("--trials", type=int, default=30, help="search trials (warm start included)")
    p.add_argument("--val-size", type=int, default=None,
                   help=f"validation samples the proxy (search, Minitron grid) scores on; "
                        f"default per model {VAL_SIZE}")
    p.add_argument("--steps", type=int, default=None,
                   help=f"fine-tune steps (all methods); default per model {STEPS}")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--proxy-steps", type=int, default=0,
                   help="fine-tuning steps of the proxy before it scores (default 0: none)")
    p.add_argument("--proxy-optimizer", default="adamw")
    p.add_argument("--proxy-lr", type=float, default=5e-4)
    p.add_argument("--proxy-rungs", default=None,
                   help="multi-fidelity rungs of the proxy, VAL:STEPS,... (e.g. 48:0,160:20): "
                        "the search scores in them, the Minitron grid at the top one")
    p.add_argument("--proxy-eta", type=float, default=ETA,
                   help=f"with --proxy-rungs: the best 1/eta of a rung advance "
                        f"(default {ETA:g})")
    p.add_argument("--proxy-distill", action="store_true",
                   help="the proxy fine-tunes by distillation from the unpruned model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table", action="store_true", help="print the summary and exit")
    args = p.parse_args()
    if args.table:
        print(table(args.out))
        return
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    asked = {"val_size": args.val_size, "steps": args.steps}
    for name in args.models.split(","):
        setup, cache = None, {}
        args.val_size = asked["val_size"] or VAL_SIZE[name]
        args.steps = asked["steps"] or STEPS[name]
        for method in args.methods.split(","):
            for seed in map(int, args.seeds.split(",")):
                out = args.out / f"{name}-{method}-s{seed}.json"
                if out.exists():
                    continue
                setup = setup or load_setup(name, args)
                try:
                    rec = run_one(setup, method, seed, args, cache, out)
                except Unsupported as exc:
                    print(f"{name} {method}: skipped: {exc}", flush=True)
                    break
                print(json.dumps({k: rec[k] for k in ("model", "method", "seed", "params",
                                                      "before", "after", "cpu_seconds")}),
                      flush=True)


if __name__ == "__main__":
    main()
