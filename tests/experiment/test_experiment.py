"""The experiment runner: table numbers match the saved models, resume, failures, config."""

from __future__ import annotations

import csv
import json
import os
import stat

import pytest
import torch

import nasprune
from nasprune.errors import NaspruneError
from nasprune.experiment import METHODS, Pruned, register_method
from nasprune.experiment.config import find_config, load_experiment_config

if "test-nan-weights" not in METHODS:

    @register_method("test-nan-weights")
    def _nan_weights(ctx) -> Pruned:
        """A broken method: the model it returns has NaN weights."""
        m = ctx.prune(0.3)
        with torch.no_grad():
            next(m.parameters()).fill_(float("nan"))
        return Pruned(m)


def small_config(**extra) -> dict:
    cfg = {
        "name": "test-experiment",
        "baseline": {"epochs": 2},
        "finetune": {"epochs": 1, "bn_batches": 4},
        "search": {"trials": 3, "val_size": 200, "bn_batches": 4},
        "latency": {"batch": 8, "warmup": 1, "repeats": 2, "rounds": 2},
        "threads": 1,
        "methods": ["unpruned", "threshold", "uniform", "nas:random",
                    {"method": "test-nan-weights", "name": "broken"}],
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    result = nasprune.experiment(small_config(), out, progress=False, report=False)
    return out, result


def test_table_matches_saved_models(run, digits):
    from nasprune.metrics import count_macs, sparse_macs

    out, result = run
    ok = [r for r in result.rows if r["status"] == "ok"]
    assert [r["method"] for r in ok] == ["unpruned", "threshold", "uniform", "nas:random"]
    base = result.baseline["metrics"]
    example = digits.example_input(1)
    umask = os.umask(0)
    os.umask(umask)
    for row in ok:
        # committed method directories have mkdir's mode, not the 0700 of their temp dir
        assert stat.S_IMODE((out / "methods" / row["dir"]).stat().st_mode) == 0o777 & ~umask
        model = nasprune.load(out / "methods" / row["dir"] / "model")
        ev = nasprune.evaluate(model, digits, split="test")
        assert ev["top1"] == row["top1"], row["method"]  # exact: same data, same weights
        assert ev["f1"] == pytest.approx(row["f1"], abs=1e-12)
        assert count_macs(model, example) == row["macs"]
        assert row["delta_top1_pp"] == pytest.approx(100 * (row["top1"] - base["top1"]))
        assert row["flops"] == 2 * row["macs"]
        if row["method"] in ("uniform", "nas:random"):  # structured: dense MACs at the budget
            assert 0.4 <= row["macs"] / base["macs"] <= 0.5
            assert row["params"] < base["params"]
        if row["method"] == "threshold":  # unstructured: sparse MACs at the budget
            assert row["macs"] == base["macs"]
            assert sparse_macs(model, example) == row["sparse_macs"]
            assert 0.45 <= row["sparse_macs"] / base["macs"] <= 0.5
            assert row["sparse_size_mb"] < row["size_mb"]
        assert row["latency_b1_ms"] > 0 and row["latency_bN_ms"] > 0
        assert row["speedup_b1"] > 0
    assert result.row("unpruned")["top1"] == base["top1"]
    assert result.row("unpruned")["speedup_b1"] == 1.0
    assert result.row("uniform")["finetune_seconds"] > 0
    assert result.row("nas:random")["search_seconds"] > 0

    doc = json.loads((out / "results.json").read_text())
    assert [r["top1"] for r in doc["rows"]] == [r["top1"] for r in result.rows]
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == [r["method"] for r in result.rows]
    assert float(table[2]["top1"]) == result.row("uniform")["top1"]
    md = (out / "results.md").read_text()
    assert f"| uniform | {100 * result.row('uniform')['top1']:.2f} |" in md
    search = json.loads((out / "methods" / "nas-random" / "search.json").read_text())
    assert len(search["candidates"]) == 3


def test_failed_method_is_recorded_and_others_finish(run):
    out, result = run
    row = result.row("broken")
    assert row["status"] == "failed"
    assert "non-finite" in row["error"]
    assert result.failed == ["broken"]
    assert (out / "methods" / "broken" / "traceback.txt").is_file()
    assert not (out / "methods" / "broken" / "model").exists()
    md = (out / "results.md").read_text()
    assert "| broken | failed |" in md and "non-finite" in md


def test_resume_skips_finished_methods(run):
    out, first = run
    methods = out / "methods"
    stamps = {d.name: (d / "result.json").stat().st_mtime_ns for d in methods.iterdir()}
    baseline_stamp = (out / "baseline" / "model" / "spec.json").stat().st_mtime_ns
    import shutil

    shutil.rmtree(methods / "uniform")
    again = nasprune.experiment(small_config(), out, progress=False, report=False)
    # Only the deleted method and the failed one (failures are retried) ran again.
    assert sorted(again.computed) == ["broken", "uniform"]
    assert sorted(again.skipped) == ["nas-random", "threshold", "unpruned"]
    for name in again.skipped:
        assert (methods / name / "result.json").stat().st_mtime_ns == stamps[name]
    assert (out / "baseline" / "model" / "spec.json").stat().st_mtime_ns == baseline_stamp
    assert again.row("uniform")["macs"] == first.row("uniform")["macs"]
    assert again.row("uniform")["top1"] == first.row("uniform")["top1"]  # seeded: same model
    assert again.row("threshold")["top1"] == first.row("threshold")["top1"]

    # A changed setting invalidates exactly the results that depend on it.
    third = nasprune.experiment(small_config(search={"trials": 4, "val_size": 200,
                                                     "bn_batches": 4}),
                                out, progress=False, report=False)
    assert sorted(third.computed) == ["broken", "nas-random"]
    assert len(json.loads((methods / "nas-random" / "search.json").read_text())
               ["candidates"]) == 4


def test_config_errors_name_the_problem():
    with pytest.raises(NaspruneError, match="did you mean 'budget'"):
        load_experiment_config({"budgte": 0.5})
    with pytest.raises(NaspruneError, match="did you mean 'uniform'"):
        load_experiment_config({"methods": ["unifrom"]})
    with pytest.raises(NaspruneError, match="did you mean 'evolution'"):
        load_experiment_config({"methods": ["nas:evolutoin"]})
    with pytest.raises(NaspruneError, match="did you mean 'trials'"):
        load_experiment_config({"methods": [{"method": "nas:random", "trails": 3}]})
    with pytest.raises(NaspruneError, match="share the name"):
        load_experiment_config({"methods": ["uniform", "uniform"]})
    with pytest.raises(NaspruneError, match="needs a search strategy"):
        load_experiment_config({"methods": ["nas"]})
    with pytest.raises(NaspruneError, match="budget must be"):
        load_experiment_config({"budget": 1.5})
    with pytest.raises(NaspruneError, match="does not exist"):
        find_config("no-such-config")


def test_per_method_options_override_the_section():
    cfg = load_experiment_config({"search": {"trials": 9}, "methods": [
        "nas:random", {"method": "nas:random", "name": "random-long", "trials": 30}]})
    from nasprune.experiment.config import resolve_methods

    specs = resolve_methods(cfg)
    assert [(s.name, s.settings.trials) for s in specs] == [("nas:random", 9),
                                                            ("random-long", 30)]
    assert [s.slug for s in specs] == ["nas-random", "random-long"]


def test_bundled_example_config_by_name():
    path = find_config("example-digits")
    assert path.name == "example-digits.yaml" and path.is_file()
    cfg = load_experiment_config("example-digits", {"finetune.epochs": 2})
    assert cfg.budget == 0.5 and cfg.data == "digits" and cfg.model == "digitscnn"
    assert cfg.finetune.epochs == 2  # overrides win over the file
    for m in ("unpruned", "threshold", "sensitivity", "uniform", "global", "slimming",
              "layer", "nas:evolution", "nas:rl"):
        assert m in cfg.methods


def test_cli_experiment_errors_are_one_line(capsys, tmp_path):
    from nasprune.cli import main

    assert main(["experiment", "--config", "no-such-config", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment:\n  methods: [uniform, nas:gradient]\n")
    assert main(["experiment", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "unknown search strategy 'gradient'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing written for a bad config
    assert main(["experiment", "--config", str(bad), "--methods", "unpruned", "--checkpoint",
                 str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_runs_an_experiment_flags_over_yaml(capsys, tmp_path):
    from nasprune.cli import main

    cfg = tmp_path / "exp.yaml"
    cfg.write_text("experiment:\n  name: cli\n  baseline: {epochs: 5}\n  threads: 1\n"
                   "  latency: {batch: 4, repeats: 1, rounds: 1}\n"
                   "  methods: [unpruned, uniform]\n")
    out = tmp_path / "run"
    code = main(["experiment", "--config", str(cfg), "--out", str(out), "--quiet",
                 "--baseline-epochs", "1", "--epochs", "0",
                 "--methods", "unpruned,uniform,test-nan-weights", "--budget", "0.6"])
    assert code == 1  # a method failed: recorded in the table, the run still completes
    printed = capsys.readouterr().out
    assert "| test-nan-weights | failed |" in printed and "| uniform |" in printed
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["baseline"]["epochs"] == 1 and doc["config"]["budget"] == 0.6
    assert len(json.loads((out / "baseline" / "baseline.json").read_text())["history"]) == 1
    uniform = next(r for r in doc["rows"] if r["method"] == "uniform")
    assert 0.5 < uniform["macs_fraction"] <= 0.6 and uniform["finetune_seconds"] == 0
    assert (out / "report.html").is_file()


def test_a_nas_method_can_search_in_rungs(run, tmp_path):
    """``rungs`` in a method entry: its search scores in rungs (losers stopped early, never
    picked), beside a plain entry of the same strategy."""
    import shutil

    from nasprune.experiment.config import load_experiment_config, resolve_methods

    out, _ = run
    shutil.copytree(out, tmp_path / "exp")
    cfg = small_config(methods=["nas:random", {"method": "nas:random", "name": "in-rungs",
                                               "rungs": "100:0,200:3", "trials": 6}])
    result = nasprune.experiment(cfg, tmp_path / "exp", progress=False, report=False)
    assert [r["status"] for r in result.rows] == ["ok", "ok"]
    assert "in-rungs" in result.computed
    search = json.loads((tmp_path / "exp" / "methods" / "in-rungs" / "search.json")
                        .read_text())
    # Six trials: two stopped at the first rung (PRUNED, never picked), four at the top.
    assert search["stopped"] >= 1 and search["stopped"] + search["trials"] == 6
    assert {c["rung"] for c in search["candidates"]} == {1}
    assert search["best"]["rung"] == 1 and len(search["best"]["rung_scores"]) == 2
    with pytest.raises(NaspruneError, match="rungs"):
        load_experiment_config(small_config(search={"rungs": "100:0,50"}))
    specs = resolve_methods(load_experiment_config(cfg))
    assert specs[1].settings.rungs == "100:0,200:3" and specs[0].settings.rungs == "auto"


def test_a_nas_method_can_ask_for_a_speedup(run, tmp_path, monkeypatch):
    """``speedup`` in a method entry: the search also holds that speed-up on the
    experiment's latency runtime, at widths measured there, and verifies the delivery."""
    import shutil

    from nasprune.checkpoint import load
    from nasprune.metrics.runtime import Runtime
    from nasprune.search.group_widths import measured_steps

    monkeypatch.setenv("NASPRUNE_CACHE_DIR", str(tmp_path / "cache"))  # not the user's
    out, _ = run
    shutil.copytree(out, tmp_path / "exp")
    cfg = small_config(methods=[{"method": "nas:random", "name": "faster", "speedup": 1.05}])
    result = nasprune.experiment(cfg, tmp_path / "exp", progress=False, report=False)
    assert [r["status"] for r in result.rows] == ["ok"]
    method_dir = tmp_path / "exp" / "methods" / "faster"
    search = json.loads((method_dir / "search.json").read_text())
    assert search["budget"] == {"macs": 0.5, "params": None, "latency_ms": None,
                                "speedup": 1.05}
    info = json.loads((method_dir / "result.json").read_text())["info"]
    delivery = info["delivery"]
    assert delivery["target_speedup"] == 1.05 and delivery["runtime"].startswith("torch (cpu, 1")
    assert delivery["predicted_speedup"] >= 1.05 * 0.99 and delivery["measured_speedup"] > 0
    # The widths are the steps measured on that runtime (cached), and the saved model has them.
    base = load(out / "baseline" / "model")
    steps, _ = measured_steps(base, torch.zeros(1, 1, 8, 8), Runtime("torch", threads=1))
    assert info["round_to"] == steps
    assert load(method_dir / "model").nasprune_pruning["round_to"] == steps
    with pytest.raises(NaspruneError, match="speedup"):
        load_experiment_config(small_config(methods=[{"method": "nas:random",
                                                      "speedup": 0.5}]))
