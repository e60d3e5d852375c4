"""The experiment config: which model, data, budget, fine-tuning and methods to compare.

``ExperimentConfig`` is loaded with :func:`nasprune.config.load_config` (dataclass defaults <
YAML file < CLI flags; unknown keys and names are rejected with a "did you mean"). A method
is a plain name (``uniform``, ``nas:evolution``) or a mapping ``{method: NAME, name: LABEL,
...options}`` whose options override that method's settings section for this entry only,
so one config can compare e.g. ``nas:evolution`` at 20 and at 80 trials.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from nasprune.config import (
    _kw,
    _list,
    _merge,
    _nest,
    _registry_names,
    from_dict,
    load_config,
    to_dict,
)
from nasprune.errors import NaspruneError
from nasprune.experiment._fingerprint import baseline_settings, fingerprint, shared_settings
from nasprune.experiment.settings import (
    SECTIONS,
    BaselineSettings,
    FinetuneSettings,
    LatencySettings,
    LayerSettings,
    SearchSettings,
    SensitivitySettings,
    SlimmingSettings,
    ThresholdSettings,
)
from nasprune.registry import did_you_mean

# The classic methods; ``nas:<strategy>`` adds one per search strategy.
CLASSIC_METHODS = ("unpruned", "threshold", "sensitivity", "uniform", "global", "slimming",
                   "layer")
DEFAULT_METHODS = [*CLASSIC_METHODS, "nas:evolution", "nas:rl"]


@dataclass
class ExperimentConfig:
    """One comparison: every method gets this budget, fine-tuning, splits and seeds."""

    SECTION: ClassVar[str] = "experiment"

    name: str = "experiment"
    note: str = ""
    model: str = _kw("digitscnn", choices=_registry_names("nasprune.models", "MODELS"))
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # a saved model instead of training `model`
    data: str = _kw("digits", choices=_registry_names("nasprune.data", "DATASETS"))
    data_dir: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    # A user's task (module:factory or file.py:factory, see nasprune.task_loader) in place
    # of `data`; its model (or `checkpoint` loaded into it) is the unpruned model.
    task: str | None = None
    task_args: dict[str, Any] = field(default_factory=dict)
    budget: float = _kw(0.5, gt=0.0, max=1.0)  # fraction of the unpruned model's MACs
    criterion: str = _kw("l1", choices=_registry_names("nasprune.pruning", "CRITERIA"))
    round_to: int | None = _kw(None, min=1)
    seeds: list[int] = _list([0])
    device: str | None = None  # None: CUDA when available
    threads: int | None = _kw(None, min=1)  # torch intra-op threads (None: torch's default)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    sensitivity: SensitivitySettings = field(default_factory=SensitivitySettings)
    slimming: SlimmingSettings = field(default_factory=SlimmingSettings)
    layer: LayerSettings = field(default_factory=LayerSettings)
    threshold: ThresholdSettings = field(default_factory=ThresholdSettings)
    latency: LatencySettings = field(default_factory=LatencySettings)
    methods: list[str | dict[str, Any]] = _list(DEFAULT_METHODS)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise NaspruneError("experiment.seeds must name at least one seed")
        if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise NaspruneError(f"experiment.seeds must be distinct integers ≥ 0, got "
                                f"{self.seeds}")
        for lv in self.sensitivity.levels:
            if not 0.0 < lv < 1.0:
                raise NaspruneError(f"experiment.sensitivity.levels must be in (0, 1), "
                                    f"got {lv}")
        if self.task is not None:
            from nasprune.task_loader import split_spec

            split_spec(self.task)  # a malformed path fails before anything runs
        elif self.task_args:
            raise NaspruneError("experiment.task_args needs experiment.task (module:factory)")
        if not self.methods:
            raise NaspruneError("experiment.methods is empty: name at least one method")
        resolve_methods(self)  # every name and option checked before anything runs


@dataclass
class MethodSpec:
    """One resolved entry of ``methods``: its label, kind and effective settings."""

    name: str  # label in the table (unique)
    kind: str  # a classic method name or "nas"
    strategy: str | None  # the search strategy for kind "nas"
    settings: Any  # the method's settings section with per-entry options applied
    slug: str  # directory name under methods/

    @property
    def method(self) -> str:
        return f"nas:{self.strategy}" if self.kind == "nas" else self.kind

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "method": self.method}
        if self.settings is not None:
            out["settings"] = to_dict(self.settings)
        return out


def _strategies() -> list[str]:
    from nasprune.search.strategies import strategy_names

    return strategy_names()


def _check_method(method: str) -> tuple[str, str | None]:
    """``(kind, strategy)`` of a method name, or a NaspruneError with a did-you-mean."""
    from nasprune.methods import METHODS

    if method.startswith("nas:"):
        from nasprune.search.strategies import check_strategy

        strategy = method[4:]
        check_strategy(strategy)
        return "nas", strategy
    if method == "nas":
        raise NaspruneError(f"method 'nas' needs a search strategy: nas:<strategy>, e.g. "
                            f"nas:evolution (strategies: {', '.join(_strategies())})")
    if method in METHODS:
        return method, None
    choices = [m for m in METHODS.names() if m != "nas"] + [f"nas:{s}" for s in _strategies()]
    raise NaspruneError(f"unknown method '{method}' in experiment.methods: "
                        f"{did_you_mean(method, choices)}")


def slugify(name: str) -> str:
    """A safe directory name for a method label (``nas:rl`` → ``nas-rl``)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace(":", "-")).strip("-.")
    return slug[:80] or "method"


def resolve_methods(cfg: ExperimentConfig) -> list[MethodSpec]:
    """The config's methods as :class:`MethodSpec` (names unique, options validated)."""
    specs: list[MethodSpec] = []
    for i, entry in enumerate(cfg.methods):
        where = f"experiment.methods[{i}]"
        if isinstance(entry, str):
            method, label, options = entry, entry, {}
        else:
            options = dict(entry)
            method = options.pop("method", None)
            if not isinstance(method, str):
                raise NaspruneError(f"{where} needs 'method: NAME' (e.g. method: nas:evolution)")
            label = options.pop("name", method)
            if not isinstance(label, str) or not label.strip():
                raise NaspruneError(f"{where}.name must be a non-empty string")
        kind, strategy = _check_method(method)
        section = SECTIONS.get(kind)
        if section is None:
            if options:
                raise NaspruneError(f"{where}: method '{method}' takes no options, got "
                                    f"{', '.join(sorted(options))}")
            settings = None
        else:
            base = to_dict(getattr(cfg, section))
            base.update(options)
            settings = from_dict(type(getattr(cfg, section)), base, where)
        specs.append(MethodSpec(label, kind, strategy, settings, slugify(label)))
    seen: dict[str, str] = {}
    for s in specs:
        if s.slug in seen:
            raise NaspruneError(
                f"two methods share the name '{s.name}'"
                + ("" if seen[s.slug] == s.name else f" (as a directory: '{seen[s.slug]}')")
                + ": give one of them 'name: ...'")
        seen[s.slug] = s.name
    return specs


# ---- finding and loading configs -------------------------------------------------

def bundled_configs() -> list[str]:
    """Names of the example configs shipped in ``nasprune/configs``."""
    folder = resources.files("nasprune") / "configs"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def find_config(name_or_path: str | os.PathLike) -> Path:
    """A config file path: an existing file, or the name of a bundled example config."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    name = str(name_or_path)
    stem = name[:-5] if name.endswith(".yaml") else name
    if stem in bundled_configs():
        return Path(str(resources.files("nasprune") / "configs" / f"{stem}.yaml"))
    if p.exists():
        raise NaspruneError(f"config '{name}' is not a file")
    hint = did_you_mean(stem, bundled_configs()) if bundled_configs() else ""
    raise NaspruneError(f"config file '{name}' does not exist and is not a bundled example "
                        f"config ({hint})")


def load_experiment_config(config: ExperimentConfig | dict | str | os.PathLike | None = None,
                           overrides: dict | None = None) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a config object, a plain dict, a path or a name."""
    if isinstance(config, ExperimentConfig):
        if not overrides:
            return config
        config = to_dict(config)
    if isinstance(config, dict):
        data = config.get("experiment", config) if isinstance(
            config.get("experiment"), dict) else config
        return from_dict(ExperimentConfig, _merge(data, _nest(overrides)), "experiment")
    path = None if config is None else find_config(config)
    return load_config(ExperimentConfig, path, overrides)


__all__ = ["CLASSIC_METHODS", "DEFAULT_METHODS", "SECTIONS", "BaselineSettings",
           "ExperimentConfig", "FinetuneSettings", "LatencySettings", "LayerSettings",
           "MethodSpec", "SearchSettings", "SensitivitySettings", "SlimmingSettings",
           "ThresholdSettings", "baseline_settings", "bundled_configs", "find_config",
           "fingerprint", "load_experiment_config", "resolve_methods", "shared_settings",
           "slugify"]
