"""StageSpace: one keep ratio per stage — grouping, the map to groups, exact projection,
costs equal to the really pruned network, and a search in it end to end (CLI included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import nasprune
from nasprune.errors import NaspruneError
from nasprune.metrics import count_macs, count_params
from nasprune.pruning import prune
from nasprune.search import Budget, SearchSpace, search
from nasprune.search.spaces import make_space, space_names
from nasprune.search.stage_space import StageSpace
from projection_checks import assert_projected_onto_budget

X32 = torch.randn(1, 3, 32, 32)
FAST = {"bn_batches": 2, "val_size": 100, "progress": False}


@pytest.fixture(scope="module")
def r20() -> torch.nn.Module:
    return nasprune.create_model("resnet20")


@pytest.fixture(scope="module")
def r20_stage(r20) -> StageSpace:
    return StageSpace(r20, X32)


@pytest.fixture(scope="module")
def digits_stage(trained_digits_cnn, digits) -> StageSpace:
    return StageSpace(trained_digits_cnn, digits.example_input())


def test_registered_by_name_with_the_per_group_default() -> None:
    assert space_names() == ["blocks", "per-group", "stage"]
    assert SearchSpace.kind == "per-group" and StageSpace.kind == "stage"
    with pytest.raises(NaspruneError, match="did you mean 'stage'"):
        make_space("stages", nasprune.create_model("digitscnn", in_channels=1),
                   torch.zeros(1, 1, 8, 8))


def test_resnet20_stages_are_its_three_resolutions(r20_stage: StageSpace) -> None:
    s = r20_stage
    assert s.dim == 3 and len(s.names) == 12
    assert s.stage_names == ["conv1", "layer2.0.conv1", "layer3.0.conv1"]
    # Stage 1: the stem/residual group and the three blocks' inner convs at 32×32.
    assert [n for n, st in zip(s.names, s.stage_of, strict=True) if st == 0] == [
        "conv1", "layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1"]
    assert s.param_name(2) == "stage02_layer3.0.conv1"
    assert s.lower.shape == s.upper.shape == (3,)


def test_uniform_stage_vector_is_the_uniform_network(r20, r20_stage: StageSpace) -> None:
    """At whole-channel ratios the stagger changes nothing: the same widths as per-group."""
    per_group = SearchSpace(r20, X32)
    for k in (0.25, 0.5, 0.75, 1.0):
        assert np.array_equal(r20_stage.kept(np.full(3, k)), per_group.kept(np.full(12, k)))
        assert r20_stage.cost(np.full(3, k)) == per_group.cost(np.full(12, k))


def test_one_coordinate_adds_channels_one_group_at_a_time(r20_stage: StageSpace) -> None:
    """The stagger: raising a stage's ratio by less than one channel step reaches a width
    where its groups differ by one channel, never more."""
    s = r20_stage
    widths = set()
    for k in np.linspace(0.5, 0.5 + 1 / 16, 41):
        kept = s.kept(np.array([k, 0.5, 0.5]))[s.stage_of == 0]
        assert kept.max() - kept.min() <= 1
        widths.add(int(kept.sum()))
    assert widths == {32, 33, 34, 35, 36}  # 4 groups of 16 channels, 8 → 9 each in turn


def test_nearest_keep_is_exact_for_uniform_ratios(r20_stage: StageSpace) -> None:
    s = r20_stage
    for r in (0.0, 0.3, 0.5, 0.8):
        keep = s.keep_from_ratios(dict.fromkeys(s.names, r))
        assert np.allclose(keep, 1.0 - r, rtol=0, atol=1e-12)
    # Otherwise each stage keeps the channel-weighted mean (all groups of a stage are equal
    # here, so the plain mean): stage 1 asks 10+12+14+16 = 52 of 64 channels.
    ratios = {n: 0.0 for n in s.names}
    ratios.update({"conv1": 6 / 16, "layer1.0.conv1": 4 / 16, "layer1.1.conv1": 2 / 16})
    keep = s.keep_from_ratios(ratios)
    assert np.allclose(keep, [52 / 64, 1.0, 1.0])
    # A stage vector's own ratios map back to it (up to its sub-channel stagger).
    v = np.array([0.4, 0.6, 0.8])
    assert np.allclose(s.keep_from_ratios(s.prune_ratios(v)), v, atol=0.02)


def test_costs_equal_the_really_pruned_network(r20, r20_stage: StageSpace) -> None:
    rng = np.random.default_rng(0)
    for keep in rng.uniform(0.2, 1.0, size=(2, 3)):
        assert np.array_equal(r20_stage.kept(keep), r20_stage.kept_exact(keep))
        pruned = prune(r20, X32, r20_stage.prune_ratios(keep))
        assert r20_stage.cost(keep) == (count_macs(pruned, X32), count_params(pruned))


def _no_single_move_fits(space: StageSpace, keep: np.ndarray, budget: Budget) -> bool:
    """"Within rounding": no coordinate can gain its next channel without breaking the budget."""
    load = space._load_fn(budget)
    for i in range(space.dim):
        up = space._move(keep, i, up=True)
        if up is not None:
            nxt = keep.copy()
            nxt[i] = up
            if load(nxt) <= 1.0:
                return False
    return True


@pytest.mark.parametrize("budget", [Budget(macs=0.5), Budget(params=0.3), Budget(macs=0.25),
                                    Budget(macs=0.4, params=0.6)])
def test_projection_hits_budget_and_respects_bounds(budget, r20_stage, digits_stage) -> None:
    for space in (r20_stage, digits_stage):
        rng = np.random.default_rng(1)
        for raw in rng.uniform(0.1, 1.0, size=(6, space.dim)):
            keep = space.project(raw, budget)
            assert keep.shape == (space.dim,)
            assert_projected_onto_budget(space, raw, keep, budget)
            assert _no_single_move_fits(space, keep, budget)


def test_projection_with_round_to_is_within_one_step(r20) -> None:
    space = StageSpace(r20, X32, round_to=8)
    budget = Budget(macs=0.5)
    for raw in np.random.default_rng(2).uniform(0.1, 1.0, size=(4, 3)):
        keep = space.project(raw, budget)
        assert np.all(space.kept(keep) % 8 == 0)
        assert 0.97 * 0.5 <= space.fractions(keep)[0] <= 0.5
        assert _no_single_move_fits(space, keep, budget)


def test_projection_keeps_the_shape_and_multi_only_scales_down(r20_stage) -> None:
    s = r20_stage
    keep = s.project(np.array([0.3, 0.6, 0.9]), Budget(macs=0.5))
    ratio = keep / np.array([0.3, 0.6, 0.9])
    assert ratio.std() / ratio.mean() < 0.1  # a uniform scale up to the channel filling
    small = np.full(3, 0.3)
    assert np.array_equal(s.project(small, Budget(macs=0.5), exact=False), small)
    assert s.fractions(s.project(np.ones(3), Budget(macs=0.5), exact=False))[0] <= 0.5
    with pytest.raises(NaspruneError, match="needs 3 finite values"):
        s.project(np.full(12, 0.5), Budget(macs=0.5))
    with pytest.raises(NaspruneError, match="cannot be met"):
        s.project(small, Budget(macs=0.001))


def test_features_are_per_stage_and_shares_add_up(r20, r20_stage) -> None:
    f = r20_stage.features()
    per_group = SearchSpace(r20, X32).features()
    assert f.shape == (3, per_group.shape[1])
    assert np.allclose(f[:, 5].sum(), per_group[:, 5].sum())
    assert list(f[:, 0]) == [0.0, 0.5, 1.0]


def test_custom_stages_and_their_errors(r20) -> None:
    names = SearchSpace(r20, X32).names
    halves = {n: i < 6 for i, n in enumerate(names)}
    s = StageSpace(r20, X32, stages=halves)
    assert s.dim == 2 and list(s.stage_of) == [0] * 6 + [1] * 6
    with pytest.raises(NaspruneError, match="missing"):
        StageSpace(r20, X32, stages={"conv1": 0})
    with pytest.raises(NaspruneError, match="unknown"):
        StageSpace(r20, X32, stages={**halves, "nope": 1})


def test_search_in_the_stage_space_end_to_end(trained_digits_cnn, digits, tmp_path) -> None:
    """Trials store the stage vector and per-group ratios that prune to the stored costs;
    a study of one space cannot be continued in the other."""
    x = digits.example_input()
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = search(trained_digits_cnn, x, digits, strategy="evolution", trials=4, seed=0,
                    space="stage", storage=url, study="st", population=2, **FAST)
    assert len(result.trials) == 4 and result.failed == 0
    for c in result.trials:
        assert len(c.keep) == 2 and len(c.ratios) == 4
        assert 0.99 * 0.5 <= c.macs_fraction <= 0.5
    best = nasprune.prune(trained_digits_cnn, x, result.best.ratios)
    assert count_macs(best, x) == result.best.macs
    assert result.study.user_attrs["nasprune"]["space"] == "stage"
    with pytest.raises(NaspruneError, match="different search space"):
        search(trained_digits_cnn, x, digits, strategy="evolution", trials=5, seed=0,
               storage=url, study="st", **FAST)


def test_differentiable_maps_its_gates_to_the_stage_space(trained_digits_cnn, digits) -> None:
    result = search(trained_digits_cnn, digits.example_input(), digits,
                    strategy="differentiable", trials=1, seed=0, space="stage", steps=5,
                    **FAST)
    assert len(result.best.keep) == 2
    assert 0.99 * 0.5 <= result.best.macs_fraction <= 0.5


def test_cli_search_space_flag(trained_digits_cnn, tmp_path, capsys) -> None:
    from nasprune.checkpoint import save
    from nasprune.cli import main

    ckpt = save(trained_digits_cnn, tmp_path / "base",
                meta={"data": "digits", "input_shape": [1, 8, 8]})
    out = tmp_path / "best.json"
    assert main(["search", "--checkpoint", str(ckpt), "--space", "stage", "--strategy",
                 "random", "--trials", "2", "--bn-batches", "2", "--val-size", "100",
                 "--out", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["ratios"]) == {"features.0", "features.3", "features.7", "features.10"}
    assert len(doc["best"]["keep"]) == 2
    bad = tmp_path / "bad.json"
    assert main(["search", "--checkpoint", str(ckpt), "--space", "per-stage", "--trials", "2",
                 "--out", str(bad), "--quiet"]) == 2
    assert "space" in capsys.readouterr().err
    assert not bad.exists()
