"""The warm start: every study first evaluates the zero-search baselines at its budget.

On the trained digits CNN: the candidates fit the budget and are what the baselines would
prune (uniform: one ratio; global: ``prune(..., "global")``'s own ranking; tp-global:
Torch-Pruning's raw-mean L1 score), a search's trial list starts with them and its best is
at least each of them, ``warm_start=False`` / ``--no-warm-start`` removes them, and a
resumed study or racing workers never evaluate them twice.
"""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from nasprune.errors import NaspruneError
from nasprune.pruning import plan
from nasprune.search import Budget, Proxy, search
from nasprune.search import warm_start as warm
from nasprune.search.strategies.learned import completed_history, from_unit, seed_for

FAST = {"bn_batches": 3, "val_size": 200, "progress": False}
NAMES = ["uniform", "global", "tp-global"]


def test_uniform_candidate_is_the_smallest_ratio_that_fits(space) -> None:
    budget = Budget(macs=0.5)
    keep = warm.uniform_keep(space, budget)
    assert np.ptp(keep) == 0.0 and space.within(keep, budget)
    # One step less pruning is over the budget: the bisection found the boundary.
    assert not space.within(keep + 1e-9, budget)
    assert 0.45 < space.fractions(keep)[0] <= 0.5


def test_global_candidate_is_what_prune_global_removes(trained, digits, space) -> None:
    budget = Budget(macs=0.5)
    x = digits.example_input()
    scores = warm.channel_scores(trained, x, None, "l1", None, 0)
    keep = warm.ranking_keep(space, budget, scores["global"])
    assert space.within(keep, budget) and space.fractions(keep)[0] > 0.48
    removed = float(np.sum(space.channels - space.kept(keep)))
    plans = plan(trained, x, "global", global_target=removed / space.channels.sum())
    assert {p.group.name: p.group.channels - p.keep for p in plans} == {
        n: int(c - k) for n, c, k in zip(space.names, space.channels, space.kept(keep),
                                         strict=True)}
    # The groups lose different shares: a ranking, not a uniform ratio.
    assert np.ptp(keep) > 0.05


def test_tp_global_scores_raw_norms_averaged_over_the_group(trained, digits) -> None:
    scores = warm.channel_scores(trained, digits.example_input(), None, "l1", None, 0)
    w0, w3 = trained.features[0].weight.detach(), trained.features[3].weight.detach()
    raw = (w0.abs().sum((1, 2, 3)) + w3.abs().sum((0, 2, 3))).double() / 2
    assert torch.allclose(scores["tp-global"]["features.0"], raw / raw.mean())
    # nasprune's score normalises each layer first: a different ranking input.
    assert not torch.allclose(scores["global"]["features.0"], raw / raw.mean())


def test_search_starts_with_the_warm_start_and_never_ends_below_it(trained, digits,
                                                                   space) -> None:
    """The issue's acceptance: best proxy ≥ every warm-start candidate's proxy."""
    x, budget = digits.example_input(), Budget(macs=0.5)
    result = search(trained, x, digits, strategy="evolution", target=budget, trials=5,
                    seed=0, population=3, **FAST)
    names = [c.warm_start for c in result.trials]
    assert names == [*NAMES, None, None]
    warm_trials = result.trials[:3]
    assert all(result.best.score >= c.score for c in warm_trials)
    top = max(warm_trials, key=lambda c: c.score)
    assert (result.warm_start_best, result.warm_start_score) == (top.warm_start, top.score)
    assert result.improvement == pytest.approx(result.best.score - top.score)
    assert result.improvement >= 0
    # Evaluated as built, unprojected: the uniform trial is the uniform baseline's proxy.
    proxy = Proxy(trained, digits, bn_batches=3, val_size=200, device="cpu", seed=0)
    uniform = warm.uniform_keep(space, budget)
    assert warm_trials[0].keep == pytest.approx(list(uniform))
    assert warm_trials[0].score == proxy.score(space.prune_ratios(uniform))
    doc = result.to_dict()
    assert doc["warm_start"]["best"] == top.warm_start
    assert set(doc["warm_start"]["scores"]) == set(NAMES)
    json.dumps(doc)


def test_learned_samplers_learn_from_the_warm_start(trained, digits) -> None:
    """rl with warmup=3: the warm start fills its random warm-up, so trial 3 is learned."""
    result = search(trained, digits.example_input(), digits, strategy="rl", trials=4,
                    seed=0, warmup=3, **FAST)
    history = completed_history(result.study, result.space)
    assert list(history.numbers[:3]) == [0, 1, 2] and len(history) == 4
    sp = result.space
    random_draw = from_unit(np.random.default_rng(seed_for(0, 3)).random(sp.dim), sp.lower,
                            sp.upper)
    assert not np.allclose(sp.keep_from_params(result.study.trials[3].params), random_draw)


def test_no_warm_start_runs_only_the_strategy(trained, digits) -> None:
    result = search(trained, digits.example_input(), digits, strategy="random", trials=2,
                    seed=0, warm_start=False, **FAST)
    assert [c.warm_start for c in result.trials] == [None, None]
    assert result.warm_start_best is None and result.improvement is None
    assert result.to_dict()["warm_start"] is None
    with pytest.raises(NaspruneError, match="warm_start must be True or False"):
        search(trained, digits.example_input(), digits, trials=2, warm_start="no", **FAST)


def test_resumed_and_racing_studies_run_the_warm_start_once(trained, digits, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    x = digits.example_input()
    first = search(trained, x, digits, strategy="random", trials=2, storage=url, study="w",
                   seed=0, **FAST)
    assert [c.warm_start for c in first.trials] == NAMES[:2]
    stored = optuna.load_study(study_name="w", storage=url)
    assert len(stored.trials) == 2  # nothing left queued behind a short search
    again = search(trained, x, digits, strategy="random", trials=4, storage=url, study="w",
                   seed=0, **FAST)
    assert [c.warm_start for c in again.trials] == [*NAMES, None]

    # Two workers opening a fresh study at once both enqueue it: the copy is skipped.
    st = optuna.create_study(storage=url, study_name="race", direction="maximize")
    sp = again.space
    found = warm.candidates(sp, Budget(macs=0.5), trained, x)
    warm.enqueue(st, sp, found)
    warm.enqueue(st, sp, found)
    raced = search(trained, x, digits, strategy="random", trials=4, storage=url, study="race",
                   seed=0, **FAST)
    assert [c.warm_start for c in raced.trials] == [*NAMES, None]
    pruned = raced.study.get_trials(states=(TrialState.PRUNED,))
    assert sorted(t.user_attrs["warm_start"] for t in pruned) == sorted(NAMES)
    assert all("keep" not in t.user_attrs for t in pruned)  # skipped, never evaluated


def test_cli_no_warm_start_flag(trained, tmp_path, capsys) -> None:
    from nasprune.checkpoint import save
    from nasprune.cli import main

    ckpt = tmp_path / "base"
    save(trained, ckpt, meta={"data": "digits", "input_shape": [1, 8, 8]})
    common = ["search", "--checkpoint", str(ckpt), "--strategy", "random", "--trials", "3",
              "--bn-batches", "2", "--val-size", "100", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "on.json")]) == 0
    out = capsys.readouterr().out
    on = json.loads((tmp_path / "on.json").read_text())
    assert [on["warm_start"]["best"]] == [n for n in NAMES if n in out.split("baseline ")[1]]
    assert f"{on['warm_start']['improvement']:+.4f}" in out
    assert main([*common, "--no-warm-start", "--out", str(tmp_path / "off.json")]) == 0
    off = json.loads((tmp_path / "off.json").read_text())
    assert off["warm_start"] is None and off["best"]["warm_start"] is None
    assert "warm start" not in capsys.readouterr().out
    assert "warm_start: false" in (tmp_path / "off.config.yaml").read_text()
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    assert "--no-warm-start" in capsys.readouterr().out
