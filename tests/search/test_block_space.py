"""The blocks space: per-group widths plus a keep/drop gene per Transformer layer or
residual block, with exact costs, a projection that meets the budget, and prune ratios
(1.0 under a block's name) that rebuild the same network in Python and on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import nasprune
from nasprune.errors import NaspruneError
from nasprune.metrics import count_macs, count_params
from nasprune.pruning import without_blocks
from nasprune.pruning.layers import output_norm_scores
from nasprune.pruning.module_kinds import Skip
from nasprune.search import Budget
from nasprune.search import warm_start as warm
from nasprune.search.block_space import BlockSpace
from nasprune.search.spaces import make_space
from tiny_transformers import FAMILIES, tiny_transformer

RGB = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _model(name: str):
    if name == "resnet20":
        return nasprune.create_model("resnet20", num_classes=10).eval(), RGB
    return tiny_transformer(name, layers=3)


def _vectors(space: BlockSpace, n: int = 3) -> list[np.ndarray]:
    """Random points, the first dropping exactly the second block, the rest as drawn."""
    rng = np.random.default_rng(0)
    out = [rng.uniform(space.lower, space.upper) for _ in range(n)]
    out[0][space.n_groups:] = 1.0
    out[0][space.n_groups + 1] = 0.2
    return out


@pytest.mark.parametrize("name", [*FAMILIES, "resnet20"])
def test_cost_with_dropped_blocks_is_that_of_the_network_built(name):
    model, x = _model(name)
    space = BlockSpace(model, x)
    assert len(space.blocks) == (7 if name == "resnet20" else 3)
    assert space.dim == len(space.groups) + len(space.blocks)
    drops = set()
    for keep in _vectors(space):
        ratios = space.prune_ratios(keep)
        dropped = space.dropped(keep)
        drops.update(dropped)
        groups = {k: v for k, v in ratios.items() if k not in dropped}
        # Built by hand: prune the widths, then replace the dropped blocks by the identity.
        built = without_blocks(nasprune.prune(model, x, groups), dropped, "test", {})
        assert space.cost(keep) == (count_macs(built, x), count_params(built))
        # prune() reads the same ratios (1.0 under a block's name) as that network.
        pruned = nasprune.prune(model, x, ratios)
        assert (count_macs(pruned, x), count_params(pruned)) == space.cost(keep)
        assert all(isinstance(pruned.get_submodule(b), Skip) for b in dropped)
        assert space.keep_from_ratios(ratios)[space.n_groups:].tolist() == [
            0.0 if b in dropped else 1.0 for b in space.blocks]
    assert space.blocks[1] in drops and len(drops) > 1


@pytest.mark.parametrize("name", ["llama", "resnet20"])
def test_projection_meets_the_budget_with_the_blocks_as_sampled(name):
    model, x = _model(name)
    space = make_space("blocks", model, x)
    budget = Budget(macs=0.5, params=0.8)
    for keep in _vectors(space, 4):
        out = space.project(keep, budget)
        assert space.dropped(out) == space.dropped(keep)
        macs, params = space.fractions(out)
        assert macs <= 0.5 and params <= 0.8
        load = max(macs / 0.5, params / 0.8)
        widths = out[: space.n_groups]
        # on the budget, unless the blocks dropped leave it out of reach at full width
        assert load >= 0.99 or np.allclose(widths, space.group_upper)
        real = nasprune.prune(model, x, space.prune_ratios(out))
        assert count_macs(real, x) <= 0.5 * space.base_macs


def test_blocks_beyond_the_sampled_ones_go_only_when_nothing_else_fits():
    model, x = _model("gpt2")
    space = BlockSpace(model, x)
    keep = np.ones(space.dim)  # every block kept
    lowest = space.fractions(np.concatenate([space.group_lower, np.ones(3)]))[0]
    out = space.project(keep, Budget(macs=0.8 * lowest))
    assert space.dropped(out) == ["transformer.h.2"]  # the deepest block first
    assert space.fractions(out)[0] <= 0.8 * lowest
    with pytest.raises(NaspruneError, match="latency"):
        space.project(keep, Budget(speedup=2.0))


@pytest.mark.parametrize("budget", [0.3, 0.5])
def test_warm_start_keeps_every_block_and_adds_the_depth_axis(budget):
    model, x = tiny_transformer("vit", layers=4)
    space = BlockSpace(model, x)
    found = dict(warm.candidates(space, Budget(params=budget), model, x))
    # The one-knob baselines keep the depth (uniform once dropped every block here).
    assert space.dropped(found["uniform"]) == space.dropped(found["global"]) == []
    scores = output_norm_scores(model, space.blocks, x)
    order = sorted(space.blocks, key=scores.get)
    assert space.dropped(found["uniform-depth3"]) == order[:1]
    assert sorted(space.dropped(found["uniform-depth2"])) == sorted(order[:2])
    for name, keep in found.items():
        params = space.fractions(keep)[1]
        assert params <= budget, name
        if name != "uniform-depth2":  # full width at depth 2 may fall short of 0.5
            assert params >= budget - 0.06, name
        widths = space.kept(keep)[: space.n_groups]
        kept = {kind: {w / g.channels for g, w in zip(space.groups, widths, strict=True)
                       if g.kind == kind} for kind in ("heads", "ffn")}
        if name.startswith(("uniform", "ffn")):  # one ratio: every FFN keeps the same width
            assert len(kept["ffn"]) == 1, name
        if name.startswith("ffn"):  # Minitron's width axis: the heads stay whole
            assert kept["heads"] == {1.0} and kept["ffn"] != {1.0}, name
    assert ("ffn-depth3" in found) == (budget == 0.5)  # at 0.3 even no FFN at all is too big


def test_a_whole_ratio_drops_only_a_block():
    model, x = _model("bert")
    # 1.0 under a group's name is still a bad ratio; under another name, no such group.
    with pytest.raises(NaspruneError, match="group 'bert.encoder.layer.0.attention.self'"):
        nasprune.prune(model, x, {"bert.encoder.layer.0.attention.self": 1.0})
    with pytest.raises(NaspruneError, match="no prunable group named 'bert.encoder.layer.7'"):
        nasprune.prune(model, x, {"bert.encoder.layer.7": 1.0})
    with pytest.raises(NaspruneError, match="not a block"):
        BlockSpace(model, x, blocks=["bert.pooler"])


def test_prune_ratios_file_rebuilds_the_network_on_the_command_line(tmp_path):
    from nasprune.checkpoint import load, save
    from nasprune.cli import main

    model, x = _model("resnet20")
    space = BlockSpace(model, x)
    keep = _vectors(space)[0]
    ckpt = tmp_path / "base"
    save(model, ckpt, meta={"input_shape": [3, 32, 32]})
    ratios = tmp_path / "search.json"
    ratios.write_text(json.dumps({"ratios": space.prune_ratios(keep)}))
    assert main(["prune", "--checkpoint", str(ckpt), "--ratios", str(ratios), "--out",
                 str(tmp_path / "pruned")]) == 0
    rebuilt = load(tmp_path / "pruned")
    assert (count_macs(rebuilt, x), count_params(rebuilt)) == space.cost(keep)
    assert isinstance(rebuilt.get_submodule(space.blocks[1]), Skip)


def test_latency_leaves_dropped_blocks_out_and_a_speedup_budget_holds(tmp_path):
    from nasprune.metrics.runtime import Runtime
    from nasprune.search.latency import GRID, LatencyModel

    model, x = _model("resnet20")
    space = BlockSpace(model, x)
    names = space.cost_model.layer_names
    # Every counted layer costs g ms at width factor g; 0.5 ms outside, overhead ×2.
    table = np.tile(np.asarray(GRID), (len(names), 1))
    space.latency = LatencyModel(space, table, GRID, 0.5, 2.0)
    full = np.ones(space.dim)
    base = space.latency.base_ms
    assert base == pytest.approx(space.latency.predict(space.kept(full)))
    assert base == pytest.approx(0.5 + 2.0 * len(names))
    keep = full.copy()
    keep[space.n_groups + 1] = 0.0  # the second block goes: its two convs with it
    inside = [n for n in names if n.startswith(space.blocks[1] + ".")]
    assert len(inside) == 2
    assert space.latency.predict(space.kept(keep)) == pytest.approx(base - 2.0 * 2)
    budget = Budget(speedup=1.5)
    for v in _vectors(space, 4):
        out = space.project(v, budget)
        speedup = base / space.latency.predict(space.kept(out))
        assert space.dropped(out) == space.dropped(v) and speedup >= 1.5
        # on the budget, unless the blocks dropped already beat it at full width
        assert speedup <= 1.5 * 1.03 or np.allclose(out[: space.n_groups], space.group_upper)
    # Dropping every block is the fastest the space can go, and the refusal says so.
    lowest = space.latency.predict(space.kept(space.lower))
    with pytest.raises(NaspruneError, match=rf"only {base / lowest:.2f}x"):
        space.check_feasible(Budget(speedup=1.01 * base / lowest))
    # The blocks space measures a table the per-group space reuses: same layers, calibrated
    # on the same whole networks (widths only, every block kept).
    rt = Runtime("torch", threads=1)
    flat = make_space("per-group", model, x)
    one = LatencyModel.for_space(space, model, x, cache_dir=tmp_path, runtime=rt, warmup=1,
                                 repeats=2)
    two = LatencyModel.for_space(flat, model, x, cache_dir=tmp_path, runtime=rt)
    assert "measured" in one.meta and "measured" not in two.meta
    assert (two.a, two.b) == (one.a, one.b) and np.array_equal(two.table, one.table)
