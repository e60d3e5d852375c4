"""Transformers under exact cost: attention products counted, the analytic model exact.

``count_macs`` counts Hugging Face ``Conv1D`` as the linear layer it is and the attention
score/value products (``Q·Kᵀ``, attention·V) per query head at the example's sequence
length; the search's analytic cost model must give the same MACs and params as counting the
really pruned model, for every attention family, at any keep vector.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nasprune
from nasprune.metrics import count_macs, count_params, layer_costs
from nasprune.search import Budget, SearchSpace
from tiny_transformers import FAMILIES, tiny_transformer

SEQ, HIDDEN, HEADS, LAYERS = 12, 32, 4, 2


def _attention(costs) -> list[int]:
    return [c.macs for c in costs if c.kind == "attention"]


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_attention_products_are_counted_once_per_query_head_eager_or_sdpa(family):
    # Q·Kᵀ and attention·V: heads · L · L · head_dim each, per layer (GQA: per query head).
    per_layer = 2 * HEADS * SEQ * SEQ * (HIDDEN // HEADS)
    totals = {}
    for attn in ("eager", "sdpa"):
        model, x = tiny_transformer(family, seq=SEQ, attn=attn)
        costs = layer_costs(model, x)
        assert sum(_attention(costs)) == LAYERS * per_layer
        totals[attn] = count_macs(model, x)
    assert totals["eager"] == totals["sdpa"]


def test_gpt2_conv1d_layers_are_counted_as_linear_layers():
    model, x = tiny_transformer("gpt2", seq=SEQ)
    by_name = {c.name: c.macs for c in layer_costs(model, x)}
    assert by_name["transformer.h.0.attn.c_attn"] == SEQ * HIDDEN * 3 * HIDDEN
    assert by_name["transformer.h.1.mlp.c_fc"] == SEQ * HIDDEN * 4 * HIDDEN
    assert by_name["lm_head"] == SEQ * HIDDEN * 50
    attention = LAYERS * 2 * SEQ * SEQ * HIDDEN
    linear = LAYERS * SEQ * HIDDEN * HIDDEN * (3 + 1 + 4 + 4) + SEQ * HIDDEN * 50
    assert count_macs(model, x) == linear + attention


def test_multihead_attention_and_cnns_get_no_extra_products():
    # nn.MultiheadAttention counts its matmuls in its own formula: nothing on top.
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
    x = torch.randn(1, 5, 16)
    costs = layer_costs(layer, x)
    assert not _attention(costs)
    e, length = 16, 5
    mha = 4 * length * e * e + 2 * length * length * e
    assert count_macs(layer, x) == mha + 2 * length * e * 32
    # A model multiplying by its own weight (x @ W) is a layer's arithmetic, not counted.

    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 4))

        def forward(self, x):
            return x @ self.w

    assert count_macs(Custom(), torch.randn(1, 8)) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_analytic_cost_equals_the_really_pruned_model(family):
    model, x = tiny_transformer(family, seq=SEQ)
    space = SearchSpace(model, x)
    assert (space.base_macs, space.base_params) == (count_macs(model, x), count_params(model))
    rng = np.random.default_rng(0)
    for _ in range(3):
        keep = rng.uniform(0.1, 1.0, space.dim)
        pruned = nasprune.prune(model, x, space.prune_ratios(keep))
        assert space.cost(keep) == (count_macs(pruned, x), count_params(pruned))
        assert space.cost_model.cost_exact(space.kept(keep)) == space.cost(keep)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_macs_projection_lands_on_the_budget_for_the_real_model(family):
    model, x = tiny_transformer(family, seq=SEQ)
    space = SearchSpace(model, x)
    budget = Budget(macs=0.6)
    keep = space.project(np.random.default_rng(1).uniform(0.2, 1.0, space.dim), budget)
    real = count_macs(nasprune.prune(model, x, space.prune_ratios(keep)), x) / space.base_macs
    assert 0.6 * (1 - 0.05) <= real <= 0.6
