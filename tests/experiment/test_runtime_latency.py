"""Experiment latency on ONNX Runtime (``latency.runtime: onnxruntime``): same record shape."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import nasprune
from nasprune.experiment._fingerprint import shared_settings
from nasprune.experiment._measure import latency
from nasprune.experiment.config import ExperimentConfig


def test_experiment_latency_on_onnxruntime(digits) -> None:
    pytest.importorskip("onnxruntime", reason="the onnxruntime extra is not installed")
    torch.manual_seed(0)
    model = nasprune.create_model("digitscnn", in_channels=1).eval()
    pruned = nasprune.prune(model, digits.example_input(), 0.5)
    cfg = ExperimentConfig()
    cfg = dataclasses.replace(cfg, latency=dataclasses.replace(
        cfg.latency, runtime="onnxruntime", batch=4, rounds=3, repeats=5))
    base, small = latency([model, pruned], digits.input_shape, cfg, torch.device("cpu"))
    for rec in (base, small):
        assert set(rec) == {"1", "4"}
        for b, entry in rec.items():
            assert entry["runtime"] == f"onnxruntime (cpu, 1 thread, batch {b})"
            assert len(entry["round_medians_ms"]) == 3
            assert 0 < entry["min_ms"] <= entry["median_ms"]
    # The default runtime leaves the fingerprint of earlier runs unchanged; another changes it.
    assert "runtime" not in shared_settings(ExperimentConfig())["latency"]
    assert shared_settings(cfg)["latency"]["runtime"] == "onnxruntime"
