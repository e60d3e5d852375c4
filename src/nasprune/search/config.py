"""``SearchConfig``: what ``nasprune search`` searches, typed and validated.

Defaults < a YAML file (a ``search:`` section or flat keys) < command-line flags, through
:func:`nasprune.config.load_config`, so a bad key, type or value is one clear error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from nasprune.config import _kw, _registry_names

# The default search strategy, chosen by measurement: on the shared ResNet-20 the GP
# reached the best proxy per CPU-minute at 50 % and 30 % of the MACs, and the best
# fine-tuned accuracy (BENCHMARKS.md, "Search strategies on the shared ResNet-20").
DEFAULT_STRATEGY = "bayes"


def _strategy_names() -> list[str]:
    from nasprune.search.strategies import strategy_names

    return strategy_names()


def _space_names() -> list[str]:
    from nasprune.search.spaces import space_names

    return space_names()


def _model_names() -> list[str]:
    from nasprune.models import MODELS

    return MODELS.names()


def _data_names() -> list[str]:
    from nasprune.data import DATASETS

    return DATASETS.names()


@dataclass
class SearchConfig:
    """One search: model or checkpoint, data, strategy, budget, trials, storage, evaluator."""

    SECTION: ClassVar[str] = "search"

    model: str | None = _kw(None, choices=_model_names)  # untrained zoo model (mechanics)
    checkpoint: str | None = None  # a saved model (what you normally search)
    data: str | None = _kw(None, choices=_data_names)  # None: the checkpoint's data set
    data_dir: str | None = None
    task: str | None = None  # a user's task, module:function or file.py:function
    task_args: dict[str, Any] = field(default_factory=dict)  # its keyword arguments
    strategy: str = _kw(DEFAULT_STRATEGY, choices=_strategy_names)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    space: str = _kw("per-group", choices=_space_names)  # or "stage": one ratio per stage
    target_macs: float | None = _kw(None, gt=0.0, max=1.0)
    target_params: float | None = _kw(None, gt=0.0, max=1.0)
    target_latency_ms: float | None = _kw(None, gt=0.0)
    target_speedup: float | None = _kw(None, min=1.0)  # times faster than the unpruned model
    runtime: str = _kw("torch", choices=lambda: ["torch", "torch-compile", "onnxruntime"])
    latency_threads: int = _kw(1, min=1)
    latency_batch: int = _kw(1, min=1)
    allow_miss: bool = False  # exit 0 even when the delivered network misses the target
    trials: int = _kw(50, min=1)
    storage: str | None = None
    study: str | None = None
    objective: Literal["single", "multi"] = "single"
    min_keep: float = _kw(0.1, gt=0.0, max=1.0)
    max_keep: float = _kw(1.0, gt=0.0, max=1.0)
    round_to: int | None = _kw(None, min=1)
    bn_batches: int = _kw(20, min=0)
    val_size: int = _kw(1000, min=1)
    finetune_steps: int = _kw(0, min=0)
    # How the proxy fine-tunes (steps or rungs): SGD at 0.01 suits CNNs; a Transformer
    # fine-tunes with AdamW (lr: the optimizer's default unless given) and distillation.
    finetune_optimizer: str = _kw("sgd",
                                  choices=_registry_names("nasprune.train.optim", "OPTIMIZERS"))
    finetune_lr: float | None = _kw(None, gt=0.0)
    distill: bool = False
    # Multi-fidelity: "VAL_SIZE:STEPS,..." (None or "off": one fidelity; "auto": on when the
    # budget wrecks the warm start's networks). Quote one rung in YAML ('1000:50'):
    # unquoted, YAML 1.1 reads 1000:50 as a base-60 number.
    rungs: str | None = "auto"
    rungs_eta: float = _kw(3.0, gt=1.0)  # the best 1/eta of each rung advance
    check_proxy: int = _kw(0, min=0)  # candidates to fine-tune for the proxy check (0: skip)
    check_proxy_epochs: float = _kw(1.0, gt=0.0)
    seed: int = _kw(0, min=0)
    warm_start: bool = True  # first evaluate the zero-search baselines (--no-warm-start: off)
    device: str | None = None
    out: str = "search.json"
