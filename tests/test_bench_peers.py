"""bench/peers.py on digits: Torch-Pruning's pruners at the budget, the table, the file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from nasprune.errors import NaspruneError

BENCH = Path(__file__).resolve().parents[1] / "bench" / "peers.py"


def _load_peers():
    name = "nasprune_bench_peers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def peers():
    return _load_peers()


@pytest.fixture(scope="module")
def finished(peers, tmp_path_factory):
    """One tiny peers run on digits: baseline, two Torch-Pruning methods, nasprune uniform."""
    tmp = tmp_path_factory.mktemp("peers")
    s = peers.settings_from(
        "cpu", model="digitscnn", data="digits", baseline_epochs=3, finetune_epochs=1,
        train_subset=600, trials=2, val_size=100, bn_batches=2, latency_warmup=0,
        latency_repeats=1,
        methods=["unpruned", "tp-uniform", "tp-global", "tp-isomorphic", "uniform",
                 "nas:random"],
        runs=str(tmp / "runs"), out=str(tmp / "out"))
    bench_md = tmp / "BENCHMARKS.md"
    bench_md.write_text("# Benchmarks\n\nEarlier text stays.\n", encoding="utf-8")
    record = peers.run(s, "python bench/peers.py --test", append=bench_md, progress=False)
    return s, record, bench_md


def test_torch_pruning_meets_the_budget_and_is_measured(peers, finished, digits):
    from nasprune.checkpoint import load
    from nasprune.metrics import count_macs, evaluate

    s, record, _ = finished
    rows = {r["method"]: r for r in record["rows"]}
    assert set(rows) == {"unpruned", "tp-uniform", "tp-global", "tp-isomorphic", "uniform",
                         "nas:random"}
    assert record["missing"] == []
    base_macs = rows["unpruned"]["macs"]
    x = digits.example_input(1)
    for name in ("tp-uniform", "tp-global", "tp-isomorphic", "uniform"):
        r = rows[name]
        assert 0.0 <= r["top1"] <= 1.0
        # digitscnn's narrow layers make the steps of a uniform ratio ~3 % of the MACs.
        assert abs(r["macs_fraction"] / s.budget - 1.0) <= 0.04, (name, r["macs_fraction"])
        assert r["macs_fraction"] <= s.budget * (1 + peers.MAC_TOLERANCE)
        assert r["finetune_seconds"] > 0 and r["search_seconds"] > 0
        lat = r["latency"]["cpu"]
        assert lat["1"]["median_ms"] > 0 and lat["128"]["median_ms"] > 0
        # The reported numbers are those of the saved model.
        model = load(s.out_dir / "experiment" / "methods" / name / "model")
        assert count_macs(model, x) == r["macs"] < base_macs
        assert model(x).shape == (1, 10)  # the classifier was left alone
    tp = rows["tp-uniform"]
    model = load(s.out_dir / "experiment" / "methods" / "tp-uniform" / "model")
    assert evaluate(model, digits, split="test")["top1"] == pytest.approx(tp["top1"], abs=1e-9)
    for name in ("tp-uniform", "tp-global", "tp-isomorphic"):
        info = rows[name]["info"]
        assert info["pruner"] == "tp.pruner.MetaPruner"
        assert info["global_pruning"] is (name != "tp-uniform")
        assert info["isomorphic"] is (name == "tp-isomorphic")
        assert 0.0 < info["pruning_ratio"] < 0.95
        assert info["macs"] == rows[name]["macs"] and info["tp_count_ops"] > 0
    assert rows["unpruned"]["finetune_seconds"] == 0.0
    # The proxy column re-scores every pruned network with the searches' own evaluator:
    # for a searched method it is exactly the score its search recorded.
    assert rows["nas:random"]["proxy"] == rows["nas:random"]["info"]["proxy_score"]
    for r in rows.values():
        assert 0.0 <= r["proxy"] <= 1.0
    assert rows["unpruned"]["proxy"] >= max(r["proxy"] for r in rows.values()) - 0.05


def test_tables_json_and_benchmarks_file(peers, finished):
    s, record, bench_md = finished
    doc = json.loads((s.out_dir / "peers.json").read_text(encoding="utf-8"))
    assert doc["environment"]["versions"]["torch-pruning"]
    assert [r["method"] for r in doc["rows"]] == [r["method"] for r in record["rows"]]
    md = (s.out_dir / "peers.md").read_text(encoding="utf-8")
    tp = next(r for r in record["rows"] if r["method"] == "tp-uniform")
    assert f"| `tp-uniform` | {100 * tp['top1']:.2f} |" in md
    assert "Status: complete" in md and "torch-pruning" in md
    assert any("Torch-Pruning uniform L1" in line for line in record["comparisons"])
    text = bench_md.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nEarlier text stays.") and md.strip() in text
    # A second write replaces this protocol's block instead of adding another.
    peers.update_benchmarks(bench_md, "cpu", "new table")
    text = bench_md.read_text(encoding="utf-8")
    assert text.count("peers:cpu:begin") == 1 and "new table" in text and md.strip() not in text


def test_report_only_reads_back_and_labels_missing_methods(peers, finished):
    s, record, _ = finished
    import dataclasses

    results = sorted((s.out_dir / "experiment" / "methods").glob("*/result.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    # Changed settings give every method a new fingerprint: a report must still only
    # render what is there, never recompute it.
    more = dataclasses.replace(s, methods=[*s.methods, "global"], finetune_lr=0.02)
    again = peers.run(more, "python bench/peers.py --report-only", report_only=True,
                      progress=False)
    assert again["missing"] == ["global"]
    assert [r["top1"] for r in again["rows"]] == [r["top1"] for r in record["rows"]]
    assert sorted((s.out_dir / "experiment" / "methods").glob("*/result.json")) == results
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert "**PARTIAL**" in (s.out_dir / "peers.md").read_text(encoding="utf-8")


def test_combine_puts_runs_side_by_side(peers, finished, tmp_path, capsys):
    s, record, _ = finished
    table = peers.combine([s.out_dir, s.out_dir])
    rows = {r["method"]: r for r in record["rows"]}
    tp, uni = rows["tp-uniform"], rows["uniform"]
    t = 100 * tp["top1"]
    # Two identical runs: spread 0, paired difference to tp-global exact, and "ahead" only
    # where strictly better.
    d = 100 * (uni["top1"] - rows["tp-global"]["top1"])
    ahead = 2 if d > 0 else 0
    assert f"| `tp-uniform` | {t:.2f} | {t:.2f} | {t:.2f} ± 0.00 | " in table
    assert f"| `uniform` | {100 * uni['top1']:.2f} | {100 * uni['top1']:.2f} | " \
           f"{100 * uni['top1']:.2f} ± 0.00 | {d:+.2f} ± 0.00 ({ahead}/2) |" in table
    assert "| `tp-global` |" in table and "vs `fastnas`" not in table  # no FastNAS rows
    assert table.count("\n") == len(record["rows"]) + 1
    assert peers.main(["--combine", str(tmp_path)]) == 2
    assert "holds no peers.json" in capsys.readouterr().err


def test_paired_differences_count_the_seeds_a_method_led():
    sys.path.insert(0, str(BENCH.parent))
    from peers_combine import combine_runs

    runs = [{"a": {"top1": 0.80, "info": {"search_cpu_seconds": 10.0}},
             "tp-global": {"top1": 0.78}},
            {"a": {"top1": 0.79, "info": {"search_cpu_seconds": 20.0}},
             "tp-global": {"top1": 0.80}},
            {"a": {"top1": 0.81, "info": {"search_cpu_seconds": 45.0}},
             "tp-global": {"top1": 0.78}}]
    table = combine_runs(runs, ["s0", "s1", "s2"])
    # Differences +2, -1, +3 pp: mean +1.33, sample std 2.08, ahead on 2 of 3.
    assert "| `a` | 80.00 | 79.00 | 81.00 | 80.00 ± 1.00 | +1.33 ± 2.08 (2/3) |" in table
    assert table.splitlines()[2].endswith("| — | 25 | — |")  # the search's mean CPU seconds
    assert "| `tp-global` | 78.00 | 80.00 | 78.00 | 78.67 ± 1.15 | — |" in table


def test_rungs_variant_is_a_row_of_its_own(peers, tmp_path):
    from nasprune.experiment.config import load_experiment_config, resolve_methods

    s = peers.settings_from("cpu", model="digitscnn", data="digits", rungs="100:0,300:5",
                            methods=["nas:evolution", "nas:evolution@rungs"])
    cfg = load_experiment_config(peers.experiment_config(s, tmp_path))
    specs = resolve_methods(cfg)
    assert [(p.name, p.strategy, p.settings.rungs) for p in specs] == [
        ("nas:evolution", "evolution", "auto"),
        ("nas:evolution@rungs", "evolution", "100:0,300:5")]


def test_tp_bisection_on_resnet20(peers):
    from nasprune import create_model
    from nasprune.metrics import count_macs

    model = create_model("resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    for global_pruning in (False, True):
        net, info = peers.tp_to_budget(model, x, 0.5, global_pruning)
        assert info["within_tolerance"], info
        assert count_macs(net, x) == info["macs"]
        assert abs(info["macs"] / (0.5 * count_macs(model, x)) - 1) <= 0.01


def test_user_errors(peers, tmp_path):
    with pytest.raises(NaspruneError, match="unknown protocol"):
        peers.settings_from("tpu")
    with pytest.raises(NaspruneError, match="budget"):
        peers.settings_from("cpu", budget=1.5)
    with pytest.raises(NaspruneError, match="no saved model"):
        peers.ensure_baseline(peers.settings_from("cpu", checkpoint=str(tmp_path)))
    assert peers.main(["--protocol", "cpu", "--budget", "0", "--quiet"]) == 2


def test_cuda_run_tables_add_cpu_latency(peers, finished):
    """What a CUDA run adds (CPU timings of every saved model), exercised on CPU."""
    import copy

    s, record, _ = finished
    rows = copy.deepcopy(record["rows"])
    shape = peers.input_shape_of(s, s.baseline_dir)
    assert shape == (1, 8, 8)
    for r in rows:
        r["latency"] = {"cuda": r["latency"]["cpu"]}
    peers.cpu_latency(s, rows, s.out_dir / "experiment", shape)
    for r in rows:
        assert r["latency"]["cpu"]["128"]["median_ms"] > 0
    table = peers.markdown_table(rows, "cuda")
    assert "CUDA b1 ms" in table and "CPU b128 ms" in table
    assert table.count("\n") == len(rows) + 1


def test_method_rows_with_rungs_or_a_speedup(peers):
    s = peers.settings_from("cpu", model="digitscnn", data="digits", budget=1.0,
                            latency_runtime="onnxruntime")
    assert peers._method_entry("nas:bayes@2x", s) == {"method": "nas:bayes",
                                                      "name": "nas:bayes@2x", "speedup": 2.0}
    assert peers._method_entry("nas:tpe@rungs", s)["rungs"] == s.rungs
    assert peers._method_entry("tp-global", s) == "tp-global"
    assert peers._method_entry("nas:bayes@2x@blocks", s) == {
        "method": "nas:bayes", "name": "nas:bayes@2x@blocks", "speedup": 2.0, "space": "blocks"}
    with pytest.raises(NaspruneError, match="nas:<strategy>@<X>x"):
        peers._method_entry("nas:bayes@fastx", s)
    cfg = peers.experiment_config(s, Path("ckpt"), ["nas:bayes@1.5x"])
    assert cfg["latency"]["runtime"] == "onnxruntime" and cfg["budget"] == 1.0
    assert cfg["methods"] == [{"method": "nas:bayes", "name": "nas:bayes@1.5x",
                               "speedup": 1.5}]
