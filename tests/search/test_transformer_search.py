"""search() on causal LMs (GPT-2's Conv1D, Llama's grouped-query attention) under MACs and
params budgets, on a real-text language-model task; every trial's pruned model fits."""

from __future__ import annotations

import math

import pytest

import nasprune
from nasprune.metrics import count_macs, count_params
from nasprune.search import Budget, search
from tiny_transformers import docstring_lm_task, tiny_transformer


@pytest.fixture(scope="module")
def lm_task(tmp_path_factory):
    pytest.importorskip("transformers", reason="Hugging Face transformers not installed")
    return docstring_lm_task(tmp_path_factory.mktemp("docs"), seq_len=24)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_every_trial_of_a_causal_lm_search_fits_macs_and_params(family, lm_task):
    task, vocab = lm_task
    model, x = tiny_transformer(family, seq=24, vocab=vocab)
    budget = Budget(macs=0.6, params=0.8)
    result = search(model, x, task, strategy="random", target=budget, trials=4, seed=0,
                    progress=False, val_size=32, verify=False)
    assert len(result.trials) == 4 and result.failed == 0
    base_macs, base_params = count_macs(model, x), count_params(model)
    for c in result.trials:
        pruned = nasprune.prune(model, x, c.ratios)
        macs, params = count_macs(pruned, x), count_params(pruned)
        assert (macs, params) == (c.macs, c.params)  # the analytic cost is the real one
        assert macs <= 0.6 * base_macs and params <= 0.8 * base_params
        assert math.isfinite(c.score) and c.score < -1.0  # negative perplexity
    assert result.best.score == max(c.score for c in result.trials)
    # the searched (projected) trial sits on the binding limit, not far under it
    searched = [c for c in result.trials if c.warm_start is None]
    assert searched and all(max(c.macs_fraction / 0.6, c.params_fraction / 0.8) >= 0.95
                            for c in searched)


def test_a_search_over_blocks_drops_layers_and_every_trial_fits(lm_task):
    task, vocab = lm_task
    model, x = tiny_transformer("llama", layers=3, seq=24, vocab=vocab)
    budget = Budget(macs=0.5)
    result = search(model, x, task, strategy="random", target=budget, trials=5, seed=0,
                    progress=False, val_size=32, verify=False, space="blocks")
    assert result.failed == 0 and result.space.blocks == [f"model.layers.{i}" for i in range(3)]
    base_macs = count_macs(model, x)
    dropped_any = False
    for c in result.trials:
        pruned = nasprune.prune(model, x, c.ratios)
        assert (count_macs(pruned, x), count_params(pruned)) == (c.macs, c.params)
        assert c.macs <= 0.5 * base_macs
        gone = [b for b in result.space.blocks if c.ratios.get(b) == 1.0]
        dropped_any |= bool(gone)
        assert all(type(pruned.get_submodule(b)).__name__ == "Skip" for b in gone)
    assert dropped_any
    assert result.to_dict()["ratios"] == result.best.ratios  # what `nasprune prune` reads
