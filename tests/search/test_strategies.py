"""Every registered search strategy through one shared end-to-end search, plus learning
checks. The sampler-level contract (bounds, seeds, reload, budget, options) of every
strategy is in test_strategy_contract.py.

For each name ``search(strategy=...)`` accepts: a short search on the digits CNN finishes,
every searched trial sits within 1 % under the MACs budget (the warm start's baselines
under it), the trials persist in SQLite, and a
second call with the same study name continues the trial count without touching what was
there.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

import nasprune
from nasprune.search import Budget, SearchSpace, search, strategy_names
from nasprune.search.strategies import make_sampler, single_process
from nasprune.search.strategies.evolution import crowding, pareto_ranks

# Short warm-ups so a handful of trials already exercises every strategy's learning step.
FAST_OPTIONS = {
    "evolution": {"population": 3},
    "bayes": {"n_startup_trials": 3},
    "tpe": {"n_startup_trials": 3},
    "rl": {"warmup": 3},
    "gan": {"warmup": 3},
    "predictor": {"warmup": 3},
}
EVAL = {"bn_batches": 3, "val_size": 200, "progress": False}


def _advertised(capsys) -> dict[str, set[str]]:
    """The strategy names ``nasprune search --help`` and README.md tell users about."""
    from nasprune.cli import main

    with pytest.raises(SystemExit):
        main(["search", "--help"])
    from nasprune.search.config import DEFAULT_STRATEGY

    # The help of the option (not the usage line): "--strategy NAME random, ... (default X".
    found = re.search(r"--strategy NAME ([a-z, ]+) \(default ([a-z]+):",
                      " ".join(capsys.readouterr().out.split()))
    cli, default = found.group(1), found.group(2)
    assert default == DEFAULT_STRATEGY
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    row = next(ln for ln in readme.splitlines() if ln.startswith("| search strategies |"))
    # The README's API example passes the default strategy and lists the others.
    comment = next(ln for ln in readme.splitlines() if f'strategy="{DEFAULT_STRATEGY}",' in ln)
    return {"cli": set(re.findall(r"[a-z]+", cli)),
            "readme table": set(re.findall(r"`([a-z]+)`", row)),
            "readme example": {DEFAULT_STRATEGY,
                               *re.findall(r"[a-z]+", comment.split("others:", 1)[1])}}


def test_every_advertised_strategy_resolves_to_a_sampler_or_procedure(capsys) -> None:
    """What the CLI help and README list is exactly what search() runs, and each name
    builds: an Optuna sampler (checked in depth by test_strategy_contract.py) or a
    procedure."""
    for where, names in _advertised(capsys).items():
        assert names == set(strategy_names()), where
    space = SearchSpace(nasprune.create_model("digitscnn", in_channels=1),
                        torch.zeros(1, 1, 8, 8))
    for name in strategy_names():
        assert isinstance(make_sampler(name, space, 0), optuna.samplers.BaseSampler), name
    # Only the gate-training procedure runs in one process; search() asks it, not its name.
    assert [n for n in strategy_names() if single_process(n)] == ["differentiable"]


def _within(c) -> bool:
    """A searched trial sits within 1 % under the budget; a warm-start baseline under it."""
    return c.macs_fraction <= 0.5 and (c.warm_start is not None or c.macs_fraction >= 0.495)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n == "differentiable" else n
    for n in strategy_names()])
def test_strategy_searches_within_budget_persists_and_resumes(name, trained, digits,
                                                              tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    # The first 3 trials are the warm start's baselines; the strategy proposes the rest.
    first_n, total = (4, 5) if single_process(name) else (6, 8)
    opts = FAST_OPTIONS.get(name, {})
    x = digits.example_input()
    first = search(trained, x, digits, strategy=name, target=Budget(macs=0.5), trials=first_n,
                   storage=url, study="s", seed=0, **EVAL, **opts)
    assert len(first.trials) == first_n
    assert [c.warm_start for c in first.trials[:3]] == ["uniform", "global", "tp-global"]
    for c in first.trials:
        assert _within(c), (name, c.number, c.macs_fraction)
        assert 0.0 <= c.score <= 1.0
    stored = optuna.load_study(study_name="s", storage=url)
    done = stored.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == first_n
    assert all(len(t.user_attrs["keep"]) == first.space.dim for t in done)

    second = search(trained, x, digits, strategy=name, target=Budget(macs=0.5), trials=total,
                    storage=url, study="s", seed=0, **EVAL, **opts)
    assert [c.number for c in second.trials] == list(range(total))
    assert [c.keep for c in second.trials[:first_n]] == [c.keep for c in first.trials]
    assert all(_within(c) for c in second.trials)
    assert sum(c.warm_start is not None for c in second.trials) == 3  # not enqueued again
    # New trials are new architectures (channel counts), not replays.
    archs = {tuple(second.space.kept(np.array(c.keep))) for c in second.trials}
    assert len(archs) == total, name


def test_learned_strategies_share_random_warm_up(trained, digits) -> None:
    x = digits.example_input()
    runs = {n: search(trained, x, digits, strategy=n, trials=3, seed=5, warm_start=False,
                      **EVAL,
                      **({"population": 5} if n == "evolution" else {}))
            for n in ("random", "evolution", "bayes")}
    keeps = {n: [c.keep for c in r.trials] for n, r in runs.items()}
    assert keeps["random"] == keeps["evolution"] == keeps["bayes"]


# --- learning on a synthetic objective (no network: fast and noise-free) ----------------
def _fake_space(dim: int, lower: float = 0.1) -> SimpleNamespace:
    names = [f"keep{i:03d}_g{i}" for i in range(dim)]
    return SimpleNamespace(
        dim=dim, lower=np.full(dim, lower), upper=np.ones(dim), names=names,
        param_name=lambda i: names[i],
        keep_from_params=lambda p: np.array([p[n] for n in names]),
    )


def _synthetic_best(name: str, seed: int, trials: int = 40, dim: int = 8, **options) -> float:
    space = _fake_space(dim)
    target = np.random.default_rng(100).uniform(0.2, 0.9, dim)
    sampler = make_sampler(name, space, seed, **options)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        keep = np.array([trial.suggest_float(space.param_name(i), 0.1, 1.0)
                         for i in range(dim)])
        trial.set_user_attr("keep", keep.tolist())
        return -float(np.sum((keep - target) ** 2))

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.optimize(objective, n_trials=trials)
    return study.best_value


@pytest.mark.parametrize("name", ["evolution", "tpe"])
def test_strategy_beats_random_on_a_smooth_objective(name) -> None:
    """Default options, 40 trials, 8 groups, 3 seeds (paired with random's seeds)."""
    ours = np.mean([_synthetic_best(name, s) for s in range(3)])
    rand = np.mean([_synthetic_best("random", s) for s in range(3)])
    assert ours > rand, (name, ours, rand)


def test_bayes_improves_on_its_random_start() -> None:
    # The GP costs ~1 s per proposal on a busy CPU: one short, paired run.
    gp = _synthetic_best("bayes", 0, trials=20, dim=4, n_startup_trials=6)
    rand = _synthetic_best("random", 0, trials=20, dim=4)
    assert gp > rand and gp > -0.01, (gp, rand)


# --- GA machinery ------------------------------------------------------------------------
def test_pareto_ranks_and_crowding() -> None:
    # Maximise both columns.
    v = np.array([[3.0, 1.0], [2.0, 2.0], [1.0, 3.0], [1.0, 1.0], [0.5, 0.5], [2.0, 1.5]])
    assert pareto_ranks(v).tolist() == [0, 0, 0, 2, 3, 1]
    d = crowding(v[:3])
    assert np.isinf(d[0]) and np.isinf(d[2]) and d[1] == pytest.approx(2.0)


def test_evolution_children_stay_in_bounds_and_near_parents() -> None:
    space = _fake_space(6, lower=0.2)
    sampler = make_sampler("evolution", space, 0, population=4, mutation_sigma=0.05,
                           crossover_prob=0.0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    parent = np.full(6, 0.6)
    study.enqueue_trial({space.param_name(i): 0.6 for i in range(6)})
    for _ in range(3):
        study.enqueue_trial({space.param_name(i): 0.25 for i in range(6)})

    def objective(trial: optuna.Trial) -> float:
        keep = np.array([trial.suggest_float(space.param_name(i), 0.2, 1.0) for i in range(6)])
        trial.set_user_attr("keep", keep.tolist())
        return 1.0 if np.allclose(keep, 0.6) else float(-np.abs(keep - 0.6).sum())

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.optimize(objective, n_trials=12)
    children = [np.array(t.user_attrs["keep"]) for t in study.trials[4:]]
    for c in children:
        assert np.all(c >= 0.2) and np.all(c <= 1.0)
    # Mutation only (no crossover): children descend from the pool, mostly the best parent.
    near = [np.abs(c - parent).max() < 0.3 for c in children]
    assert sum(near) >= len(children) // 2
