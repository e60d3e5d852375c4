"""Proxy (adaptive-BN proxy on validation data) and search(): studies, failures, resume."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import optuna
import pytest
import torch

import nasprune
from nasprune.errors import NaspruneError
from nasprune.metrics import count_macs, count_params
from nasprune.search import Budget, Proxy, check_proxy, search, spearman

FAST = {"bn_batches": 3, "val_size": 200, "progress": False}


class _NoTest:
    """The digits data set with its test split booby-trapped."""

    def __init__(self, data) -> None:
        self._data = data

    def __getattr__(self, name: str):
        if name == "test":
            raise AssertionError("the search touched the test split")
        return getattr(self._data, name)

    def split(self, name: str):
        if name == "test":
            raise AssertionError("the search touched the test split")
        return self._data.split(name)

    def loader(self, split, *args, **kw):
        if split == "test" or split is self._data.test:
            raise AssertionError("the search touched the test split")
        return self._data.loader(split, *args, **kw)


# --- evaluator -------------------------------------------------------------------------
def test_evaluator_scores_on_validation_only_and_is_deterministic(trained, digits,
                                                                  space) -> None:
    ev = Proxy(trained, _NoTest(digits), bn_batches=3, val_size=200, device="cpu")
    assert ev.val_count == 200
    ratios = space.prune_ratios(space.project(np.full(space.dim, 0.7), Budget(macs=0.5)))
    s1, s2 = ev.score(ratios), ev.score(ratios)
    assert 0.0 <= s1 <= 1.0 and s1 == s2
    # Unpruned: the proxy equals plain validation accuracy (up to BN re-estimation noise).
    plain = ev.accuracy(trained)
    full = ev.score(space.prune_ratios(np.ones(space.dim)))
    assert plain > 0.8 and abs(full - plain) < 0.05
    # Half the MACs costs accuracy; adaptive BN recovers much of it.
    assert s1 < plain + 1e-9
    assert trained.training is False  # the caller's model is untouched


def test_adaptive_bn_beats_stale_statistics(trained, digits, space) -> None:
    ratios = space.prune_ratios(space.project(np.full(space.dim, 0.5), Budget(macs=0.3)))
    with_bn = Proxy(trained, digits, bn_batches=5, val_size=269, device="cpu")
    without = Proxy(trained, digits, bn_batches=0, val_size=269, device="cpu")
    assert with_bn.score(ratios) > without.score(ratios)


def test_finetune_steps_change_the_score(trained, digits, space) -> None:
    ratios = space.prune_ratios(space.project(np.full(space.dim, 0.5), Budget(macs=0.25)))
    base = Proxy(trained, digits, bn_batches=3, val_size=200, device="cpu")
    tuned = Proxy(trained, digits, bn_batches=3, val_size=200, device="cpu",
                      finetune_steps=10)
    assert tuned.score(ratios) >= base.score(ratios) - 0.02
    assert tuned.score(ratios) == tuned.score(ratios)  # seeded: repeatable


@pytest.mark.parametrize("kw, match", [
    ({"bn_batches": -1}, "bn_batches must be an integer ≥ 0, got -1"),
    ({"val_size": 0}, "val_size must be an integer ≥ 1, got 0"),
    ({"finetune_steps": 1.5}, "finetune_steps must be an integer ≥ 0, got 1.5"),
    ({"finetune_lr": float("nan")}, "finetune_lr must be a positive number, got nan"),
])
def test_evaluator_rejects_bad_options(trained, digits, kw, match) -> None:
    with pytest.raises(NaspruneError, match=re.escape(match)):
        Proxy(trained, digits, device="cpu", **kw)


def test_check_proxy_reports_rank_correlation(trained, digits, space) -> None:
    ev = Proxy(trained, digits, bn_batches=3, val_size=200, device="cpu")
    rng = np.random.default_rng(0)
    # Six budgets from 8 % to unpruned: clearly different accuracies, which the proxy must
    # rank as fine-tuning does. Measured ρ (candidate seeds 0-5): 0.94-1.0; random proxy
    # scores reach ρ ≥ 0.8 on six candidates with probability < 4 %.
    cands = [space.prune_ratios(space.project(rng.uniform(0.1, 1, space.dim), Budget(macs=m)))
             for m in (0.08, 0.15, 0.3, 0.5, 0.7, 1.0)]
    out = check_proxy(ev, cands, finetune_epochs=0.5, batch_size=64)
    assert out["n"] == 6 and len(out["proxy"]) == len(out["finetuned"]) == 6
    assert out["spearman"] == pytest.approx(spearman(out["proxy"], out["finetuned"]))
    assert out["spearman"] >= 0.8, out
    assert all(0 <= v <= 1 for v in out["proxy"] + out["finetuned"])
    with pytest.raises(NaspruneError, match="at least 2"):
        check_proxy(ev, cands[:1])


def test_spearman_matches_definition() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 6, 5.5]) == pytest.approx(0.5)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


# --- search ----------------------------------------------------------------------------
def test_search_returns_best_within_budget_and_prunable(trained, digits) -> None:
    x = digits.example_input()
    result = search(trained, x, digits, strategy="random", target=Budget(macs=0.5), trials=5,
                    seed=0, **FAST)
    assert len(result.trials) == 5 and result.failed == 0
    assert result.best.score == max(c.score for c in result.trials)
    for c in result.trials:
        # Searched trials are projected to just under the budget; the warm start's
        # baselines fit it as their bisection left them.
        assert c.macs_fraction <= 0.5 and (c.warm_start or c.macs_fraction >= 0.99 * 0.5)
        assert c.seconds > 0
    assert [c.warm_start for c in result.trials] == ["uniform", "global", "tp-global", None,
                                                     None]
    pruned = nasprune.prune(trained, x, result.best.ratios)
    assert count_macs(pruned, x) == result.best.macs
    assert count_params(pruned) == result.best.params
    doc = result.to_dict()
    assert doc["ratios"] == result.best.ratios
    json.dumps(doc)  # JSON-ready
    t = result.study.trials[0]
    assert {"keep", "prune_ratios", "macs", "params", "seconds"} <= set(t.user_attrs)


def test_search_is_reproducible_with_a_seed(trained, digits) -> None:
    x = digits.example_input()
    runs = [search(trained, x, digits, strategy="evolution", trials=4, seed=3, population=2,
                   **FAST) for _ in range(2)]
    assert [c.keep for c in runs[0].trials] == [c.keep for c in runs[1].trials]
    assert [c.score for c in runs[0].trials] == [c.score for c in runs[1].trials]


def test_multi_objective_returns_a_pareto_front(trained, digits) -> None:
    result = search(trained, digits.example_input(), digits, strategy="tpe",
                    target=Budget(macs=0.6), trials=8, objective="multi", seed=0, **FAST)
    assert result.pareto and result.best in result.pareto
    for c in result.trials:
        assert c.macs_fraction <= 0.6 + 1e-12
        assert c.values[1] == pytest.approx(c.macs_fraction)
    for a in result.pareto:  # nothing in the front is dominated by any trial
        assert not any(b.score >= a.score and b.macs_fraction <= a.macs_fraction
                       and (b.score > a.score or b.macs_fraction < a.macs_fraction)
                       for b in result.trials)


class _Flaky(Proxy):
    """Raises on chosen calls: the search must record the failure and go on."""

    fail_on: set[int] = set()

    def score(self, prune_ratios):
        self.calls += 1
        if self.calls in self.fail_on:
            raise RuntimeError("simulated out-of-memory")
        return 0.5 + 0.01 * self.calls


def test_a_failing_trial_is_recorded_and_the_search_continues(trained, digits) -> None:
    ev = _Flaky(trained, digits, bn_batches=1, val_size=50, device="cpu")
    ev.fail_on = {2}
    result = search(trained, digits.example_input(), digits, strategy="random", trials=4,
                    evaluator=ev, progress=False)
    states = [t.state for t in result.study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    failed = [t for t in result.study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "simulated out-of-memory" in failed[0].user_attrs["error"]
    assert result.failed == 1


def test_persistent_failures_stop_with_the_error(trained, digits) -> None:
    ev = _Flaky(trained, digits, bn_batches=1, val_size=50, device="cpu")
    ev.fail_on = set(range(1, 100))
    with pytest.raises(NaspruneError, match="3 trials in a row failed.*simulated"):
        search(trained, digits.example_input(), digits, strategy="random", trials=4,
               evaluator=ev, progress=False, max_failures=3)


def test_sqlite_study_resumes_and_rejects_a_different_budget(trained, digits,
                                                              tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    x = digits.example_input()
    first = search(trained, x, digits, strategy="random", trials=3, storage=url, study="r",
                   **FAST)
    again = search(trained, x, digits, strategy="random", trials=5, storage=url, study="r",
                   **FAST)
    assert [c.number for c in again.trials] == [0, 1, 2, 3, 4]
    assert [c.keep for c in again.trials[:3]] == [c.keep for c in first.trials]
    # Resumed proposals are new, not a replay of the first call's.
    assert again.trials[3].keep != first.trials[0].keep
    done = search(trained, x, digits, strategy="random", trials=5, storage=url, study="r",
                  **FAST)
    assert len(done.trials) == 5  # target already reached: nothing runs
    with pytest.raises(NaspruneError, match="different budget"):
        search(trained, x, digits, strategy="random", trials=6, storage=url, study="r",
               target=Budget(macs=0.3), **FAST)
    with pytest.raises(NaspruneError, match="objective"):
        search(trained, x, digits, strategy="random", trials=6, storage=url, study="r",
               objective="multi", **FAST)


def test_infeasible_budget_fails_before_anything_runs(trained, digits, tmp_path) -> None:
    db = tmp_path / "never.db"
    with pytest.raises(NaspruneError, match="cannot be met"):
        search(trained, digits.example_input(), digits, target=Budget(macs=0.001), trials=3,
               storage=f"sqlite:///{db}", **FAST)
    assert not db.exists()


@pytest.mark.parametrize("kw, match", [
    ({"strategy": "evolutoin"}, "did you mean 'evolution'"),
    ({"trials": 0}, "trials must be a positive integer"),
    ({"objective": "pareto"}, "objective must be"),
    ({"storage": "redis://x"}, "unsupported storage"),
    ({"storage": "sqlite:////no/such/dir/x.db"}, "does not exist"),
    ({"population": 1}, "population"),
    ({"strategy": "tpe", "populaton": 3}, "unknown option"),
])
def test_bad_search_arguments_are_user_errors(trained, digits, kw, match) -> None:
    args = {"strategy": "evolution", "trials": 2, **FAST, **kw}
    with pytest.raises(NaspruneError, match=match):
        search(trained, digits.example_input(), digits, **args)


def test_cli_search_writes_ratios_that_prune_accepts(trained, digits, tmp_path, capsys) -> None:
    from nasprune.checkpoint import save
    from nasprune.cli import main

    ckpt = tmp_path / "base"
    save(trained, ckpt, meta={"data": "digits", "input_shape": [1, 8, 8]})
    out = tmp_path / "best.json"
    rc = main(["search", "--checkpoint", str(ckpt), "--data", "digits", "--strategy", "random",
               "--target-macs", "0.5", "--trials", "3", "--bn-batches", "2", "--val-size",
               "100", "--out", str(out), "--quiet"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert set(doc["ratios"]) == {"features.0", "features.3", "features.7", "features.10"}
    assert doc["best"]["macs_fraction"] <= 0.5  # 3 trials: the warm start's baselines
    assert doc["best"]["warm_start"] == doc["warm_start"]["best"]
    assert "best score" in capsys.readouterr().out
    rc = main(["prune", "--checkpoint", str(ckpt), "--ratios", str(out), "--out",
               str(tmp_path / "pruned")])
    assert rc == 0
    assert main(["search", "--model", "digitscnn", "--data", "digits", "--target-macs",
                 "0.0001", "--trials", "2", "--out", str(tmp_path / "x.json"),
                 "--quiet"]) == 2
    assert "cannot be met" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_demo_runs_search_prune_finetune(demo_run) -> None:
    rc, _, tmp_path = demo_run  # the one demo run of the suite (conftest)
    assert rc == 0
    results = json.loads((tmp_path / "results.json").read_text())
    base, pruned = results["rows"]
    assert pruned["method"] == "nas:evolution"
    assert pruned["macs"] <= 0.5 * base["macs"] and pruned["params"] < base["params"]
    assert pruned["top1"] >= 0.95 and pruned["top1"] >= base["top1"] - 0.03
    assert pruned["latency_ms"] > 0 and base["latency_ms"] > 0
    search_doc = json.loads((tmp_path / "search.json").read_text())
    assert search_doc["trials"] == 30 and set(search_doc["ratios"]) == {
        "features.0", "features.3", "features.7", "features.10"}
    model = nasprune.load(tmp_path / "pruned")
    assert count_macs(model, torch.randn(1, 1, 8, 8)) == pruned["macs"]
    data = nasprune.load_dataset("digits")
    assert nasprune.evaluate(model, data)["top1"] == pytest.approx(pruned["top1"])


def test_top_level_search_is_callable_after_the_package_is_imported(trained, digits) -> None:
    import nasprune.search as pkg  # noqa: F401  (makes nasprune.search the package)

    result = nasprune.search(trained, digits.example_input(), digits, strategy="random",
                             trials=1, **FAST)
    assert len(result.trials) == 1 and nasprune.Budget is Budget


def test_cli_search_from_config_with_proxy_check(trained, digits, tmp_path, capsys) -> None:
    from nasprune.checkpoint import save
    from nasprune.cli import main

    ckpt = tmp_path / "base"
    save(trained, ckpt, meta={"data": "digits", "seed": 0, "input_shape": [1, 8, 8]})
    cfg = tmp_path / "s.yaml"
    cfg.write_text("search:\n  strategy: evolution\n  strategy_options: {population: 2}\n"
                   "  trials: 4\n  bn_batches: 2\n  val_size: 100\n  target_params: 0.4\n")
    out = tmp_path / "s.json"
    rc = main(["search", "--config", str(cfg), "--checkpoint", str(ckpt), "--check-proxy", "3",
               "--check-proxy-epochs", "0.2", "--out", str(out), "--quiet",
               "--storage", f"sqlite:///{tmp_path / 's.db'}", "--study", "cfg"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["strategy"] == "evolution" and doc["trials"] == 4
    assert doc["budget"]["params"] == 0.4 and 0.396 <= doc["best"]["params_fraction"] <= 0.4
    assert doc["proxy_check"]["n"] == 3 and "Spearman" in capsys.readouterr().out
    assert (tmp_path / "s.config.yaml").exists()
    cfg.write_text("search:\n  stratgy: evolution\n")
    assert main(["search", "--config", str(cfg), "--checkpoint", str(ckpt), "--out",
                 str(tmp_path / "t.json"), "--quiet"]) == 2
    assert "did you mean 'strategy'" in capsys.readouterr().err
    assert main(["search", "--checkpoint", str(ckpt), "--option", "population",
                 "--out", str(tmp_path / "t.json"), "--quiet"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_search_at_a_latency_budget(trained, digits, space, tmp_path) -> None:
    from nasprune.search.latency import LatencyModel

    x = digits.example_input()
    lat = LatencyModel.for_space(space, trained, x, device="cpu", cache_dir=tmp_path,
                                 warmup=2, repeats=5)
    # Halfway to the fastest reachable: the tiny CNN's range depends on the load the table
    # was measured under, so a fixed fraction can be out of reach.
    full, fastest = lat.predict(space.channels), lat.predict(space.kept(space.lower))
    assert fastest < full
    limit = (full + fastest) / 2
    result = search(trained, x, digits, strategy="random", target=Budget(latency_ms=limit),
                    trials=3, latency_cache=tmp_path, device="cpu", **FAST)
    for c in result.trials:  # the cached table (same fingerprint) was used
        assert 0.97 * limit <= c.latency_ms <= limit
    assert len(list(tmp_path.glob("*.json"))) == 1
