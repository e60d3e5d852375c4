"""Property-based hostile input (hypothesis) at the config loader and at ``prune``.

Two properties for every generated input: nothing but a :class:`NaspruneError` escapes, and
an accepted input gives exactly the documented result — a loaded config satisfies every
declared constraint and holds the values it was given; a pruned digits CNN has, for every
group, the channel count ``kept_channels`` prescribes. Valid inputs must be accepted (a
validator that rejects everything would pass the first property).
"""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import nasprune
from nasprune.config import TrainConfig, load_config, to_dict
from nasprune.errors import NaspruneError
from nasprune.pruning import groups, kept_channels

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------------------- configs

scalars = (st.none() | st.booleans() | st.integers(-10**9, 10**9)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=10)
           | st.sampled_from(["digitscnn", "sgd", "adam", "cosine", "cpu", "1e-3", "0x10",
                              "yes", "~", "null", ".inf"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _check_constraints(cfg, where: str) -> None:
    """Every field of an accepted config has its declared type and meets its constraints."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        name = f"{where}.{f.name}"
        if dataclasses.is_dataclass(v):
            _check_constraints(v, name)
            continue
        tp = hints[f.name]
        allowed = typing.get_args(tp) or (tp,)
        if v is None:
            assert type(None) in allowed, name
            continue
        if isinstance(v, bool):
            assert bool in allowed, name
        elif isinstance(v, int):
            assert int in allowed, name
        elif isinstance(v, float):
            assert float in allowed and math.isfinite(v), name
        meta = f.metadata
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            assert v >= meta.get("min", -math.inf) and v <= meta.get("max", math.inf), name
            assert v > meta.get("gt", -math.inf) and v < meta.get("lt", math.inf), name
        if "choices" in meta:
            assert v in meta["choices"](), name


def _same(got, given) -> bool:
    if isinstance(given, bool) or not isinstance(given, (int, float)):
        return got == given
    return isinstance(got, (int, float)) and not isinstance(got, bool) and got == given


@FAST
@given(base=st.fixed_dictionaries({}, optional={
    f.name: st.just(getattr(TrainConfig(), f.name)) for f in dataclasses.fields(TrainConfig)}),
    changes=st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(TrainConfig)])
                            | st.text(max_size=8).filter(lambda k: k != "train"), values,
                            max_size=3),
    sectioned=st.booleans())
def test_generated_train_configs(tmp_path_factory, base, changes, sectioned):
    """A valid config with a few keys replaced by anything: rejected cleanly, or exact."""
    doc = {**base, **changes}
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump({"train": doc} if sectioned else doc))
    try:
        cfg = load_config(TrainConfig, path)
    except NaspruneError as exc:
        assert str(exc) and "\n" not in str(exc)
        assert changes, f"a valid config was rejected: {exc}"
        event("rejected")
        return
    event("accepted")
    _check_constraints(cfg, "train")
    for key, value in doc.items():
        assert _same(getattr(cfg, key), value), (key, value, getattr(cfg, key))


@FAST
@given(overrides=st.dictionaries(
    st.sampled_from(["epochs", "lr", "momentum", "batch_size", "seed", "label_smoothing",
                     "weight_decay", "bn_l1"]),
    st.integers(-5, 500) | st.floats(-2, 2) | st.floats(allow_nan=True, allow_infinity=True),
    max_size=4))
def test_numeric_flags_accepted_exactly_when_in_range(overrides):
    """The numeric flags: accepted iff each value is finite and within its declared range."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    hints = typing.get_type_hints(TrainConfig)

    def valid(key, v) -> bool:
        meta, tp = fields[key].metadata, hints[key]
        if isinstance(v, float) and float not in (typing.get_args(tp) or (tp,)):
            return False  # integer fields take integers only; float fields take both
        return (math.isfinite(v) and v >= meta.get("min", -math.inf)
                and v <= meta.get("max", math.inf) and v > meta.get("gt", -math.inf)
                and v < meta.get("lt", math.inf))

    expected_ok = all(valid(k, v) for k, v in overrides.items())
    try:
        cfg = load_config(TrainConfig, overrides=overrides)
    except NaspruneError as exc:
        assert not expected_ok, f"{overrides} rejected: {exc}"
        bad = [k for k, v in overrides.items() if not valid(k, v)]
        assert any(k in str(exc) for k in bad), str(exc)
        event("rejected")
        return
    event("accepted")
    assert expected_ok, f"{overrides} accepted as {to_dict(cfg)}"
    for k, v in overrides.items():
        assert getattr(cfg, k) == v


# ------------------------------------------------------------------------------ prune

X = torch.zeros(1, 1, 8, 8)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = nasprune.create_model("digitscnn", in_channels=1, width=8).eval()
    return model, groups(model, X)


ratio_values = (st.floats(min_value=0.0, max_value=0.999) | st.floats(allow_nan=True,
                allow_infinity=True) | st.integers(-2, 2) | st.booleans() | st.none()
                | st.text(max_size=4) | st.lists(st.floats(0, 1), max_size=2))


def _is_ratio(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and 0 <= v < 1)


def _check_pruned(model, pruned, gs, ratios: dict, round_to, min_channels) -> None:
    """Every group has exactly the channels ``kept_channels`` prescribes; it still runs."""
    for g in gs:
        want = kept_channels(g.channels, float(ratios.get(g.name, 0.0)), round_to,
                             min_channels, g.divisor)
        got = pruned.get_submodule(g.out_layers[0]).weight.shape[0]
        assert got == want, (g.name, ratios.get(g.name), got, want)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert pruned.eval()(x).shape == model(x).shape == (3, 10)
    assert model.features[0].weight.shape[0] == 8  # the input model is untouched


@FAST
@given(data=st.data(), round_to=st.none() | st.integers(-1, 6),
       min_channels=st.integers(-1, 20))
def test_generated_ratio_dicts(cnn, data, round_to, min_channels):
    model, gs = cnn
    names = [g.name for g in gs]
    keys = st.sampled_from(names) | st.sampled_from(["features.1", "classifier.1", "",
                                                     "features.00"]) | st.text(max_size=6)
    ratios = data.draw(st.dictionaries(keys, ratio_values, max_size=5), label="ratios")
    valid = (all(k in names and _is_ratio(v) for k, v in ratios.items())
             and (round_to is None or round_to >= 1) and min_channels >= 1)
    try:
        pruned = nasprune.prune(model, X, ratios, round_to=round_to, min_channels=min_channels)
    except NaspruneError as exc:
        assert str(exc)
        assert not valid, f"valid ratios rejected: {ratios}, {round_to}, {min_channels}: {exc}"
        event("rejected")
        return
    event("accepted")
    assert valid, f"invalid input accepted: {ratios}, round_to={round_to}, " \
                  f"min_channels={min_channels}"
    _check_pruned(model, pruned, gs, ratios, round_to, min_channels)
    assert pruned.nasprune_pruning["ratios"] == {n: float(ratios.get(n, 0.0)) for n in names}


@FAST
@given(ratio=ratio_values, criterion=st.sampled_from(["l1", "l2", "fpgm", "bn_scale",
                                                      "random", "L1", "taylor"]))
def test_generated_uniform_ratio(cnn, ratio, criterion):
    model, gs = cnn
    valid = _is_ratio(ratio) and criterion in ("l1", "l2", "fpgm", "bn_scale", "random")
    try:
        pruned = nasprune.prune(model, X, ratio, criterion=criterion)
    except NaspruneError as exc:
        assert not valid, f"valid ratio {ratio!r} ({criterion}) rejected: {exc}"
        event("rejected")
        return
    event("accepted")
    assert valid, f"invalid ratio {ratio!r} ({criterion}) accepted"
    _check_pruned(model, pruned, gs, {g.name: ratio for g in gs}, None, 1)


# --------------------------------------------------------------------- experiment configs

def _experiment_paths() -> list[str]:
    """Dotted paths of every scalar setting of ExperimentConfig (sections included)."""
    from nasprune.experiment.config import ExperimentConfig

    paths = []
    for f in dataclasses.fields(ExperimentConfig):
        default = getattr(ExperimentConfig(), f.name)
        if dataclasses.is_dataclass(default):
            paths += [f"{f.name}.{g.name}" for g in dataclasses.fields(default)]
        else:
            paths.append(f.name)
    return paths


@FAST
@given(data=st.data())
def test_generated_experiment_configs(tmp_path_factory, data):
    """Nested experiment configs: a few settings replaced by anything — rejected with one
    line, or loaded with every constraint met and the given values kept."""
    from nasprune.experiment.config import ExperimentConfig, load_experiment_config

    def default_of(dotted: str):
        """The default at a settings path; None for a key that is no setting (``__dict__``)."""
        node = ExperimentConfig()
        for part in dotted.split("."):
            if not (dataclasses.is_dataclass(node)
                    and part in {f.name for f in dataclasses.fields(node)}):
                return None
            node = getattr(node, part)
        return node

    def plausible(dotted: str):
        """Mostly values of the right type near the valid range, sometimes anything."""
        d = default_of(dotted)
        near = (st.booleans() if isinstance(d, bool) else
                st.integers(-1, 60) if isinstance(d, int) else
                st.floats(-0.1, 1.1) if isinstance(d, float) else st.just(d))
        return st.one_of(st.just(d), near, near, values)

    paths = st.sampled_from(_experiment_paths())
    keys = data.draw(st.lists(paths | st.text(max_size=8).filter(lambda k: "." not in k),
                              max_size=3, unique=True), label="keys")
    changes = {k: data.draw(plausible(k), label=k) for k in keys}
    doc: dict = {}
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = tmp_path_factory.mktemp("exp") / "e.yaml"
    path.write_text(yaml.safe_dump({"experiment": doc}))
    try:
        cfg = load_experiment_config(path)
    except NaspruneError as exc:
        assert str(exc) and "\n" not in str(exc)
        event("rejected")
        return
    event("accepted")
    assert isinstance(cfg, ExperimentConfig)
    _check_constraints(cfg, "experiment")
    for dotted, value in changes.items():
        got = cfg
        for part in dotted.split("."):
            got = getattr(got, part)
        if value is not None and not isinstance(value, (dict, list)):
            assert _same(got, value), (dotted, value, got)
