"""The settings sections of an experiment config: the baseline's training, the common
fine-tuning, each method's options and the latency timing.

Each is a dataclass validated by :func:`nasprune.config.from_dict`; a method entry's options
override its section (:data:`SECTIONS`) for that entry only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nasprune.config import _kw, _list, _registry_names


@dataclass
class BaselineSettings:
    """How the unpruned model is trained when the config names a registered model."""

    epochs: int = _kw(10, min=0)
    optimizer: str = _kw("sgd", choices=_registry_names("nasprune.train.optim", "OPTIMIZERS"))
    lr: float | None = _kw(None, gt=0.0)
    weight_decay: float = _kw(5e-4, min=0.0)
    schedule: str = _kw("cosine",
                        choices=_registry_names("nasprune.train.schedule", "SCHEDULES"))
    batch_size: int = _kw(128, min=1)
    augment: bool = True


@dataclass
class FinetuneSettings:
    """The one fine-tuning recipe every pruned model gets (``nasprune.finetune``)."""

    epochs: int = _kw(5, min=0)
    optimizer: str = _kw("sgd", choices=_registry_names("nasprune.train.optim", "OPTIMIZERS"))
    lr: float | None = _kw(None, gt=0.0)  # None: a tenth of the optimizer's default
    weight_decay: float = _kw(5e-4, min=0.0)
    schedule: str = _kw("cosine",
                        choices=_registry_names("nasprune.train.schedule", "SCHEDULES"))
    batch_size: int = _kw(128, min=1)
    augment: bool = True
    distill: bool = False  # knowledge distillation from the unpruned model
    # BatchNorm statistics re-estimated on this many training batches before fine-tuning
    # (adaptive BN, as the search's evaluator does): a short fine-tune otherwise spends its
    # steps repairing statistics that belong to the unpruned network. 0: off.
    bn_batches: int = _kw(20, min=0)
    kd_temperature: float = _kw(4.0, gt=0.0)
    kd_weight: float = _kw(0.9, min=0.0, max=1.0)


@dataclass
class SearchSettings:
    """``nas:<strategy>`` methods: ``nasprune.search`` at the experiment's budget."""

    trials: int = _kw(40, min=1)
    objective: str = _kw("single", choices=lambda: ["single", "multi"])
    bn_batches: int = _kw(20, min=0)
    val_size: int = _kw(1000, min=1)
    min_keep: float = _kw(0.1, gt=0.0, max=1.0)
    space: str = _kw("per-group", choices=_registry_names("nasprune.search.spaces", "SPACES"))
    # Multi-fidelity rungs ("1000:0,4000:30"; None or "off": one fidelity; "auto": on when the
    # budget wrecks the warm start's networks), see nasprune.search.rungs.
    rungs: str | None = "auto"
    # A speed-up over the unpruned model on the experiment's latency runtime (batch 1,
    # latency.threads), besides the MACs budget; widths measured on that runtime unless
    # round_to is set, and the delivered network verified there (nasprune.search.verify).
    speedup: float | None = _kw(None, min=1.0)
    options: dict[str, Any] = field(default_factory=dict)  # strategy options

    def __post_init__(self) -> None:
        from nasprune.search.rungs import as_rungs

        as_rungs(self.rungs, auto=True)  # a malformed text is a config error now, not after baseline


@dataclass
class SensitivitySettings:
    """``sensitivity``: per-group analysis, then ratios meeting the budget."""

    levels: list[float] = _list([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    bn_batches: int = _kw(10, min=0)
    val_size: int | None = _kw(None, min=1)


@dataclass
class SlimmingSettings:
    """``slimming``: continue training with L1 on BatchNorm γ, then cut by |γ|."""

    epochs: int = _kw(5, min=0)
    bn_l1: float = _kw(3e-2, min=0.0)
    max_ratio: float = _kw(0.9, gt=0.0, lt=1.0)


@dataclass
class LayerSettings:
    """``layer``: remove residual blocks, then channels uniformly for the rest."""

    criterion: str = _kw("output_norm", choices=lambda: ["output_norm", "sensitivity"])
    max_fraction: float = _kw(0.5, min=0.0, max=1.0)  # of the removable blocks


@dataclass
class ThresholdSettings:
    """``threshold``: unstructured magnitude pruning to the budget in sparse MACs."""

    scope: str = _kw("global", choices=lambda: ["global", "layer"])


@dataclass
class LatencySettings:
    """Latency measured for every method at batch 1 and ``batch``, interleaved with the
    unpruned model over ``rounds`` rounds of ``repeats`` timed runs."""

    batch: int = _kw(64, min=1)
    rounds: int = _kw(3, min=1)
    warmup: int = _kw(3, min=0)
    repeats: int = _kw(10, min=1)
    threads: int | None = _kw(1, min=1)  # CPU threads while timing: 1 is steadier when shared
    # torch (eager) or onnxruntime (CPU provider): where the speed-up column is measured.
    runtime: str = _kw("torch", choices=lambda: ["torch", "onnxruntime"])


# Which settings section a method's per-entry options override.
SECTIONS: dict[str, str] = {
    "sensitivity": "sensitivity", "slimming": "slimming", "layer": "layer",
    "threshold": "threshold", "nas": "search",
}


__all__ = ["SECTIONS", "BaselineSettings", "FinetuneSettings", "LatencySettings",
           "LayerSettings", "SearchSettings", "SensitivitySettings", "SlimmingSettings",
           "ThresholdSettings"]
