"""Runtimes: torch and onnxruntime sessions compute the model; interleaved comparison; errors."""

from __future__ import annotations

import sys

import pytest
import torch

import nasprune
from nasprune.errors import NaspruneError
from nasprune.metrics.runtime import Runtime, compare_latency


def _digits_cnn() -> tuple[torch.nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    return nasprune.create_model("digitscnn", in_channels=1).eval(), (1, 8, 8)


@pytest.mark.parametrize("name", ["torch", "onnxruntime"])
def test_a_session_computes_the_models_output(name) -> None:
    if name == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the onnxruntime extra is not installed")
    model, shape = _digits_cnn()
    torch.manual_seed(1)  # the session draws its fixed batch from torch's generator
    got = Runtime(name, batch_size=3).session(model, shape)()
    got = torch.as_tensor(got[0] if isinstance(got, list) else got)
    torch.manual_seed(1)
    with torch.no_grad():
        want = model(torch.randn(3, *shape))
    assert got.shape == (3, 10)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


@pytest.mark.timing
def test_compare_latency_sees_a_network_doing_four_times_the_work() -> None:
    """Speed-ups are ratios of interleaved medians: load slows both networks alike."""
    model, shape = _digits_cnn()
    conv = torch.nn.Conv2d(16, 64, 3, padding=1)
    big = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), conv,
                              torch.nn.Conv2d(64, 64, 3, padding=1)).eval()
    small = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1),
                                torch.nn.Conv2d(16, 32, 3, padding=1),
                                torch.nn.Conv2d(32, 16, 3, padding=1)).eval()
    found = compare_latency([big, small, big], (1, 24, 24), Runtime("torch"), rounds=5,
                            repeats=10)
    assert found[0]["speedup"] == 1.0 and found[0]["min_speedup"] == 1.0
    for f in found:
        assert 0 < f["min_ms"] <= f["median_ms"] <= f["p90_ms"]
    # small has 1/4.5 of big's MACs: clearly faster (>1.8x), the twin of big about 1x.
    assert found[1]["min_speedup"] > 1.8 and found[1]["speedup"] > 1.3, found
    assert 0.75 < found[2]["min_speedup"] < 1.33, found


@pytest.mark.parametrize("kw, match", [
    ({"name": "tensorrt"}, "unknown runtime 'tensorrt': choose from torch, onnxruntime"),
    ({"threads": 0}, "runtime threads must be a positive integer, got 0"),
    ({"batch_size": 2.5}, "runtime batch_size must be a positive integer"),
    ({"device": "tpu"}, "runtime device must be 'cpu' or 'cuda'"),
])
def test_bad_runtimes_are_user_errors(kw, match) -> None:
    with pytest.raises(NaspruneError, match=match):
        Runtime(**kw)


def test_missing_onnxruntime_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(NaspruneError, match=r"needs the onnxruntime package, which is not "
                       r"installed: pip install 'nasprune\[onnxruntime\]'"):
        Runtime("onnxruntime")


def test_missing_onnxruntime_on_the_command_line(monkeypatch, tmp_path, capsys) -> None:
    from nasprune.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "s.json"
    code = main(["search", "--model", "digitscnn", "--data", "digits", "--trials", "1",
                 "--target-speedup", "1.2", "--runtime", "onnxruntime", "--quiet",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: runtime 'onnxruntime' needs the onnxruntime")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_runtime_key_tells_runtimes_apart() -> None:
    a, b = Runtime("torch").key(), Runtime("torch", threads=2).key()
    c = Runtime("torch", batch_size=64).key()
    assert len({str(sorted(k.items())) for k in (a, b, c)}) == 3
    assert a["version"] == torch.__version__ and a["provider"] == "torch-cpu"
