"""Head-to-head benchmark: Torch-Pruning's own pruner vs nasprune's methods at one budget.

For one trained baseline and one MACs budget, every method below gets the same data
splits, seed, adaptive-BN step and fine-tuning recipe (nasprune's experiment runner,
:func:`nasprune.experiment`, runs them all), and is measured the same way:

* ``tp-uniform`` — Torch-Pruning's ``tp.pruner.MetaPruner`` with
  ``tp.importance.MagnitudeImportance(p=1)`` (L1) and one ``pruning_ratio`` for every
  layer, the final classifier in ``ignored_layers``: Torch-Pruning's documented recipe.
* ``tp-global`` — the same with ``global_pruning=True`` (one ranking across layers).
* ``tp-isomorphic`` — ``global_pruning=True, isomorphic=True``: Torch-Pruning's isomorphic
  pruning (ECCV 2024), which ranks each group only against groups of the same structure.
  For both, ``pruning_ratio`` is bisected until the pruned model's MACs are at the budget:
  the closest of the two bracketing ratios, never more than 1 % over it.
* nasprune's ``uniform``, ``global``, ``sensitivity`` and the searched ``nas:<strategy>``
  (evolution, bayes, rl by default), exactly as ``nasprune experiment`` runs them;
  ``nas:<strategy>@rungs`` is the same search scored in multi-fidelity rungs (``--rungs``),
  ``nas:<strategy>@<X>x`` the same search asked for an X-fold speed-up on
  ``--latency-runtime`` besides the MACs budget (``--budget 1`` for the speed-up alone),
  ``nas:<strategy>@blocks`` (or ``@stage``) the same search in that space; suffixes combine.

Per method: test top-1, MACs, params, latency at batch 1 and 128 (on the run's device;
on CUDA runs the CPU latency too), search time and fine-tune time. The table is written
to ``<out>/peers.md`` and ``<out>/peers.json`` and, with ``--append BENCHMARKS.md``, into
that file (replacing an earlier table of the same protocol) with the command, machine,
date and versions.

Protocols (``--protocol``) are presets; any flag overrides them::

    # CPU (~1 h on 2 cores): ResNet-20, CIFAR-10 from the shared JPEG tarball, 50 % MACs
    nice .venv/bin/python bench/peers.py --protocol cpu --append BENCHMARKS.md
    # GPU: ResNet-56, 200-epoch baseline, 40-epoch fine-tune, 50 % MACs
    .venv/bin/python bench/peers.py --protocol gpu --append BENCHMARKS.md

The baseline is trained once with the same code as ``nasprune train`` and cached in
``runs/peers/<model>-<data>-e<epochs>`` (``--checkpoint DIR`` uses a saved model instead).
Finished methods are kept in ``<out>/experiment`` and skipped when the command is run
again; ``--deadline-minutes`` stops starting new methods after that long, and
``--report-only`` writes the table from whatever has finished (labelled partial), without
recomputing anything; ``--combine DIR DIR ...`` prints earlier runs (e.g. two seeds) side by
side.

``--train-subset N`` fine-tunes every method on the same seeded N-image subset of the
training split (the data set registered here as ``train-subset``): the baseline, the
search's validation split and the test split are untouched. It exists to fit the CPU
budget. This script is the one place besides ``nasprune.pruning.graph``/``structured``
that imports ``torch_pruning``: it benchmarks it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))
if str(HERE) not in sys.path:  # its sibling fastnas.py, also when imported by the tests
    sys.path.insert(0, str(HERE))

from nasprune.errors import NaspruneError  # noqa: E402

SHARED_TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
MAC_TOLERANCE = 0.01  # Torch-Pruning's result must be within 1 % of the MACs budget
TP_METHODS = ("tp-uniform", "tp-global", "tp-isomorphic")
DEFAULT_METHODS = ["unpruned", "tp-uniform", "tp-global", "uniform", "global",
                   "sensitivity", "nas:evolution", "nas:bayes", "nas:rl"]

# The two protocols of issue 7. Baseline recipe keys follow `nasprune train`'s flags.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "cpu": {
        # 2 shared CPU cores, about an hour: a short baseline, a 1-epoch fine-tune on a
        # 5,000-image subset, 24-trial searches scored on 500 val images.
        "model": "resnet20", "data": "cifar10", "budget": 0.5, "seed": 0,
        "device": "cpu", "threads": 1,  # measured: 1 thread ~5x faster than 2 at load ~11
        "baseline_epochs": 5, "baseline_lr": 0.1, "baseline_wd": 5e-4,
        "baseline_schedule": "cosine", "batch_size": 128,
        "finetune_epochs": 1, "finetune_lr": 0.01, "finetune_wd": 5e-4,
        "finetune_schedule": "cosine", "train_subset": 5_000,
        "trials": 24, "val_size": 500, "bn_batches": 10,
        "sensitivity_levels": [0.2, 0.4, 0.6, 0.8],
        "latency_warmup": 2, "latency_repeats": 5, "latency_threads": 1,
        # Most telling first: if the hour runs out, what is missing is the least needed.
        "methods": ["unpruned", "tp-uniform", "tp-global", "uniform", "global",
                    "nas:evolution", "nas:bayes", "nas:rl", "sensitivity"],
    },
    "gpu": {
        # The published ResNet-56 setting: 93 %+ baseline, ≥ 30 fine-tuning epochs, 50 %.
        "model": "resnet56", "data": "cifar10", "budget": 0.5, "seed": 0,
        "device": None, "threads": None,
        "baseline_epochs": 200, "baseline_lr": 0.1, "baseline_wd": 5e-4,
        "baseline_schedule": "cosine", "batch_size": 128,
        "finetune_epochs": 40, "finetune_lr": 0.01, "finetune_wd": 5e-4,
        "finetune_schedule": "cosine", "train_subset": None,
        "trials": 200, "val_size": 2000, "bn_batches": 20,
        "sensitivity_levels": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        "latency_warmup": 10, "latency_repeats": 50, "latency_threads": 1,
        "methods": [*DEFAULT_METHODS, "nas:tpe", "nas:random"],
    },
}


@dataclass
class Settings:
    """Everything one peers run depends on (a protocol preset with the flags applied)."""

    protocol: str = "cpu"
    model: str = "resnet20"
    data: str = "cifar10"
    data_dir: str | None = None
    checkpoint: str | None = None
    budget: float = 0.5
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    baseline_epochs: int = 5
    baseline_lr: float = 0.1
    baseline_wd: float = 5e-4
    baseline_schedule: str = "cosine"
    batch_size: int = 128
    finetune_epochs: int = 1
    finetune_lr: float = 0.01
    finetune_wd: float = 5e-4
    finetune_schedule: str = "cosine"
    train_subset: int | None = None
    trials: int = 30
    rungs: str = "1000:0,4000:30"  # for the ``nas:<strategy>@rungs`` methods
    val_size: int = 500
    bn_batches: int = 10
    sensitivity_levels: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])
    latency_warmup: int = 2
    latency_repeats: int = 5
    latency_threads: int | None = 1
    latency_runtime: str = "torch"  # where latency is measured and @<X>x targets hold
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    out: str | None = None
    runs: str = "runs/peers"  # where the baseline is cached
    deadline_minutes: float | None = None
    label: str | None = None  # names the BENCHMARKS.md block (default: the protocol)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.runs) / self.protocol

    @property
    def baseline_dir(self) -> Path:
        if self.checkpoint:
            return Path(self.checkpoint)
        return Path(self.runs) / f"{self.model}-{self.data}-e{self.baseline_epochs}-s{self.seed}"


# ---- Torch-Pruning, called the way its users call it ---------------------------------------

def classifier_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The layers producing the class scores, which Torch-Pruning users put in
    ``ignored_layers`` (its README: Linear layers with ``out_features == num_classes``)."""
    with torch.no_grad():
        was = model.training
        model.eval()
        n_out = int(model(example).shape[-1])
        model.train(was)
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == n_out]
    if not found:
        convs = [m for m in model.modules()
                 if isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == n_out]
        found = convs[-1:]
    return found


def tp_prune(model: nn.Module, example: torch.Tensor, ratio: float, global_pruning: bool,
             round_to: int | None = None, isomorphic: bool = False) -> nn.Module:
    """A pruned copy of ``model``: ``tp.pruner.MetaPruner`` + L1 magnitude, one step."""
    import torch_pruning as tp

    net = copy.deepcopy(model).eval()
    pruner = tp.pruner.MetaPruner(
        net, example, importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=float(ratio), global_pruning=global_pruning,
        ignored_layers=classifier_layers(net, example), round_to=round_to,
        isomorphic=isomorphic,
    )
    pruner.step()
    return net


def tp_to_budget(model: nn.Module, example: torch.Tensor, budget: float,
                 global_pruning: bool, round_to: int | None = None, steps: int = 14,
                 tolerance: float = MAC_TOLERANCE,
                 isomorphic: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Torch-Pruning at ``budget`` (a fraction of the MACs): ``pruning_ratio`` bisected.

    Returns the pruned model closest to the budget among the two ratios that bracket it,
    provided it is at most ``tolerance`` over (otherwise the one under it), and a record
    of the ratio, the MACs by our count and by ``tp.utils.count_ops_and_params``, and
    whether it is within ``tolerance`` of the budget.
    """
    import torch_pruning as tp

    from nasprune.metrics import count_macs

    base = count_macs(model, example)
    target = budget * base
    cache: dict[float, tuple[nn.Module, int]] = {}

    def make(r: float) -> tuple[nn.Module, int]:
        if r not in cache:
            m = tp_prune(model, example, r, global_pruning, round_to, isomorphic)
            cache[r] = (m, count_macs(m, example))
        return cache[r]

    lo, hi = 0.0, 0.95
    if make(hi)[1] > target:
        raise NaspruneError(f"Torch-Pruning cannot reach {budget:.0%} of the MACs: at "
                            f"pruning_ratio {hi} the model keeps {make(hi)[1] / base:.1%}")
    if make(lo)[1] <= target:
        hi = lo
    for _ in range(steps):  # invariant: MACs(lo) > target >= MACs(hi)
        if hi - lo < 1e-5:
            break
        mid = (lo + hi) / 2
        if make(mid)[1] <= target:
            hi = mid
        else:
            lo = mid
    under, over = make(hi), make(lo)
    pick, ratio = under, hi
    if over[1] <= target * (1 + tolerance) and abs(over[1] - target) < abs(under[1] - target):
        pick, ratio = over, lo
    net, macs = pick
    tp_macs, tp_params = tp.utils.count_ops_and_params(net, example)
    info = {
        "library": f"torch-pruning {tp.__version__}",
        "pruner": "tp.pruner.MetaPruner", "importance": "MagnitudeImportance(p=1)",
        "global_pruning": global_pruning, "isomorphic": isomorphic,
        "pruning_ratio": ratio, "round_to": round_to,
        "macs": int(macs), "macs_fraction": macs / base, "budget": budget,
        "off_budget": macs / target - 1.0,
        "within_tolerance": abs(macs / target - 1.0) <= tolerance,
        "tp_count_ops": int(tp_macs), "tp_count_params": int(tp_params),
        "bisection_steps": len(cache),
    }
    return net, info


def _register() -> None:
    """Torch-Pruning as experiment methods, and the train-subset data set (idempotent)."""
    from nasprune.data.registry import DATASETS, load_dataset, register_dataset
    from nasprune.methods import METHODS, Context, Pruned, register_method

    def tp_method(global_pruning: bool, isomorphic: bool = False):
        kind = ("isomorphic ranking" if isomorphic else
                "global ranking" if global_pruning else "uniform ratio")

        def method(ctx: Context) -> Pruned:
            start = time.perf_counter()
            net, info = tp_to_budget(ctx.model, ctx.example, ctx.cfg.budget, global_pruning,
                                     ctx.cfg.round_to, isomorphic=isomorphic)
            if not info["within_tolerance"]:
                print(f"warning: Torch-Pruning ({kind}) ends {info['off_budget']:+.2%} off "
                      "the MACs budget", file=sys.stderr)
            info["note"] = f"Torch-Pruning MetaPruner, L1, {kind} {info['pruning_ratio']:.4f}"
            # Recorded like nasprune's own pruned models, so reports and `load` read it.
            net.nasprune_pruning = {"method": "torch-pruning", "criterion": "l1",
                                    "ratios": None, "round_to": ctx.cfg.round_to}
            return Pruned(net, search_seconds=time.perf_counter() - start, info=info)

        return method

    if "tp-uniform" not in METHODS:
        register_method("tp-uniform")(tp_method(False))
    if "tp-global" not in METHODS:
        register_method("tp-global")(tp_method(True))
    if "tp-isomorphic" not in METHODS:
        register_method("tp-isomorphic")(tp_method(True, isomorphic=True))

    import fastnas  # NVIDIA ModelOpt FastNAS, where its benchmark environment has it

    fastnas.register()

    if "train-subset" not in DATASETS:
        @register_dataset("train-subset")
        def train_subset(root: str | None = None, seed: int = 0, base: str = "cifar10",
                         n: int = 10_000, subset_seed: int = 0, **options: Any):
            """``base`` with its training split cut to a seeded ``n``-image subset."""
            data = load_dataset(base, root=root, seed=seed, **options)
            sub = data.train.subset(int(n), seed=int(subset_seed))
            return dataclasses.replace(data, train=sub, meta={
                **data.meta, "train_subset": len(sub), "train_full": len(data.train),
                "subset_seed": int(subset_seed)})


_register()
if "fastnas" in __import__("nasprune.methods", fromlist=["METHODS"]).METHODS:
    # Run where ModelOpt imports (bench/fastnas_env.sh): the maintained search-based peer.
    DEFAULT_METHODS.insert(3, "fastnas")
    for _p in PROTOCOLS.values():
        _p["methods"].insert(3, "fastnas")


# ---- settings, baseline --------------------------------------------------------------------

def resolve_data_dir(data: str, data_dir: str | None) -> str | None:
    """``data_dir`` as given, else CIFAR-10's prepared tree or the shared tarball."""
    if data_dir is not None or data != "cifar10":
        return data_dir
    for candidate in (ROOT / "data" / "cifar10", SHARED_TARBALL):
        if candidate.exists():
            return str(candidate)
    return None


def settings_from(protocol: str, **overrides: Any) -> Settings:
    """The protocol's preset with ``overrides`` (None values are ignored) applied."""
    if protocol not in PROTOCOLS:
        raise NaspruneError(f"unknown protocol '{protocol}': choose from "
                            f"{', '.join(PROTOCOLS)}")
    values = {**copy.deepcopy(PROTOCOLS[protocol]), "protocol": protocol}
    values.update({k: v for k, v in overrides.items() if v is not None})
    s = Settings(**values)
    s.data_dir = resolve_data_dir(s.data, s.data_dir)
    if not 0.0 < s.budget <= 1.0:
        raise NaspruneError(f"--budget must be a fraction of the MACs in (0, 1], got {s.budget}")
    if s.train_subset is not None and s.train_subset < 1:
        raise NaspruneError(f"--train-subset must be a positive image count, got "
                            f"{s.train_subset}")
    return s


def train_command(s: Settings) -> str:
    """The ``nasprune train`` command that trains the same baseline."""
    parts = ["nasprune", "train", "--model", s.model, "--data", s.data]
    if s.data_dir:
        parts += ["--data-dir", s.data_dir]
    parts += ["--epochs", str(s.baseline_epochs), "--optimizer", "sgd", "--lr",
              str(s.baseline_lr), "--weight-decay", str(s.baseline_wd), "--schedule",
              s.baseline_schedule, "--batch-size", str(s.batch_size), "--seed", str(s.seed)]
    if s.device:
        parts += ["--device", s.device]
    if s.threads:
        parts += ["--threads", str(s.threads)]
    parts += ["--out", str(s.baseline_dir)]
    return shlex.join(parts)


def _baseline_matches(s: Settings, folder: Path) -> bool:
    """A cached ``nasprune train`` run in ``folder`` made with this recipe."""
    from nasprune.experiment.runner import read_json

    doc = read_json(folder / "results.json")
    if not (folder / "spec.json").exists() or not isinstance(doc, dict):
        return False
    c = doc.get("config") or {}
    want = {"model": s.model, "data": s.data, "epochs": s.baseline_epochs, "optimizer": "sgd",
            "lr": s.baseline_lr, "weight_decay": s.baseline_wd,
            "schedule": s.baseline_schedule, "batch_size": s.batch_size, "seed": s.seed}
    return all(c.get(k) == v for k, v in want.items())


def ensure_baseline(s: Settings, progress: bool = True) -> Path:
    """The baseline checkpoint: ``--checkpoint``, a matching cached run, or trained now.

    Training uses ``nasprune.cli.train`` — the code behind ``nasprune train`` — with the
    protocol's recipe, and saves what that command saves (checkpoint, config.yaml,
    results.json).
    """
    folder = s.baseline_dir
    if s.checkpoint:
        if not (folder / "spec.json").exists():
            raise NaspruneError(f"--checkpoint '{folder}' holds no saved model (spec.json)")
        return folder
    if _baseline_matches(s, folder):
        _log(progress, f"baseline: reusing {folder}")
        return folder
    from nasprune.cli.train import save_run, train_from_config
    from nasprune.config import TrainConfig

    cfg = TrainConfig(model=s.model, data=s.data, data_dir=s.data_dir,
                      epochs=s.baseline_epochs, batch_size=s.batch_size, optimizer="sgd",
                      lr=s.baseline_lr, weight_decay=s.baseline_wd,
                      schedule=s.baseline_schedule, seed=s.seed, device=s.device,
                      out=str(folder))
    _log(progress, f"baseline: training, same as `{train_command(s)}`")
    run = train_from_config(cfg, progress=progress)
    save_run(run, folder)
    _log(progress, f"baseline: test top-1 {run.test['top1']:.2%} in "
                   f"{run.fit.train_seconds:.0f} s -> {folder}")
    return folder


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- the experiment ------------------------------------------------------------------------

def experiment_config(s: Settings, checkpoint: Path, methods: list[str] | None = None
                      ) -> dict[str, Any]:
    """The ``nasprune experiment`` config of this run (every method, same recipe)."""
    data, options = s.data, {}
    if s.train_subset:
        data, options = "train-subset", {"base": s.data, "n": s.train_subset,
                                         "subset_seed": s.seed}
    return {
        "name": f"peers-{s.protocol}",
        "note": f"bench/peers.py --protocol {s.protocol}: Torch-Pruning vs nasprune",
        "model": s.model, "checkpoint": str(checkpoint), "data": data,
        "data_dir": s.data_dir, "data_options": options, "budget": s.budget,
        "criterion": "l1", "seeds": [s.seed], "device": s.device, "threads": s.threads,
        "finetune": {"epochs": s.finetune_epochs, "optimizer": "sgd", "lr": s.finetune_lr,
                     "weight_decay": s.finetune_wd, "schedule": s.finetune_schedule,
                     "batch_size": s.batch_size, "augment": True, "distill": False,
                     "bn_batches": 20},
        "search": {"trials": s.trials, "bn_batches": s.bn_batches, "val_size": s.val_size},
        "sensitivity": {"levels": list(s.sensitivity_levels), "bn_batches": s.bn_batches,
                        "val_size": s.val_size},
        "latency": {"batch": 128, "warmup": s.latency_warmup, "repeats": s.latency_repeats,
                    "threads": s.latency_threads, "runtime": s.latency_runtime},
        "methods": [_method_entry(m, s) for m in (methods if methods is not None
                                                  else s.methods)],
    }


def _method_entry(method: str, s: Settings) -> str | dict[str, Any]:
    """An experiment method entry. ``nas:<strategy>`` takes ``@`` suffixes, each row one of
    its own: ``@rungs`` scores in ``s.rungs`` (multi-fidelity), ``@<X>x`` also asks for an
    X-fold speed-up on the latency runtime, ``@<space>`` searches that space (``@blocks``,
    ``@stage``); e.g. ``nas:bayes@2x@blocks``."""
    if not method.startswith("nas:") or "@" not in method:
        return method
    from nasprune.search.spaces import SPACES

    base, *suffixes = method.split("@")
    entry: dict[str, Any] = {"method": base, "name": method}
    for suffix in suffixes:
        if suffix == "rungs":
            entry["rungs"] = s.rungs
        elif suffix in SPACES:
            entry["space"] = suffix
        elif suffix.endswith("x") and (speedup := _number(suffix[:-1])) is not None:
            entry["speedup"] = speedup
        else:
            raise NaspruneError(f"{method!r}: '@{suffix}' is not @rungs, a speed-up such as "
                                f"@2x, or a space ({', '.join(SPACES)}): nas:<strategy>@<X>x, "
                                "e.g. nas:bayes@2x")
    return entry


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def run_methods(s: Settings, checkpoint: Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every method, one experiment call each, until the deadline.

    One call per method keeps each finished method on disk as soon as it is done, and
    lets a deadline stop before the next method rather than in the middle of one.
    """
    from nasprune.experiment import experiment

    exp_dir = s.out_dir / "experiment"
    start = time.perf_counter()
    done, skipped = [], []
    for method in s.methods:
        minutes = (time.perf_counter() - start) / 60
        if s.deadline_minutes is not None and minutes >= s.deadline_minutes:
            skipped.append(method)
            continue
        _log(progress, f"{method}: starting ({minutes:.1f} min in)")
        res = experiment(experiment_config(s, checkpoint, [method]), out_dir=exp_dir,
                         resume=True, progress=progress, report=False)
        (done if not res.failed else skipped).append(method)
    if skipped:
        _log(progress, f"not finished: {', '.join(skipped)}")
    return {"finished": done, "not_finished": skipped, "seconds": time.perf_counter() - start}


def collect(s: Settings, checkpoint: Path, prior: dict[str, dict] | None = None
            ) -> dict[str, Any]:
    """The results of the finished methods, as the peers record's rows.

    A method's row comes from ``prior`` (rows an earlier run of this script recorded in
    ``peers.json``: a report-only call re-renders them instead of mixing in results that
    something else rewrote since) or else from its ``result.json`` in the experiment.
    The experiment's own tables, plots and HTML report are rewritten from the records on
    disk by rendering only: nothing is ever recomputed here.
    """
    from nasprune.experiment.config import load_experiment_config, resolve_methods
    from nasprune.experiment.runner import RESULT_FILE, read_json
    from nasprune.report.html import write_report
    from nasprune.report.plots import make_plots
    from nasprune.report.tables import build_rows, write_tables
    from nasprune.train.device import resolve_device

    exp_dir = s.out_dir / "experiment"
    cfg = load_experiment_config(experiment_config(s, checkpoint))
    baseline = read_json(exp_dir / "baseline" / "baseline.json")
    if not isinstance(baseline, dict):
        raise NaspruneError(f"no finished baseline in '{exp_dir}': run the benchmark first")
    device = resolve_device(s.device).type
    records, rows, missing = [], [], []
    for spec in resolve_methods(cfg):
        rec = read_json(exp_dir / "methods" / spec.slug / RESULT_FILE)
        ok = isinstance(rec, dict) and rec.get("status") == "ok"
        if ok:
            records.append(rec)
        if prior and spec.name in prior:
            rows.append(prior[spec.name])
        elif ok:
            row = build_rows([rec], baseline, cfg)[0]
            row["finetune_epochs"] = s.finetune_epochs if rec.get("finetuned") else 0
            row["latency"] = {device: rec.get("latency")}
            rows.append(row)
        else:
            missing.append(spec.name if not isinstance(rec, dict) else
                           f"{spec.name} (failed: {rec.get('error')})")
    if records:
        write_tables(exp_dir, build_rows(records, baseline, cfg), baseline, cfg)
        make_plots(exp_dir)
        write_report(exp_dir, draw=False)
    return {"rows": rows, "baseline": baseline, "missing": missing, "cfg": cfg}


def cpu_latency(s: Settings, rows: list[dict[str, Any]], exp_dir: Path,
                input_shape: tuple[int, ...]) -> None:
    """On a CUDA run, also time every saved model on the CPU (batch 1 and 128)."""
    from nasprune.checkpoint import load
    from nasprune.metrics import measure_latency

    for row in rows:
        model = load(exp_dir / "methods" / row["dir"] / "model")
        # Capped: a batch of 128 through ResNet-56 takes seconds on one CPU thread.
        table = measure_latency(model, input_shape, batch_sizes=(1, 128), device="cpu",
                                warmup=min(s.latency_warmup, 2),
                                repeats=min(s.latency_repeats, 10),
                                num_threads=s.latency_threads)
        row["latency"]["cpu"] = {str(b): v for b, v in table.items()}


def proxy_scores(s: Settings, checkpoint: Path, rows: list[dict[str, Any]]) -> None:
    """Each method's pruned network scored by the searches' own proxy, before fine-tuning.

    The proxy is the one every ``nas:`` strategy maximised (``nasprune.search.Proxy``:
    BN statistics re-estimated on ``bn_batches`` training batches, then top-1 on
    ``val_size`` validation images, same seed). It tells whether a search beat the
    hand-set ratios on its own objective, separately from what fine-tuning did later.
    Torch-Pruning's networks are rebuilt with their recorded ``pruning_ratio``; nasprune's
    from their per-group ratios; ``unpruned`` is the baseline itself.
    """
    from nasprune.checkpoint import load
    from nasprune.data import load_dataset
    from nasprune.search import Proxy, SearchSpace
    from nasprune.train.device import resolve_device

    cfg = experiment_config(s, checkpoint)
    data = load_dataset(cfg["data"], root=cfg["data_dir"], seed=s.seed, **cfg["data_options"])
    device = resolve_device(s.device)
    model = load(s.out_dir / "experiment" / "baseline" / "model").to(device).eval()
    x = data.example_input(1).to(device)
    space = SearchSpace(model, x)  # the nas methods' space: its min_channels, same rounding
    ev = Proxy(model, data, bn_batches=s.bn_batches, val_size=s.val_size, device=device,
                   example_inputs=x, criterion="l1", round_to=None,
                   min_channels=space.min_channels, seed=s.seed)
    for row in rows:
        info = row.get("info") or {}
        net = None
        if row["method"] in TP_METHODS:
            net = tp_prune(model, x, info["pruning_ratio"], info["global_pruning"],
                           info.get("round_to"), info.get("isomorphic", False)).to(device)
        elif row["method"] == "unpruned":
            net = copy.deepcopy(model)
        if net is not None:
            ev.recalibrate(net)
            row["proxy"] = ev.accuracy(net)
        elif row.get("ratios"):
            row["proxy"] = ev.score(row["ratios"])
        else:
            row["proxy"] = None


def input_shape_of(s: Settings, checkpoint: Path) -> tuple[int, ...]:
    """The baseline's input shape: from its checkpoint meta, else from the data set."""
    from nasprune.checkpoint import read_spec

    meta = (read_spec(checkpoint) or {}).get("meta") or {}
    if isinstance(meta.get("input_shape"), list):
        return tuple(int(v) for v in meta["input_shape"])
    from nasprune.data import load_dataset

    return load_dataset(s.data, root=s.data_dir, seed=s.seed).input_shape


# ---- the table -----------------------------------------------------------------------------

def versions() -> dict[str, str]:
    import optuna
    import torch_pruning as tp

    import nasprune

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch-pruning": tp.__version__, "optuna": optuna.__version__,
            "nasprune": nasprune.__version__}


def machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}), " \
               f"{os.cpu_count()} CPU cores"
    return f"{os.cpu_count()}-core CPU container ({cpu_name()})"


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def comparisons(rows: list[dict[str, Any]], reference: str = "tp-uniform") -> list[str]:
    """One line per method: its top-1 against Torch-Pruning's uniform L1 at the budget."""
    ref = next((r for r in rows if r["method"] == reference), None)
    if ref is None:
        return [f"{reference} did not finish: no comparison against it."]
    out = []
    for r in rows:
        if r["method"] in (reference, "unpruned"):
            continue
        d = 100 * (r["top1"] - ref["top1"])
        verdict = "beats" if d > 0 else ("ties with" if d == 0 else "does NOT beat")
        out.append(f"`{r['method']}` {verdict} Torch-Pruning uniform L1: {100 * r['top1']:.2f} % "
                   f"vs {100 * ref['top1']:.2f} % ({d:+.2f} pp) at {100 * r['macs_fraction']:.1f} "
                   f"% vs {100 * ref['macs_fraction']:.1f} % of the MACs.")
    return out


def _ms(lat: dict | None, batch: int) -> str:
    if not lat or str(batch) not in lat:
        return "—"
    return f"{float(lat[str(batch)]['median_ms']):.2f}"


def markdown_table(rows: list[dict[str, Any]], device: str, runtime: str = "torch") -> str:
    """The per-method table (latency columns for the run's device, plus CPU on CUDA; on
    ``runtime`` where it is not torch eager)."""
    devs = [device] + (["cpu"] if device != "cpu" and any("cpu" in r["latency"] for r in rows)
                       else [])
    head = ["method", "top-1 %", "Δ top-1 pp", "proxy %", "MACs (M)", "MACs %", "params (K)",
            "params %"]
    for d in devs:
        where = d.upper() if runtime == "torch" or d != device else f"{d.upper()} {runtime}"
        head += [f"{where} b1 ms", f"{where} b128 ms"]
    head += ["b1 ×", "b128 ×", "search s", "fine-tune s"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        proxy = r.get("proxy")
        cells = [f"`{r['method']}`", f"{100 * r['top1']:.2f}", f"{r['delta_top1_pp']:+.2f}",
                 "—" if proxy is None else f"{100 * proxy:.1f}", f"{r['macs'] / 1e6:.2f}",
                 f"{100 * r['macs_fraction']:.1f}", f"{r['params'] / 1e3:.1f}",
                 f"{100 * r['params_fraction']:.1f}"]
        for d in devs:
            lat = r["latency"].get(d)
            cells += [_ms(lat, 1), _ms(lat, 128)]
        sp = [r.get("speedup_b1"), r.get("speedup_bN")]
        cells += [f"{v:.2f}" if v else "—" for v in sp]
        cells += [f"{r['search_seconds']:.1f}", f"{r['finetune_seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(s: Settings, result: dict[str, Any], command: str, env: dict[str, Any]) -> str:
    """The Markdown section for BENCHMARKS.md: command (Markdown), machine, versions, table,
    notes."""
    rows, base = result["rows"], result["baseline"]
    v = env["versions"]
    dev = env["device"]
    status = ("complete" if not result["missing"] else
              "**PARTIAL** — not finished: " + ", ".join(result["missing"]))
    bm = base["metrics"]
    origin = (f"from `{s.checkpoint}`" if s.checkpoint
              else f"trained with `{train_command(s)}`")
    subset = (f"a seeded {s.train_subset:,}-image subset of the training split"
              if s.train_subset else "the whole training split")
    lines = [
        f"Command: {command}  ",
        f"Machine: {env['machine']}, Python {v['python']}, torch {v['torch']}, "
        f"torch-pruning {v['torch-pruning']}, optuna {v['optuna']}, nasprune {v['nasprune']}; "
        f"device {dev}, {s.threads or 'default'} torch thread(s); load average "
        f"{env['load_start']} at the start, {env['load_end']} at the end.  ",
        f"Date: {env['date']}; started {env['started']}, last method finished "
        f"{env['finished']}"
        + (f" ({env['wall_minutes']:.1f} min)" if env["wall_minutes"] is not None else "")
        + f". Status: {status}.",
        "",
        f"Baseline: `{s.model}` {origin} "
        f"({base.get('train_seconds', 0) / 60:.0f} min) — test top-1 "
        f"{100 * bm['top1']:.2f} %, {bm['macs'] / 1e6:.2f} M MACs, {bm['params']:,} params. "
        f"Budget: {100 * s.budget:.0f} % of the MACs. Every method: adaptive BN (20 batches), "
        f"then {s.finetune_epochs} epoch(s) of SGD (lr {s.finetune_lr}, cosine, wd "
        f"{s.finetune_wd}, batch {s.batch_size}, augmentation) on {subset}, seed {s.seed}; "
        f"test top-1 on the {bm['n']:,} test images. Searches: {s.trials} trials, proxy = "
        f"top-1 on {s.val_size} validation images after {s.bn_batches} BN batches; sensitivity: levels "
        f"{s.sensitivity_levels}, same proxy. Latency: median of {s.latency_repeats} runs "
        f"after {s.latency_warmup} warm-up, {s.latency_threads} CPU thread(s); speed-ups "
        "against the unpruned model timed right before each method. `search s`: the "
        "method's analysis, search or ratio-bisection time. `proxy %`: the searches' "
        "objective (top-1 on those validation images after BN re-estimation) of the "
        "method's pruned network before fine-tuning.",
        "",
        markdown_table(rows, dev, s.latency_runtime),
        "",
        *[f"- {line}" for line in comparisons(rows)],
    ]
    tp_rows = [r for r in rows if r["method"] in TP_METHODS]
    for r in tp_rows:
        i = r.get("info") or {}
        lines.append(f"- `{r['method']}`: pruning_ratio {i.get('pruning_ratio', 0):.4f}, "
                     f"{i.get('off_budget', 0):+.2%} off the budget; Torch-Pruning's own "
                     f"count: {i.get('tp_count_ops', 0):,} MACs, {i.get('tp_count_params', 0):,}"
                     " params.")
    return "\n".join(lines)


def combine(dirs: list[str | Path]) -> str:
    """Earlier runs (``peers.json`` in each directory, one per seed) as one table: each
    run's test top-1, mean ± std, paired differences to Torch-Pruning global and FastNAS
    (see ``peers_combine.py``)."""
    from peers_combine import combine_runs, load_runs

    return combine_runs(load_runs(dirs, _read), [Path(d).name for d in dirs])


def update_benchmarks(path: Path, label: str, body: str) -> Path:
    """Put ``body`` between the ``label`` block's markers in ``path`` (appended the first
    time)."""
    from nasprune.checkpoint import write_atomic

    begin = f"<!-- peers:{label}:begin (written by bench/peers.py) -->"
    end = f"<!-- peers:{label}:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    return write_atomic(path, text)


def _read(path: Path) -> Any:
    from nasprune.experiment.runner import read_json

    return read_json(path)


def _last_result_time(s: Settings) -> str | None:
    """When the last finished method's result was written (UTC), if any."""
    files = list((s.out_dir / "experiment" / "methods").glob("*/result.json"))
    if not files:
        return None
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(max(f.stat().st_mtime
                                                                for f in files)))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def run(s: Settings, command: str, report_only: bool = False, append: Path | None = None,
        progress: bool = True) -> dict[str, Any]:
    """The whole benchmark; returns the peers record written to ``<out>/peers.json``."""
    from nasprune.checkpoint import write_atomic
    from nasprune.train.device import resolve_device

    t0 = time.perf_counter()
    load_start = " ".join(f"{x:.1f}" for x in os.getloadavg())
    if s.threads:
        torch.set_num_threads(s.threads)
    device = resolve_device(s.device).type
    out = s.out_dir
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command_md = f"`{command}`"
    earlier = _read(out / "peers.json") if report_only else None
    if not isinstance(earlier, dict):
        earlier = None
    if report_only:
        began = _read(out / "command.json")
        if isinstance(began, dict):
            command_md = f"`{began['command']}` (table rewritten by `{command}`)"
            command = began["command"]
            started, load_start = began["started"], began["load_start"]
    else:
        write_atomic(out / "command.json", json.dumps(
            {"command": command, "started": started, "load_start": load_start}) + "\n")
    checkpoint = s.baseline_dir if report_only else ensure_baseline(s, progress)
    progress_info = run_methods(s, checkpoint, progress) if not report_only else (
        earlier or {}).get("run")
    prior = {r["method"]: r for r in earlier.get("rows", [])} if earlier else None
    result = collect(s, checkpoint, prior)
    if device == "cuda":
        cpu_latency(s, [r for r in result["rows"] if "cpu" not in r["latency"]],
                    s.out_dir / "experiment", input_shape_of(s, checkpoint))
    if result["rows"]:
        proxy_scores(s, checkpoint, result["rows"])
    env = {"versions": versions(), "device": device, "machine": machine(device),
           "date": time.strftime("%Y-%m-%d", time.gmtime()), "started": started,
           "finished": _last_result_time(s) or started, "load_start": load_start,
           "load_end": " ".join(f"{x:.1f}" for x in os.getloadavg()),
           "wall_minutes": None if report_only else (time.perf_counter() - t0) / 60}
    if earlier and all(r["method"] in prior for r in result["rows"]):
        # Every row is the earlier run's: so are its date, times and load.
        env = {**env, **{k: earlier["environment"][k] for k in (
            "date", "started", "finished", "load_start", "load_end", "wall_minutes")
            if k in earlier.get("environment", {})}}
    body = section(s, result, command_md, env)
    keep = ("method", "dir", "status", "top1", "delta_top1_pp", "proxy", "macs",
            "macs_fraction", "params", "params_fraction", "latency", "speedup_b1", "speedup_bN", "search_seconds",
            "finetune_seconds", "finetune_epochs", "ratios", "info")
    record = {"protocol": s.protocol, "command": command, "settings": dataclasses.asdict(s),
              "environment": env, "baseline": result["baseline"]["metrics"],
              "baseline_checkpoint": str(checkpoint), "missing": result["missing"],
              "run": progress_info, "comparisons": comparisons(result["rows"]),
              "rows": [{k: r.get(k) for k in keep} for r in result["rows"]]}
    write_atomic(out / "peers.json", json.dumps(record, indent=1, default=_jsonable) + "\n")
    write_atomic(out / "peers.md", body + "\n")
    if append is not None:
        update_benchmarks(append, s.label or s.protocol, body)
    _log(progress, f"wrote {out / 'peers.md'} and peers.json"
                   + (f"; updated {append}" if append else ""))
    return record


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cpu",
                    help="preset of every setting below (default cpu)")
    ap.add_argument("--model", help="registered model name (cpu: resnet20, gpu: resnet56)")
    ap.add_argument("--checkpoint", help="a saved baseline (nasprune train/save output); "
                    "default: train it (cached in runs/peers)")
    ap.add_argument("--data", help="data set name (default cifar10)")
    ap.add_argument("--data-dir", help="data root (default data/cifar10, else the shared "
                    "tarball ../shared/data/cifar10-jpg.tar.gz)")
    ap.add_argument("--budget", type=float, help="fraction of the baseline's MACs to keep "
                    "(default 0.5)")
    ap.add_argument("--baseline-epochs", type=int)
    ap.add_argument("--finetune-epochs", type=int)
    ap.add_argument("--finetune-lr", type=float)
    ap.add_argument("--trials", type=int, help="trials of every searched strategy")
    ap.add_argument("--rungs", help="rungs of the nas:<strategy>@rungs methods "
                    "(default 1000:0,4000:30)")
    ap.add_argument("--val-size", type=int, help="validation images of the search proxy")
    ap.add_argument("--bn-batches", type=int, help="BN recalibration batches of the proxy")
    ap.add_argument("--methods", help="comma-separated, e.g. tp-uniform,uniform,nas:rl "
                    f"(default {','.join(DEFAULT_METHODS)})")
    ap.add_argument("--device", help="cpu, cuda, cuda:N (cpu protocol: cpu; gpu: cuda if any)")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--latency-runtime", choices=["torch", "onnxruntime"],
                    help="where latency is measured and nas:<strategy>@<X>x speed-ups are "
                         "asked (default torch)")
    ap.add_argument("--train-subset", type=int,
                    help="fine-tune on a seeded subset of this many training images")
    ap.add_argument("--full-train", action="store_true",
                    help="fine-tune on the whole training split (overrides the preset)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--runs", help="where the trained baseline is cached (default runs/peers)")
    ap.add_argument("--out", help="output directory (default runs/peers/<protocol>)")
    ap.add_argument("--deadline-minutes", type=float,
                    help="start no new method after this many minutes")
    ap.add_argument("--report-only", action="store_true",
                    help="only write the table from the methods finished so far")
    ap.add_argument("--append", metavar="BENCHMARKS.md",
                    help="also write the table into this Markdown file")
    ap.add_argument("--label", help="name of the table's block in the --append file "
                    "(default: the protocol; another label adds a second table)")
    ap.add_argument("--combine", nargs="+", metavar="OUT_DIR",
                    help="only print earlier runs' tables side by side (e.g. two seeds)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.combine:
        try:
            print(combine(args.combine))
        except NaspruneError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()]
               if args.methods else None)
    try:
        s = settings_from(
            args.protocol, model=args.model, checkpoint=args.checkpoint, data=args.data,
            data_dir=args.data_dir, budget=args.budget, baseline_epochs=args.baseline_epochs,
            finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
            trials=args.trials, rungs=args.rungs, val_size=args.val_size, bn_batches=args.bn_batches,
            methods=methods, device=args.device, threads=args.threads,
            train_subset=args.train_subset, seed=args.seed, out=args.out, runs=args.runs,
            deadline_minutes=args.deadline_minutes, label=args.label,
            latency_runtime=args.latency_runtime)
        if args.full_train:
            s.train_subset = None
        command = shlex.join(["python", "bench/peers.py", *argv])
        run(s, command, report_only=args.report_only,
            append=Path(args.append) if args.append else None, progress=not args.quiet)
    except NaspruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
