"""`nasprune evaluate --latency --baseline DIR [--runtime R]`: measured speed-up beside MACs."""

from __future__ import annotations

import json

import pytest

import nasprune
from nasprune.cli import main
from nasprune.metrics import count_macs


@pytest.fixture(scope="module")
def pair(trained_narrow_digits_cnn, digits, tmp_path_factory):
    """The narrow digits CNN saved unpruned and pruned by half: (base dir, pruned dir)."""
    root = tmp_path_factory.mktemp("speedup")
    x = digits.example_input()
    base = nasprune.save(trained_narrow_digits_cnn, root / "base")
    pruned = nasprune.prune(trained_narrow_digits_cnn, x, 0.5)
    return base, nasprune.save(pruned, root / "pruned"), count_macs(
        trained_narrow_digits_cnn, x) / count_macs(pruned, x)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_evaluate_reports_measured_speedup_beside_macs_ratio(pair, tmp_path, capsys,
                                                             runtime) -> None:
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the onnxruntime extra is not installed")
    base, pruned, macs_ratio = pair
    out = tmp_path / "e.json"
    code = main(["evaluate", "--checkpoint", str(pruned), "--data", "digits", "--latency",
                 "--baseline", str(base), "--runtime", runtime, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    sp = json.loads(out.read_text())["speedup"]
    assert sp["runtime"] == f"{runtime} (cpu, 1 thread, batch 1)" and sp["batch"] == 1
    assert sp["macs_ratio"] == pytest.approx(macs_ratio) and macs_ratio > 1.5
    assert sp["speedup"] > 0 and 0 < sp["median_ms"] <= sp["p90_ms"]
    assert f"speed-up on {sp['runtime']}: {sp['speedup']:.2f}x measured" in printed
    assert f"MACs ratio {macs_ratio:.2f}x" in printed


def test_baseline_without_latency_is_a_user_error(pair, tmp_path, capsys) -> None:
    base, pruned, _ = pair
    out = tmp_path / "never.json"
    assert main(["evaluate", "--checkpoint", str(pruned), "--data", "digits", "--baseline",
                 str(base), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --baseline DIR and --runtime measure a speed-up")
    assert not out.exists()
