"""Determinism on CPU: the same seed gives the same search trajectory and the same model.

Every registered sampler strategy runs twice on the digits CNN with in-memory storage; the
trial parameters, the projected keep vectors and the scores must be identical, and another
seed must give another trajectory (so the test can fail). Then the best ratios are pruned
and fine-tuned twice: the final weights must be bit-identical.
"""

from __future__ import annotations

import pytest
import torch

import nasprune
from nasprune.search import STRATEGIES, Budget, single_process
from nasprune.search import search as run_search

X = torch.zeros(1, 1, 8, 8)
TRIALS = 6
# Short warm-ups so the learned part of every strategy is exercised within TRIALS trials.
OPTIONS = {"evolution": {"population": 3}, "bayes": {"n_startup_trials": 3},
           "tpe": {"n_startup_trials": 3}, "rl": {"warmup": 3}, "gan": {"warmup": 3},
           "predictor": {"warmup": 3}}


@pytest.fixture(scope="module")
def base(trained_narrow_digits_cnn):
    """A briefly trained digits CNN (scores then differ between candidates)."""
    return trained_narrow_digits_cnn


def trajectory(model, data, strategy: str, seed: int):
    result = run_search(model, X, data, strategy=strategy, target=Budget(macs=0.5),
                        trials=TRIALS, seed=seed, progress=False, bn_batches=2, val_size=128,
                        device="cpu", rungs=None, **OPTIONS.get(strategy, {}))
    trials = sorted(result.study.get_trials(deepcopy=False), key=lambda t: t.number)
    return result, [(t.number, t.state.name, dict(t.params), t.value,
                     tuple(t.user_attrs.get("keep", ()))) for t in trials]


@pytest.mark.parametrize("strategy", [
    pytest.param(n, marks=pytest.mark.slow) if n == "predictor" else n
    for n in STRATEGIES.names() if not single_process(n)])
def test_same_seed_same_search_trajectory(base, digits, strategy):
    first, a = trajectory(base, digits, strategy, seed=3)
    _, b = trajectory(base, digits, strategy, seed=3)
    assert len(a) == TRIALS and all(t[1] == "COMPLETE" for t in a)
    assert a == b  # params, scores and projected keep vectors, bit for bit
    _, c = trajectory(base, digits, strategy, seed=4)
    assert [t[2] for t in a] != [t[2] for t in c]
    # the scores are real measurements, not a constant
    assert len({t[3] for t in a}) > 1 and all(0.0 <= t[3] <= 1.0 for t in a)
    assert first.best.score == max(t[3] for t in a)


def test_same_seed_same_pruned_and_finetuned_weights(base, digits):
    result, _ = trajectory(base, digits, "evolution", seed=0)
    states = []
    for _ in range(2):
        pruned = nasprune.prune(base, X, result.best.ratios)
        nasprune.finetune(pruned, digits, epochs=1, seed=0, device="cpu", progress=False)
        states.append({k: v.clone() for k, v in pruned.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    # fine-tuning did change the weights, and a different seed changes them differently
    start = nasprune.prune(base, X, result.best.ratios).state_dict()
    assert any(not torch.equal(start[k], states[0][k]) for k in start
               if start[k].is_floating_point())
    other = nasprune.prune(base, X, result.best.ratios)
    nasprune.finetune(other, digits, epochs=1, seed=1, device="cpu", progress=False)
    assert any(not torch.equal(other.state_dict()[k], states[0][k]) for k in states[0]
               if states[0][k].is_floating_point())
