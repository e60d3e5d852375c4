"""Config loading: defaults < YAML < overrides, and every bad input is a clear NaspruneError."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasprune.config import TrainConfig, load_config, read_yaml, save_resolved, to_dict
from nasprune.errors import NaspruneError


@dataclass
class Sub:
    rate: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    tags: list[str] = field(default_factory=list)


@dataclass
class Nested:
    """A config shaped like the experiment owner's: sections inside sections."""

    train: TrainConfig = field(default_factory=TrainConfig)
    sub: Sub = field(default_factory=Sub)
    mode: Literal["single", "multi"] = "single"
    weights: dict[str, float] = field(default_factory=dict)


def _write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_yaml_overrides_precedence(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: 7\n  lr: 0.05\n  optimizer: adam\n")
    cfg = load_config(TrainConfig, path, {"epochs": 3, "lr": None, "seed": 4})
    assert (cfg.epochs, cfg.lr, cfg.optimizer, cfg.seed) == (3, 0.05, "adam", 4)
    assert cfg.batch_size == TrainConfig().batch_size
    flat = load_config(TrainConfig, _write(tmp_path, "epochs: 2\n"))
    assert flat.epochs == 2


def test_int_accepted_for_float_and_kept_exact(tmp_path):
    cfg = load_config(TrainConfig, overrides={"lr": 1, "weight_decay": 0})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_unknown_key_did_you_mean(tmp_path):
    with pytest.raises(NaspruneError,
                       match="unknown key 'epcohs' in train section: did you mean 'epochs'?"):
        load_config(TrainConfig, _write(tmp_path, "train:\n  epcohs: 3\n"))


def test_malformed_yaml_names_line(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: 3\n  lr: [0.1\n  seed: 1\n")
    with pytest.raises(NaspruneError, match=r"malformed YAML in .*cfg.yaml' at line \d"):
        load_config(TrainConfig, path)


def test_duplicate_key_rejected(tmp_path):
    with pytest.raises(NaspruneError, match="line 2, column 1: duplicate key 'epochs'"):
        read_yaml(_write(tmp_path, "epochs: 1\nepochs: 2\n"))


def test_python_tags_rejected(tmp_path):
    with pytest.raises(NaspruneError, match="malformed YAML"):
        load_config(TrainConfig, _write(tmp_path, "model: !!python/object/apply:os.system "
                                                  "['echo hi']\n"))


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": -1}, "train.epochs must be ≥ 0, got -1"),
    ({"epochs": "ten"}, "train.epochs must be an integer, got 'ten'"),
    ({"epochs": 2.5}, "train.epochs must be an integer"),
    ({"epochs": True}, "train.epochs must be an integer"),
    ({"lr": float("nan")}, "train.lr must be a finite number, got nan"),
    ({"lr": float("inf")}, "train.lr must be a finite number"),
    ({"lr": 0}, "train.lr must be > 0.0"),
    ({"momentum": 1.0}, "train.momentum must be < 1.0"),
    ({"batch_size": 0}, "train.batch_size must be ≥ 1"),
    ({"augment": "yes"}, "train.augment must be true or false"),
    ({"optimizer": "adamm"}, "unknown optimizer 'adamm' in train.optimizer: did you mean 'adam'"),
    ({"schedule": "cosin"}, "did you mean 'cosine'"),
    ({"model": "resnet21"}, "unknown model 'resnet21'"),
    ({"data": "digit"}, "did you mean 'digits'"),
    ({"model": ["digitscnn"]}, "train.model must be a string, got \\['digitscnn'\\] \\(list\\)"),
])
def test_bad_values_rejected(overrides, message):
    with pytest.raises(NaspruneError, match=message):
        load_config(TrainConfig, overrides=overrides)


@pytest.mark.parametrize("text, message", [
    ("- 1\n- 2\n", "must hold a mapping"),
    ("train: 5\n", "the train section of .* must be a mapping, got integer"),
    ("1: 2\n", "keys in the train section must be strings"),
    ("weight_decay: .nan\n", "train.weight_decay must be a finite number"),
    ("data_dir: 2020-01-01\n", "must be a string"),
])
def test_bad_files_rejected(tmp_path, text, message):
    with pytest.raises(NaspruneError, match=message):
        load_config(TrainConfig, _write(tmp_path, text))


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(NaspruneError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    with pytest.raises(NaspruneError, match="is a directory"):
        load_config(TrainConfig, tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00epochs")
    with pytest.raises(NaspruneError, match="not UTF-8"):
        load_config(TrainConfig, tmp_path / "bin.yaml")
    assert load_config(TrainConfig, _write(tmp_path, "")) == TrainConfig()


def test_nested_sections(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: 4\nsub:\n  rate: 0.25\n  tags: [a, b]\n"
                            "mode: multi\nweights: {x: 1}\n")
    cfg = load_config(Nested, path, {"train.seed": 9, "sub": {"rate": 0.5}})
    assert cfg.train.epochs == 4 and cfg.train.seed == 9
    assert cfg.sub == Sub(rate=0.5, tags=["a", "b"])
    assert cfg.mode == "multi" and cfg.weights == {"x": 1.0}
    with pytest.raises(NaspruneError, match="unknown key 'rat' in sub section: did you mean "
                                            "'rate'"):
        load_config(Nested, overrides={"sub": {"rat": 1}})
    with pytest.raises(NaspruneError, match="unknown key 'epoch' in train section"):
        load_config(Nested, overrides={"train.epoch": 1})
    with pytest.raises(NaspruneError, match="mode must be one of 'single', 'multi'"):
        load_config(Nested, overrides={"mode": "both"})
    with pytest.raises(NaspruneError, match=r"sub.tags\[1\] must be a string"):
        load_config(Nested, overrides={"sub": {"tags": ["a", 2]}})
    with pytest.raises(NaspruneError, match="sub.rate must be ≤ 1.0"):
        load_config(Nested, overrides={"sub.rate": 2})


def test_save_resolved_round_trip(tmp_path):
    cfg = load_config(TrainConfig, overrides={"epochs": 3, "optimizer": "adamw", "lr": 2e-3})
    path = save_resolved(cfg, tmp_path / "out" / "config.yaml")
    assert yaml.safe_load(path.read_text())["train"]["optimizer"] == "adamw"
    assert load_config(TrainConfig, path) == cfg
    nested = load_config(Nested, overrides={"sub.tags": ["x"]})
    assert load_config(Nested, save_resolved(nested, tmp_path / "n.yaml")) == nested
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp-" in p.name]


# ---- property-based: nothing but NaspruneError, and never a silently wrong value ---------

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
keys = st.sampled_from(FIELDS) | st.text(max_size=10)
configs = st.dictionaries(keys, values, max_size=6)


def _assert_faithful(cfg: TrainConfig, given: dict) -> None:
    """A config that loaded holds exactly the given values, each of the declared type."""
    for key, value in given.items():
        if value is None:
            continue
        got = getattr(cfg, key)
        assert got == value or (isinstance(value, int) and got == float(value))
    for f in dataclasses.fields(TrainConfig):
        v = getattr(cfg, f.name)
        assert v is None or not isinstance(v, float) or math.isfinite(v)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_random_overrides_only_nasprune_errors(data):
    try:
        cfg = load_config(TrainConfig, overrides=data)
    except NaspruneError as exc:
        assert str(exc)
        return
    _assert_faithful(cfg, data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["train", *FIELDS]), values, max_size=5))
def test_random_yaml_files_only_nasprune_errors(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        cfg = load_config(TrainConfig, path)
    except NaspruneError:
        return
    section = data.get("train", data)
    _assert_faithful(cfg, section)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_random_yaml_text_only_nasprune_errors(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("txt") / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = load_config(TrainConfig, path)
    except NaspruneError:
        return
    assert isinstance(cfg, TrainConfig)
    assert to_dict(cfg).keys() == set(FIELDS)
