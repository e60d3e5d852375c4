"""The learned strategies: rl (DDPG), gan, predictor and the differentiable gate procedure.

Samplers are checked without any network where possible — a synthetic score
``-‖keep - k*‖²`` stands in for the proxy accuracy — so the tests are fast and can assert
that each sampler really learns: it must rebuild its knowledge from a study's stored trials
and find better vectors than uniform random search with the same trial count (bounds and
seeds are the contract of every strategy, in test_strategy_contract.py). The differentiable
procedure trains gates on digits and must land on the MACs budget with ratios that differ
between groups.
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

import nasprune
from nasprune.errors import NaspruneError
from nasprune.search import Budget
from nasprune.search.space import SearchSpace
from nasprune.search.strategies import STRATEGIES
from nasprune.search.strategies.differentiable import RelaxedCost, read_keep
from nasprune.search.strategies.differentiable import run as run_gates
from nasprune.search.strategies.learned import completed_history

X = torch.zeros(1, 1, 8, 8)
LEARNED = ("rl", "gan", "predictor")
# Lighter training than the defaults keeps this file fast. Measured with
# bench/bench_learned.py (digitscnn space, 40 trials, seeds 0-5): mean best -0.017 (rl),
# -0.014 (gan), -0.013 (predictor) against -0.052 for random; rl with 10 updates per trial
# instead of 15 falls to -0.044, so these are close to the cheapest settings that learn.
CHEAP = {"rl": {"updates_per_trial": 15}, "gan": {"steps": 25},
         "predictor": {"ensemble": 3, "candidates": 128}}

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace(nasprune.create_model("digitscnn", in_channels=1), X)


def k_star(space: SearchSpace, seed: int) -> np.ndarray:
    return np.random.default_rng(100 + seed).uniform(0.3, 0.9, space.dim)


def synthetic(space: SearchSpace, target: np.ndarray, two: bool = False):
    """Objective: suggest, store the keep vector as the search does, score by distance."""

    def objective(trial: optuna.Trial):
        keep = np.array([trial.suggest_float(space.param_name(i), space.lower[i], space.upper[i])
                         for i in range(space.dim)])
        trial.set_user_attr("keep", keep.tolist())
        score = -float(((keep - target) ** 2).sum())
        return (score, float(keep.sum())) if two else score

    return objective


def run_study(space, name: str, seed: int, trials: int, target, two: bool = False,
              warmup: int | None = 4):
    """``trials`` trials of strategy ``name`` (cheap settings, ``warmup`` random trials)."""
    options = dict(CHEAP.get(name, {}))
    if name != "random" and warmup is not None:
        options["warmup"] = warmup
    sampler = STRATEGIES.get(name)(space, seed, **options)
    directions = ["maximize", "minimize"] if two else ["maximize"]
    study = optuna.create_study(directions=directions, sampler=sampler)
    study.optimize(synthetic(space, target, two), n_trials=trials)
    return study


def distributions(space: SearchSpace) -> dict:
    return {space.param_name(i): optuna.distributions.FloatDistribution(
        float(space.lower[i]), float(space.upper[i])) for i in range(space.dim)}


def stored_trial(space: SearchSpace, keep: np.ndarray, value: float):
    dists = distributions(space)
    params = {space.param_name(i): float(keep[i]) for i in range(space.dim)}
    return optuna.trial.create_trial(params=params, distributions=dists, value=value,
                                     user_attrs={"keep": [float(k) for k in keep]})


def test_registered_with_clear_option_errors(space):
    assert set(LEARNED) <= set(STRATEGIES.names())
    assert STRATEGIES.get("differentiable").single_process
    with pytest.raises(NaspruneError, match="unknown option 'sigmaa'.*sigma"):
        STRATEGIES.get("rl")(space, 0, sigmaa=0.3)
    with pytest.raises(NaspruneError, match="top"):
        STRATEGIES.get("gan")(space, 0, top=1.5)
    with pytest.raises(NaspruneError, match="model"):
        STRATEGIES.get("predictor")(space, 0, model="forest")


@pytest.mark.parametrize("name", LEARNED)
def test_rebuilds_knowledge_from_stored_trials(space, name, tmp_path):
    """A fresh sampler on a study loaded from SQLite learns from the trials stored there."""
    target = k_star(space, 0)
    rng = np.random.default_rng(0)
    url = f"sqlite:///{tmp_path / 's.db'}"
    keeps = rng.uniform(space.lower, space.upper, (30, space.dim))
    trials = [stored_trial(space, k, -float(((k - target) ** 2).sum())) for k in keeps]
    optuna.create_study(storage=url, study_name="s", direction="maximize").add_trials(trials)

    sampler = STRATEGIES.get(name)(space, 0, **CHEAP[name])
    study = optuna.load_study(study_name="s", storage=url, sampler=sampler)
    asked = [study.ask(distributions(space)) for _ in range(8)]
    proposals = np.array([space.keep_from_params(t.params) for t in asked])
    assert np.all(proposals >= space.lower) and np.all(proposals <= space.upper)
    # Learned from all 30 stored trials (nothing was told to this sampler) ...
    assert (sampler._fitted[0] if name == "predictor" else sampler._trained_on) == 30
    # ... and it shows: proposals sit nearer the optimum than the stored (uniform) trials.
    near = np.linalg.norm(proposals - target, axis=1).mean()
    stored = np.linalg.norm(keeps - target, axis=1).mean()
    assert near < 0.8 * stored, (near, stored)


@pytest.mark.parametrize("constrain", [True, False])
def test_rl_clamps_actions_so_the_recorded_budget_stays_reachable(space, constrain):
    """AMC's action constraint: with the study's MACs budget known, the raw episode fits it."""
    rng = np.random.default_rng(1)
    study = optuna.create_study(direction="maximize", sampler=STRATEGIES.get("rl")(
        space, 0, constrain=constrain, **CHEAP["rl"]))
    study.set_user_attr("budget", {"macs": 0.3, "params": None, "latency_ms": None})
    keeps = rng.uniform(space.lower, space.upper, (12, space.dim))
    study.add_trials([stored_trial(space, k, float(k.mean())) for k in keeps])  # favours big
    raw = [space.keep_from_params(study.ask(distributions(space)).params) for _ in range(6)]
    fractions = [space.cost(k)[0] / space.base_macs for k in raw]
    if constrain:
        assert max(fractions) <= 0.3, fractions
    else:
        assert max(fractions) > 0.3, fractions  # the clamp is what keeps them in


@pytest.mark.parametrize("name", LEARNED)
def test_warmup_is_the_random_strategy_draw(space, name):
    """Below the warm-up count a learned sampler proposes exactly what ``random`` would."""
    target = k_star(space, 1)
    a = run_study(space, name, 5, 4, target)
    b = run_study(space, "random", 5, 4, target)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


@pytest.mark.parametrize("name", LEARNED)
def test_multi_objective_study_learns_the_first_objective(space, name):
    study = run_study(space, name, 0, 10, k_star(space, 3), two=True)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 10 and len({tuple(t.params.values()) for t in done}) == 10
    history = completed_history(study, space)
    assert history.score.tolist() == [t.values[0] for t in done]
    assert np.allclose(history.keep, [t.user_attrs["keep"] for t in done])


def test_history_scores_are_higher_is_better_and_skip_unusable_trials(space):
    study = optuna.create_study(direction="minimize")
    keeps = np.random.default_rng(0).uniform(space.lower, space.upper, (3, space.dim))
    study.add_trials([stored_trial(space, k, v) for k, v in zip(keeps, [0.5, 0.2, 0.9],
                                                                 strict=True)])
    failed = stored_trial(space, keeps[0], 0.1)
    study.add_trial(optuna.trial.create_trial(
        params=failed.params, distributions=failed.distributions, state=TrialState.FAIL))
    history = completed_history(study, space)
    assert history.score.tolist() == [-0.5, -0.2, -0.9] and history.numbers.tolist() == [0, 1, 2]


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n == "predictor" else n for n in LEARNED])
def test_learns_better_than_random_on_a_synthetic_objective(space, name):
    """Mean over 3 seeds of the best score after 40 trials (default warm-up) vs random."""
    best, base = [], []
    for seed in range(3):
        target = k_star(space, seed)
        best.append(run_study(space, name, seed, 40, target, warmup=None).best_value)
        base.append(run_study(space, "random", seed, 40, target).best_value)
    assert np.mean(best) > np.mean(base), (best, base)


# --- differentiable -------------------------------------------------------------------
@pytest.mark.parametrize("model", ["digitscnn", "mobilenetv2"])
def test_relaxed_cost_equals_the_cost_model_at_integer_widths(model):
    inch = 1 if model == "digitscnn" else 3
    x = torch.zeros(1, inch, 8, 8) if model == "digitscnn" else torch.zeros(1, 3, 32, 32)
    sp = SearchSpace(nasprune.create_model(model, in_channels=inch), x)
    relaxed = RelaxedCost(sp)
    rng = np.random.default_rng(0)
    for keep in [np.ones(sp.dim), sp.lower, *rng.uniform(sp.lower, sp.upper, (5, sp.dim))]:
        macs, params = relaxed(torch.as_tensor(sp.kept(keep)))
        assert (round(float(macs)), round(float(params))) == sp.cost(keep)
    width = torch.as_tensor(sp.kept(np.full(sp.dim, 0.5)), dtype=torch.float64)
    width.requires_grad_(True)
    relaxed(width)[0].backward()
    assert torch.all(width.grad > 0)  # every group's channels cost MACs


def test_read_keep_from_gates():
    gates = [np.array([0.9, 0.8, 0.1, 0.2]), np.array([0.6, 0.7])]
    assert read_keep(gates).tolist() == [0.5, 1.0]
    assert np.allclose(read_keep(gates, "mean"), [0.5, 0.65])


def test_differentiable_meets_the_budget_with_per_group_ratios(trained, digits):
    sp = SearchSpace(trained, X)
    before = [p.detach().clone() for p in trained.parameters()]
    keep = run_gates(sp, None, Budget(macs=0.5), trained, digits, seed=0, steps=150)
    assert keep.shape == (sp.dim,)
    assert np.all(keep >= sp.lower) and np.all(keep <= sp.upper)
    macs_fraction = sp.cost(keep)[0] / sp.base_macs
    assert abs(macs_fraction / 0.5 - 1) <= 0.01, macs_fraction
    assert np.ptp(keep) > 0.05, keep  # the gates told the groups apart
    assert all(torch.equal(a, b) for a, b in zip(before, trained.parameters(), strict=True))
    again = run_gates(sp, None, Budget(macs=0.5), trained, digits, seed=0, steps=150)
    assert np.array_equal(keep, again)


def test_differentiable_params_budget_and_latency_error(trained, digits):
    sp = SearchSpace(trained, X)
    keep = run_gates(sp, None, Budget(params=0.4), trained, digits, seed=1, steps=60)
    assert abs(sp.cost(keep)[1] / sp.base_params / 0.4 - 1) <= 0.01
    with pytest.raises(NaspruneError, match="MACs or params budget"):
        run_gates(sp, None, Budget(latency_ms=1.0), trained, digits, seed=0, steps=10)
