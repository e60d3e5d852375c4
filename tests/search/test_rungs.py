"""Multi-fidelity scoring: rungs, early stopping (PRUNED trials), the pick, resume, CLI."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nasprune.errors import NaspruneError
from nasprune.search import Budget, Proxy, SearchSpace, check_proxy, search
from nasprune.search.result import build_result
from nasprune.search.rungs import Rung, Rungs, as_rungs, auto_rungs

RUNGS = "60:0,150:5,269:15"  # digits: 269 validation images in all
FAST = {"bn_batches": 2, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def trained(trained_narrow_digits_cnn):
    return trained_narrow_digits_cnn


@pytest.fixture(scope="module")
def space(trained, digits) -> SearchSpace:
    return SearchSpace(trained, digits.example_input())


@pytest.fixture(scope="module")
def searched(trained, digits):
    """A 10-trial random search at 30 % MACs in three rungs (eta 3)."""
    return search(trained, digits.example_input(), digits, strategy="random",
                  target=Budget(macs=0.3), trials=10, rungs=RUNGS, seed=0, **FAST)


# --- the setting ------------------------------------------------------------------------
def test_rungs_parse_and_spell_back() -> None:
    r = Rungs.parse(" 1000:0, 4000:50 ", eta=2)
    assert r.levels == (Rung(1000, 0), Rung(4000, 50)) and r.eta == 2
    assert r.text() == "1000:0,4000:50" and r.top == Rung(4000, 50)
    assert as_rungs(None) is None and as_rungs("off") is None and as_rungs(r) is r
    assert as_rungs("500:10") == Rungs((Rung(500, 10),))


@pytest.mark.parametrize("text, match", [
    ("1000", "'1000' is not VAL_SIZE:STEPS"),
    ("1000:0,x:5", "'x:5' is not VAL_SIZE:STEPS"),
    ("1000:0,500:50", "rungs must grow: 500:50 after 1000:0"),
    ("1000:50,2000:10", "rungs must grow: 2000:10 after 1000:50"),
    ("1000:0,1000:0", "rungs must grow"),
    ("0:0", "a rung's val_size must be an integer ≥ 1, got 0"),
])
def test_bad_rungs_are_one_clear_error(text, match) -> None:
    with pytest.raises(NaspruneError, match=re.escape(match)):
        Rungs.parse(text)


def test_eta_must_exceed_one() -> None:
    with pytest.raises(NaspruneError, match="eta must be a number > 1"):
        Rungs.parse("100:0,200:5", eta=1)


# --- the proxy --------------------------------------------------------------------------
def test_rung_scores_continue_one_network_and_rung0_is_the_plain_proxy(trained, digits,
                                                                       space) -> None:
    ratios = space.prune_ratios(space.project(np.full(space.dim, 0.6), Budget(macs=0.3)))
    proxy = Proxy(trained, digits, val_size=60, rungs=RUNGS, **FAST)
    assert proxy.val_count == 60  # its own val_size, although 269 images are cached
    scores = list(proxy.rung_scores(ratios))
    assert len(scores) == 3 and scores == list(proxy.rung_scores(ratios))  # seeded
    # Rung 0 (60 images, no steps) is exactly the single-fidelity proxy on 60 images: the
    # first 60 of the 269 cached are the 60-image subset.
    assert scores[0] == Proxy(trained, digits, val_size=60, **FAST).score(ratios)
    # The top rung fine-tunes 15 steps in two segments (5 + 10) of one network.
    plain = Proxy(trained, digits, val_size=269, finetune_steps=15, **FAST)
    net = plain.prune(ratios)
    plain.finetune(net, 5)
    plain.finetune(net, 10, first_step=5)
    plain.recalibrate(net)
    assert scores[2] == plain.accuracy(net)
    # The narrow net pruned to 30 % MACs gains from 15 steps (measured: 0.22 → 0.30).
    assert scores[2] > scores[0] + 0.05


# --- the search -------------------------------------------------------------------------
def _replay_halving(trials, eta: float = 3.0) -> list[int]:
    """The rung each trial should reach by successive halving, trial by trial."""
    seen: dict[int, list[float]] = {}
    reached = []
    for t in trials:
        scores = t.user_attrs["rung_scores"]
        r = 0
        while True:
            prior = seen.setdefault(r, [])
            advance = sum(s > scores[r] for s in prior) < math.ceil((len(prior) + 1) / eta)
            prior.append(scores[r])
            if r == 2 or not advance:
                break
            r += 1
        reached.append(r)
    return reached


def test_losers_stop_early_as_pruned_trials_with_their_rung_scores(searched) -> None:
    trials = sorted(searched.study.trials, key=lambda t: t.number)
    assert len(trials) == 10  # stopped trials count toward `trials`
    states = [t.state for t in trials]
    assert set(states) == {TrialState.COMPLETE, TrialState.PRUNED}
    assert states.count(TrialState.PRUNED) >= 3, states
    for t in trials:
        scores = t.user_attrs["rung_scores"]
        assert t.user_attrs["rung"] == len(scores) - 1
        assert t.intermediate_values == dict(enumerate(scores))  # reported per rung
        if t.state == TrialState.COMPLETE:
            assert len(scores) == 3 and t.values == [scores[-1]]  # one score per rung
        else:
            assert 1 <= len(scores) < 3
    # Every trial reached exactly the rung the successive-halving rule gives it.
    assert [len(t.user_attrs["rung_scores"]) - 1 for t in trials] == _replay_halving(trials)


def test_the_pick_is_the_best_at_the_top_rung_never_a_stopped_trial(searched) -> None:
    best = searched.best
    complete = [t for t in searched.study.trials if t.state == TrialState.COMPLETE]
    assert best.rung == 2 and not best.stopped and len(best.rung_scores) == 3
    assert best.score == max(t.values[0] for t in complete)
    assert {c.number for c in searched.stopped} == {
        t.number for t in searched.study.trials if t.state == TrialState.PRUNED}
    assert all(c.stopped and c.number != best.number for c in searched.stopped)
    assert searched.to_dict()["stopped"] == len(searched.stopped)
    assert len(searched.trials) + len(searched.stopped) == 10


def _trial(state, scores, number_value=None):
    keep = [1.0]
    return create_trial(
        state=state, value=scores[-1] if state == TrialState.COMPLETE else None,
        params={}, distributions={}, intermediate_values=dict(enumerate(scores)),
        user_attrs={"keep": keep, "prune_ratios": {"g": 0.0}, "macs": 1, "params": 1,
                    "macs_fraction": 1.0, "params_fraction": 1.0, "rung_scores": scores,
                    "rung": len(scores) - 1})


def test_build_result_ranks_by_rung_reached_then_score(space) -> None:
    st = optuna.create_study(direction="maximize")
    st.add_trial(_trial(TrialState.PRUNED, [0.99]))  # the highest score: stopped, never picked
    st.add_trial(_trial(TrialState.COMPLETE, [0.5, 0.97]))  # a study of an older setting
    st.add_trial(_trial(TrialState.COMPLETE, [0.4, 0.8, 0.9]))
    st.add_trial(_trial(TrialState.COMPLETE, [0.6, 0.7, 0.85]))
    res = build_result(st, space, Budget(macs=0.5), "random", "single", 0.0)
    assert res.best.number == 2 and res.best.rung == 2 and res.best.score == 0.9
    assert [c.number for c in res.stopped] == [0] and res.stopped[0].score == 0.99
    st = optuna.create_study(direction="maximize")
    st.add_trial(_trial(TrialState.PRUNED, [0.99]))
    with pytest.raises(NaspruneError, match="no completed trials"):
        build_result(st, space, Budget(macs=0.5), "random", "single", 0.0)


def test_rung_study_resumes_and_refuses_another_setting(trained, digits, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    kw = dict(strategy="random", target=Budget(macs=0.3), storage=url, study="s", seed=0,
              rungs="60:0,150:4", **FAST)
    first = search(trained, digits.example_input(), digits, trials=3, **kw)
    before = {t.number: t.user_attrs["rung_scores"] for t in first.study.trials}
    again = search(trained, digits.example_input(), digits, trials=5, **kw)
    trials = again.study.get_trials()
    assert len(trials) == 5 and {t.number: t.user_attrs["rung_scores"]
                                 for t in trials if t.number < 3} == before
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    kw["rungs"] = "60:0,150:8"
    with pytest.raises(NaspruneError, match="different rung setting"):
        search(trained, digits.example_input(), digits, trials=8, **kw)
    kw["rungs"] = None  # single fidelity on a rung study: refused as well
    with pytest.raises(NaspruneError, match="different rung setting"):
        search(trained, digits.example_input(), digits, trials=8, **kw)


def test_learned_strategy_learns_from_top_rung_scores(trained, digits) -> None:
    # Without the warm start, whose three baselines would take half the trials.
    res = search(trained, digits.example_input(), digits, strategy="rl", warmup=2,
                 target=Budget(macs=0.3), trials=6, rungs="60:0,150:4", seed=0,
                 warm_start=False, **FAST)
    assert len(res.trials) + len(res.stopped) == 6 and res.best.rung == 1
    # Past its 2-trial warm-up the agent proposed from what it learned (complete trials).
    assert len(res.trials) > 2 and all(len(c.rung_scores) == 2 for c in res.trials)
    assert all(t.user_attrs["strategy"] == "rl" for t in res.study.trials)


def test_rungs_refuse_multi_objective_and_a_mismatched_proxy(trained, digits) -> None:
    x = digits.example_input()
    with pytest.raises(NaspruneError, match="need objective='single'"):
        search(trained, x, digits, objective="multi", trials=2, rungs="60:0,150:4", **FAST)
    proxy = Proxy(trained, digits, val_size=60, **FAST)
    with pytest.raises(NaspruneError, match="differ from the evaluator's rungs"):
        search(trained, x, digits, trials=2, rungs="60:0,150:4", evaluator=proxy, **FAST)


def test_check_proxy_reports_one_spearman_per_rung(trained, digits, space) -> None:
    proxy = Proxy(trained, digits, val_size=60, rungs="60:0,150:4", **FAST)
    rng = np.random.default_rng(0)
    cands = [space.prune_ratios(space.project(rng.uniform(0.1, 1, space.dim),
                                              Budget(macs=0.3))) for _ in range(4)]
    out = check_proxy(proxy, cands, finetune_epochs=0.2, batch_size=64)
    assert [(r["val_size"], r["finetune_steps"]) for r in out["rungs"]] == [(60, 0), (150, 4)]
    for r in out["rungs"]:
        assert len(r["scores"]) == 4 and -1 <= r["spearman"] <= 1
    assert out["proxy"] == out["rungs"][-1]["scores"]
    assert out["rungs"][0]["scores"][0] == Proxy(trained, digits, val_size=60,
                                                 **FAST).score(cands[0])


# --- rungs="auto", the default ----------------------------------------------------------
def test_auto_rungs_switch_on_only_below_sixty_percent_of_the_unpruned_score() -> None:
    assert auto_rungs(1000, 0.80, 0.40) == Rungs.parse("1000:0,4000:30")
    assert auto_rungs(60, 0.80, 0.47, eta=2) == Rungs.parse("1000:0,4000:30", eta=2)
    assert auto_rungs(2000, 0.80, 0.47) == Rungs.parse("2000:0,8000:30")
    assert auto_rungs(1000, 0.80, 0.48) is None  # exactly 60 %: one fidelity
    assert auto_rungs(1000, -90.0, -140.0) is None  # a negated perplexity is no fraction
    with pytest.raises(NaspruneError, match="decided by search"):
        Proxy(None, None, rungs="auto")


def test_search_auto_scores_in_rungs_only_where_the_warm_start_collapses(
        trained, trained_digits_cnn, digits, capsys) -> None:
    x = digits.example_input()
    # The narrow CNN (val top-1 ~0.64) keeps ~0.26 at half its MACs: rungs.
    wrecked = search(trained, x, digits, strategy="random", target=Budget(macs=0.5),
                     trials=6, val_size=60, seed=0, bn_batches=2, device="cpu")
    # (the digits data set has 269 validation images: both rungs score on all of them)
    assert wrecked.rungs == "1000:0,4000:30"
    assert "rungs 1000:0,4000:30: the best one-knob network scores" in capsys.readouterr().out
    assert wrecked.best.rung == 1 and wrecked.stopped  # scored and stopped in rungs
    assert wrecked.to_dict()["rungs"] == "1000:0,4000:30"
    # The default CNN (~0.99) keeps nearly all of it: one fidelity, as rungs=None gives.
    sound = search(trained_digits_cnn, x, digits, strategy="random", target=Budget(macs=0.5),
                   trials=3, val_size=60, seed=0, **FAST)
    plain = search(trained_digits_cnn, x, digits, strategy="random", target=Budget(macs=0.5),
                   trials=3, val_size=60, seed=0, rungs=None, **FAST)
    assert sound.rungs is None and not sound.stopped
    assert [c.score for c in sound.trials] == [c.score for c in plain.trials]
    # Off on request, for a proxy that already fine-tunes, and without a warm start.
    off = search(trained, x, digits, strategy="random", target=Budget(macs=0.5), trials=2,
                 val_size=60, seed=0, rungs="off", **FAST)
    tuned = search(trained, x, digits, strategy="random", target=Budget(macs=0.5), trials=2,
                   val_size=60, seed=0, finetune_steps=2, **FAST)
    cold = search(trained, x, digits, strategy="random", target=Budget(macs=0.5), trials=2,
                  val_size=60, seed=0, warm_start=False, **FAST)  # nothing to judge it by
    assert off.rungs is None and tuned.rungs is None and cold.rungs is None


# --- the command line -------------------------------------------------------------------
def test_cli_search_in_rungs_with_proxy_check(digits_cnn_checkpoint, tmp_path,
                                              capsys) -> None:
    from nasprune.cli import main

    out = tmp_path / "s.json"
    rc = main(["search", "--checkpoint", str(digits_cnn_checkpoint), "--strategy", "random",
               "--trials", "6", "--target-macs", "0.3", "--bn-batches", "2",
               "--rungs", "60:0,150:4", "--rungs-eta", "2", "--check-proxy", "3",
               "--check-proxy-epochs", "0.2", "--out", str(out), "--quiet"])
    assert rc == 0
    doc = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert doc["best"]["rung"] == 1 and len(doc["best"]["rung_scores"]) == 2
    assert doc["stopped"] + doc["trials"] == 6
    assert len(doc["proxy_check"]["rungs"]) == 2
    assert re.search(r"rung 0 \(60 images, 0 steps\): Spearman -?\d\.\d{3}", text), text
    assert re.search(r"rung 1 \(150 images, 4 steps\): Spearman -?\d\.\d{3}", text), text
    assert f"{doc['stopped']} stopped early" in text
    assert "rungs: 60:0,150:4" in (tmp_path / "s.config.yaml").read_text()
    assert main(["search", "--checkpoint", str(digits_cnn_checkpoint), "--rungs", "60:0,30:4",
                 "--out", str(tmp_path / "t.json"), "--quiet"]) == 2
    assert "rungs must grow" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()
