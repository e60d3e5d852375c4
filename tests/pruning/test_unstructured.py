"""Threshold (unstructured) pruning: exact sparsity, scopes, masks through training, sizes."""

from __future__ import annotations

import json
import math

import pytest
import torch

import nasprune
from nasprune.errors import NaspruneError
from nasprune.metrics import count_macs, layer_macs, model_size_mb
from nasprune.pruning.masks import MASK
from nasprune.pruning.unstructured import threshold

EXAMPLE = torch.randn(1, 1, 8, 8)


def digitscnn():
    return nasprune.create_model("digitscnn", in_channels=1)


def zeros(w: torch.Tensor) -> int:
    return int(w.numel() - torch.count_nonzero(w))


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.75, 0.95])
def test_global_sparsity_is_exact(sparsity):
    model = digitscnn()
    report = threshold(model, sparsity=sparsity)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    total = sum(m.weight.numel() for m in convs)
    assert report.weights == total
    assert abs(sum(zeros(m.weight) for m in convs) - round(sparsity * total)) <= 1
    assert report.sparsity == pytest.approx(sparsity, abs=1.5 / total)
    # One cut: everything kept is at least as large as everything removed.
    if sparsity > 0:
        kept = torch.cat([m.weight.detach()[m.weight != 0].abs() for m in convs])
        assert float(kept.min()) >= report.threshold


def test_layer_scope_prunes_every_layer_equally_and_global_does_not():
    layer_model, global_model = digitscnn(), digitscnn()
    global_model.load_state_dict(layer_model.state_dict())
    per_layer = threshold(layer_model, sparsity=0.6, scope="layer")
    for name, stats in per_layer.layers.items():
        w = layer_model.get_submodule(name).weight
        assert zeros(w) == round(0.6 * w.numel()) == stats.zeros
    assert per_layer.threshold is None
    assert len({s.threshold for s in per_layer.layers.values()}) == len(per_layer.layers)

    glob = threshold(global_model, sparsity=0.6)
    rates = {n: s.sparsity for n, s in glob.layers.items()}
    # Kaiming-style init gives the 9-input first conv larger weights than the 576-input
    # conv, so one global cut spares it: the two scopes really differ.
    assert rates["features.0"] < 0.6 < rates["features.10"]
    assert glob.sparsity == pytest.approx(0.6, abs=1e-4)
    assert len({s.threshold for s in glob.layers.values()}) == 1


def test_threshold_value_zeroes_exactly_the_small_weights():
    model = digitscnn()
    before = {n: m.weight.detach().clone() for n, m in model.named_modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    t = 0.05
    report = threshold(model, threshold=t)
    assert report.threshold == t
    for name, w0 in before.items():
        w = model.get_submodule(name).weight
        small = w0.abs() < t
        assert torch.equal(w == 0, small)
        assert report.layers[name].zeros == int(small.sum())


def test_layer_threshold_is_in_units_of_each_layers_std():
    model = digitscnn()
    w0 = model.features[3].weight.detach().clone()
    threshold(model, threshold=0.5, scope="layer")
    cut = 0.5 * float(w0.std())
    assert torch.equal(model.features[3].weight == 0, w0.abs() < cut)


def test_layers_argument_restricts_pruning_and_keeps_classifier_dense():
    model = digitscnn()
    report = threshold(model, sparsity=0.5, layers=["features.3", "features.10"])
    assert set(report.layers) == {"features.3", "features.10"}
    assert zeros(model.classifier[1].weight) == 0
    assert not hasattr(model.classifier[1], MASK)


def test_masks_hold_through_adam_training(digits):
    model = digitscnn()
    threshold(model, sparsity=0.8)
    pruned = {n: (m.weight == 0).clone() for n, m in model.named_modules() if hasattr(m, MASK)}
    before = {n: model.get_submodule(n).weight.detach().clone() for n in pruned}
    nasprune.fit(model, digits, epochs=1, optimizer="adam", progress=False)
    for name, was_zero in pruned.items():
        w = model.get_submodule(name).weight
        assert torch.all(w[was_zero] == 0), name
        assert not torch.equal(w, before[name]), "the kept weights must still train"


def test_sizes_and_macs_follow_the_formulas():
    model = digitscnn()
    report = threshold(model, sparsity=0.8, example_inputs=EXAMPLE)
    assert report.sparse_size_mb < report.dense_size_mb == model_size_mb(model)
    # CSR: 4-byte value + 4-byte column per non-zero, (rows + 1) 4-byte row pointers.
    expected = 0
    for p in model.parameters():
        if p.dim() >= 2:
            expected += 8 * int(torch.count_nonzero(p)) + 4 * (p.shape[0] + 1)
        else:
            expected += 4 * p.numel()
    for name, b in model.named_buffers():
        if not name.endswith(MASK):
            expected += b.numel() * (4 if b.is_floating_point() else b.element_size())
    assert report.sparse_size_mb == pytest.approx(expected / 2**20, rel=1e-12)

    per_layer = layer_macs(model, EXAMPLE)
    sparse = sum(per_layer[n] * (1 - s.sparsity) for n, s in report.layers.items())
    assert report.dense_macs == count_macs(model, EXAMPLE) == sum(per_layer.values())
    assert abs(report.sparse_macs - sparse) <= 1
    assert report.sparse_macs < 0.4 * report.dense_macs


def test_repeated_calls_only_add_zeros_and_record_the_method():
    model = digitscnn()
    threshold(model, sparsity=0.5)
    first = {n: (m.weight == 0).clone() for n, m in model.named_modules() if hasattr(m, MASK)}
    report = threshold(model, sparsity=0.2)  # lower: nothing comes back
    for name, was_zero in first.items():
        assert torch.all(model.get_submodule(name).weight[was_zero] == 0)
    assert report.sparsity == pytest.approx(0.5, abs=1e-4)
    report = threshold(model, sparsity=0.7, scope="layer")
    assert report.sparsity == pytest.approx(0.7, abs=1e-3)
    assert model.nasprune_pruning["method"] == "threshold"
    assert model.nasprune_pruning["scope"] == "layer"
    text = json.dumps(report.to_dict())
    assert json.loads(text)["layers"]["features.3"]["sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert "overall" in str(report)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one"),
        ({"sparsity": 0.5, "threshold": 0.1}, "exactly one"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.1}, "sparsity"),
        ({"sparsity": True}, "sparsity"),
        ({"sparsity": "0.5"}, "sparsity"),
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": math.inf}, "threshold"),
        ({"threshold": math.nan}, "threshold"),
        ({"sparsity": 0.5, "scope": "channel"}, "scope"),
        ({"sparsity": 0.5, "layers": ["features.99"]}, "features.99"),
        ({"sparsity": 0.5, "layers": ["features.1"]}, "BatchNorm2d"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    model = digitscnn()
    with pytest.raises(NaspruneError, match=message):
        threshold(model, **kwargs)
    assert not any(hasattr(m, MASK) for m in model.modules())


def test_model_without_prunable_layers_is_rejected():
    with pytest.raises(NaspruneError, match="no conv or linear"):
        threshold(torch.nn.Sequential(torch.nn.ReLU()), sparsity=0.5)


def test_save_load_keeps_the_masks(tmp_path, digits):
    model = digitscnn()
    threshold(model, sparsity=0.6)
    nasprune.save(model, tmp_path / "ckpt")
    loaded = nasprune.load(tmp_path / "ckpt")
    assert loaded.nasprune_pruning["method"] == "threshold"
    for name, m in model.named_modules():
        if hasattr(m, MASK):
            assert torch.equal(getattr(loaded.get_submodule(name), MASK), getattr(m, MASK))
    # The restored masks still hold through training.
    nasprune.fit(loaded, digits, epochs=1, optimizer="adam", max_steps=3, progress=False)
    assert torch.equal(loaded.features[3].weight == 0, model.features[3].weight == 0)
