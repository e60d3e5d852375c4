"""Per-group width steps: the staircase chooser, its cache, and the steps flowing through
pruning, the search space and the latency table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import nasprune
from nasprune.errors import NaspruneError
from nasprune.metrics import count_macs
from nasprune.metrics.runtime import Runtime
from nasprune.search import SearchSpace
from nasprune.search import group_widths as gw
from nasprune.search.latency import layer_steps, measure_table

PERIOD = {1: 4, 3: 8, 5: 1}  # kernel size → the width multiple its fake kernels are fast at


def _three_kernels() -> nn.Module:
    """Three 32-channel groups whose output convs have kernels 1, 3 and 5."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(64, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def _stair(n: int, period: int) -> int:
    return period * math.ceil(n / period)


def _staircase_ms(module: nn.Module, shape: tuple, *args) -> float:
    """A deterministic runtime: a layer costs in × out channels, its output width rounded
    up to its kernel's period (the kernels compute whole blocks of that many channels)."""
    if isinstance(module, nn.Linear):
        return 1e-4 * module.in_features * module.out_features
    return 1e-3 * module.in_channels * _stair(module.out_channels,
                                              PERIOD[module.kernel_size[0]])


def test_lower_hull_and_chooser_on_synthetic_staircases() -> None:
    w = np.arange(4, 37)
    line = 1.0 + 0.1 * w
    assert np.allclose(gw.lower_hull(w, line), line)  # a line is its own hull
    bump = line.copy()
    bump[10] += 5.0
    assert np.allclose(gw.lower_hull(w, bump), line)  # a slow width is above it
    for period, want in ((8, 8), (4, 4), (16, 16), (1, 1)):
        ms = 0.1 + 0.05 * period * np.ceil(w / period)
        step, excess = gw.choose_step(w, ms, [1, 4, 8, 16], 0.04)
        assert step == want, (period, excess)
        assert excess[want] == pytest.approx(1.0)  # its widths lie on the hull
    # Within the margin the finer step wins: a 2 % penalty off multiples of 8 is tolerated.
    ms = line * np.where(w % 8 == 0, 1.0, 1.02)
    assert gw.choose_step(w, ms, [1, 4, 8], 0.04)[0] == 1
    assert gw.choose_step(w, ms, [1, 4, 8], 0.005)[0] == 8


def test_staircase_runtime_gives_each_group_its_own_step(monkeypatch, tmp_path) -> None:
    model, x = _three_kernels(), torch.randn(1, 64, 8, 8)
    monkeypatch.setattr(gw, "layer_ms", _staircase_ms)
    steps, info = gw.measured_steps(model, x, Runtime("torch"), cache_dir=tmp_path)
    assert steps == {"0": 4, "3": 8, "6": 1}, info["groups"]
    assert info["measured"] and gw.describe_steps(steps) == ("step 8: 1 group, step 4: 1 "
                                                            "group, step 1: 1 group")
    # Each group's window: every width within two steps of 16 of 60 % of its channels
    # (19 of 32: here every width); the time summed over the layers the group sets.
    assert info["groups"]["3"]["widths"] == list(range(1, 33))
    assert info["groups"]["3"]["ms"][4] == pytest.approx(1e-3 * (32 * 8 + 5 * 32))
    # Cached: a second call measures nothing and returns the same steps.
    monkeypatch.setattr(gw, "layer_ms", lambda *a: pytest.fail("measured again"))
    again, info2 = gw.measured_steps(model, x, Runtime("torch"), cache_dir=tmp_path)
    assert again == steps and "measured" not in info2
    # Another runtime is another fingerprint.
    monkeypatch.setattr(gw, "layer_ms", _staircase_ms)
    assert "measured" in gw.measured_steps(model, x, Runtime("torch", batch_size=2),
                                           cache_dir=tmp_path)[1]
    # The steps hold in the pruned network and in the search space's analytic widths.
    pruned = nasprune.prune(model, x, 0.45, round_to=steps)
    assert [m.out_channels for m in pruned if isinstance(m, nn.Conv2d)] == [16, 16, 18]
    space = SearchSpace(model, x, round_to=steps)
    rng = np.random.default_rng(0)
    for keep in rng.uniform(0.2, 1.0, size=(4, space.dim)):
        kept = space.kept(keep)
        assert np.array_equal(kept, space.kept_exact(keep))
        assert all(k == c or k % steps[n] == 0
                   for n, k, c in zip(space.names, kept, space.channels, strict=True))
        real = nasprune.prune(model, x, space.prune_ratios(keep), round_to=steps)
        assert space.cost(keep)[0] == count_macs(real, x)


def test_narrow_groups_are_not_given_steps_that_freeze_them(monkeypatch, tmp_path) -> None:
    """An 8-channel group tries steps up to 4, a 16-channel one up to 8."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(16 * 4 * 4, 10)).eval()
    x = torch.randn(1, 16, 8, 8)
    monkeypatch.setattr(gw, "layer_ms", lambda m, s, *a: 1e-3 * getattr(
        m, "in_channels", 1) * _stair(getattr(m, "out_channels", 1), 4))
    steps, info = gw.measured_steps(model, x, Runtime("torch"), cache_dir=tmp_path)
    assert set(info["groups"]["0"]["excess"]) == {"1", "4"}
    assert set(info["groups"]["2"]["excess"]) == {"1", "4", "8"}
    assert steps == {"0": 4, "2": 4}  # 8 is no faster than 4: the finer step wins


def test_latency_table_times_each_layer_at_its_groups_steps(monkeypatch) -> None:
    model, x = _three_kernels(), torch.randn(1, 64, 8, 8)
    steps = {"0": 4, "3": 8}  # the third group: free widths
    space = SearchSpace(model, x, round_to=steps)
    assert layer_steps(space) == [(4, 1), (8, 4), (1, 8), (1, 1)]
    seen = []
    from nasprune.search import latency

    def record(layer, shape, *a):
        seen.append(layer)
        return 1.0

    monkeypatch.setattr(latency, "fastest_ms", record)
    measure_table(model, space, Runtime("torch"), 0, 1)
    convs = [m for m in seen if isinstance(m, nn.Conv2d)]
    assert {m.out_channels % 4 for m in convs if m.kernel_size == (1, 1)} == {0}
    assert {m.out_channels % 8 for m in convs if m.kernel_size == (3, 3)} == {0}
    assert {m.in_channels % 4 for m in convs if m.kernel_size == (3, 3)} == {0}
    assert {m.in_channels % 8 for m in convs if m.kernel_size == (5, 5)} == {0}
    assert any(m.out_channels % 4 for m in convs if m.kernel_size == (5, 5))  # free widths


def test_bad_per_group_steps_are_one_clear_error() -> None:
    model, x = _three_kernels(), torch.randn(1, 64, 8, 8)
    with pytest.raises(NaspruneError, match=r"round_to names no prunable group 'O'"):
        nasprune.prune(model, x, 0.5, round_to={"O": 4})
    with pytest.raises(NaspruneError, match="round_to must be a positive integer"):
        nasprune.prune(model, x, 0.5, round_to={"0": 0})
    with pytest.raises(NaspruneError, match="round_to must be a positive integer"):
        SearchSpace(model, x, round_to={"0": 2.5})
    with pytest.raises(NaspruneError, match=r"round_to names no prunable group 'x'"):
        SearchSpace(model, x, round_to={"x": 4})


def test_search_round_to_auto_measures_each_groups_step(monkeypatch, tmp_path) -> None:
    from nasprune.search import Budget
    from nasprune.search.run import _timing

    model, x = _three_kernels(), torch.randn(1, 64, 8, 8)
    monkeypatch.setattr(gw, "layer_ms", _staircase_ms)
    rt, steps = _timing(Budget(speedup=1.5), model, x, None, Runtime("torch"), "auto",
                        tmp_path)
    assert rt == Runtime("torch") and steps == {"0": 4, "3": 8, "6": 1}
    with pytest.raises(NaspruneError, match="round_to='auto' measures widths on a runtime"):
        _timing(Budget(macs=0.5), model, x, None, None, "auto", tmp_path)
