"""Sensitivity analysis and the per-group allocation that meets a MACs target."""

from __future__ import annotations

import json

import pytest

import nasprune
import nasprune.metrics
from nasprune.errors import NaspruneError
from nasprune.methods.sensitivity import (
    SensitivityTable,
    ratios_from_sensitivity,
    sensitivity,
)
from nasprune.metrics import count_macs
from nasprune.pruning import prune

LEVELS = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def table(trained_digits_cnn, digits):
    return sensitivity(trained_digits_cnn, digits, levels=LEVELS, bn_batches=5)


def macs_fraction(model, ratios, example) -> float:
    return count_macs(prune(model, example, ratios), example) / count_macs(model, example)


def test_table_shape_and_first_conv_sensitivity(table, trained_digits_cnn, digits):
    names = [g.name for g in nasprune.pruning.groups(trained_digits_cnn, digits.example_input())]
    assert table.groups == names == ["features.0", "features.3", "features.7", "features.10"]
    for g in names:
        assert [lv for lv, _ in table.curves[g]] == list(LEVELS)
        assert all(0.0 <= acc <= 1.0 for _, acc in table.curves[g])
        # Pruning more channels always costs MACs.
        assert table.base_macs > table.macs[g][0] > table.macs[g][1] > table.macs[g][2]
    assert table.baseline > 0.9
    assert table.channels == {"features.0": 32, "features.3": 32, "features.7": 64,
                              "features.10": 64}
    acc = dict(table.curves["features.0"])
    # Measured: 0.955 at level 0.1, 0.268 at 0.9 (baseline 0.955) on the val split.
    assert acc[0.9] < acc[0.1] - 0.2


def test_only_the_validation_split_is_used(trained_digits_cnn, digits, monkeypatch):
    splits = []
    real = nasprune.metrics.evaluate

    def spy(model, data, split="test", **kw):
        splits.append(split)
        return real(model, data, split=split, **kw)

    monkeypatch.setattr(nasprune.metrics, "evaluate", spy)
    small = sensitivity(trained_digits_cnn, digits, levels=(0.5,), groups=["features.7"], val_size=100,
                        bn_batches=2)
    assert splits == ["val", "val"]  # baseline + one level
    assert list(small.curves) == ["features.7"]
    # val_size caps the samples: accuracies are multiples of 1/100.
    for _, acc in small.curves["features.7"]:
        assert abs(acc * 100 - round(acc * 100)) < 1e-9


@pytest.mark.parametrize("target", [0.5, 0.3])
def test_allocation_meets_the_macs_target(table, trained_digits_cnn, digits, target):
    ex = digits.example_input()
    ratios = ratios_from_sensitivity(table, trained_digits_cnn, ex, target_macs=target)
    assert set(ratios) <= set(table.groups)
    assert all(0 < r <= max(LEVELS) for r in ratios.values())
    frac = macs_fraction(trained_digits_cnn, ratios, ex)
    assert target - 0.01 <= frac <= target


def test_the_less_sensitive_group_loses_more(trained_digits_cnn, digits):
    ex = digits.example_input()
    steep = [(0.1, 0.90), (0.5, 0.50), (0.9, 0.10)]
    flat = [(0.1, 0.95), (0.5, 0.94), (0.9, 0.90)]
    table = SensitivityTable(
        baseline=0.95, levels=list(LEVELS),
        curves={"features.3": steep, "features.7": steep, "features.10": flat},
        channels={"features.3": 32, "features.7": 64, "features.10": 64},
    )
    ratios = ratios_from_sensitivity(table, trained_digits_cnn, ex, target_macs=0.6)
    assert ratios["features.10"] > 0.5 > ratios.get("features.3", 0.0)
    assert "features.0" not in ratios  # not in the table: never pruned
    assert 0.59 <= macs_fraction(trained_digits_cnn, ratios, ex) <= 0.6


def test_search_space_cost_model_gives_the_same_allocation(table, trained_digits_cnn, digits):
    from nasprune.search.space import SearchSpace

    ex = digits.example_input()
    by_model = ratios_from_sensitivity(table, trained_digits_cnn, ex, target_macs=0.5)
    by_space = ratios_from_sensitivity(table, SearchSpace(trained_digits_cnn, ex), target_macs=0.5)
    assert by_space == pytest.approx(by_model)


def test_table_round_trips_through_json(table):
    again = SensitivityTable.from_dict(json.loads(table.to_json()))
    assert again == table
    assert table.drop_at("features.0", 0.0) == 0.0
    assert table.ratio_for("features.0", -1.0) == 0.0
    assert table.ratio_for("features.0", 10.0) == max(LEVELS)
    assert "features.10" in str(table)
    with pytest.raises(NaspruneError, match="not a sensitivity table"):
        SensitivityTable.from_dict({"levels": []})


def test_envelope_is_monotone_and_interpolates():
    table = SensitivityTable(
        baseline=0.9, levels=[0.2, 0.4, 0.6],
        curves={"a": [(0.2, 0.92), (0.4, 0.80), (0.6, 0.85)]}, channels={"a": 10},
    )
    # Pruning 20 % "helped" (noise): the envelope keeps drops ≥ 0 and non-decreasing.
    flat = [v for point in table.envelope("a") for v in point]
    assert flat == pytest.approx([0, 0, 0.2, 0, 0.4, 0.1, 0.6, 0.1])
    assert table.drop_at("a", 0.3) == pytest.approx(0.05)
    assert table.ratio_for("a", 0.05) == pytest.approx(0.3)
    assert table.ratio_for("a", 0.1) == pytest.approx(0.6)


def test_bad_arguments(table, trained_digits_cnn, digits):
    ex = digits.example_input()
    with pytest.raises(NaspruneError, match="levels"):
        sensitivity(trained_digits_cnn, digits, levels=(0.5, 1.0))
    with pytest.raises(NaspruneError, match="at least one level"):
        sensitivity(trained_digits_cnn, digits, levels=())
    with pytest.raises(NaspruneError, match="group 'conv9' does not exist"):
        sensitivity(trained_digits_cnn, digits, levels=(0.5,), groups=["conv9"])
    with pytest.raises(NaspruneError, match="val_size"):
        sensitivity(trained_digits_cnn, digits, levels=(0.5,), val_size=0)
    with pytest.raises(NaspruneError, match="out of reach"):
        ratios_from_sensitivity(table, trained_digits_cnn, ex, target_macs=0.001)
    with pytest.raises(NaspruneError, match="target_macs"):
        ratios_from_sensitivity(table, trained_digits_cnn, ex, target_macs=1.5)
    with pytest.raises(NaspruneError, match="example_inputs"):
        ratios_from_sensitivity(table, trained_digits_cnn, None, target_macs=0.5)
