"""``nasprune.experiment``: compare compression methods on one model at one budget.

The runner trains (or loads) the unpruned model once and caches it in the run directory,
then runs every method of the config for every seed, one after another: the method
compresses a copy to the MACs budget (:mod:`nasprune.experiment.methods`), the copy gets the
common fine-tuning, and it is measured on the test split (accuracy, P/R/F1, MACs, params,
size, latency). Each result lands atomically in ``<run>/methods/<name>/`` (the model saved
with ``nasprune.save``, ``result.json`` and the method's artifacts); a re-run skips results
computed from the same settings, so a crashed or interrupted experiment resumes. A method
that fails is recorded as failed with its message, and the others go on. At the end the
comparison is written as ``results.json``/``.csv``/``.md``, plots and ``report.html``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.experiment.config import (
    ExperimentConfig,
    MethodSpec,
    baseline_settings,
    fingerprint,
    load_experiment_config,
    resolve_methods,
    shared_settings,
)
from nasprune.experiment.methods import METHODS, Context, Pruned

RESULT_FILE = "result.json"
MODEL_DIR = "model"
_METHOD_SECTIONS = ("search", "sensitivity", "slimming", "layer", "threshold")


@dataclass
class ExperimentResult:
    """What :func:`experiment` produced: one row per method and seed, and where it is."""

    run_dir: Path
    config: ExperimentConfig
    rows: list[dict[str, Any]]
    baseline: dict[str, Any]
    computed: list[str] = field(default_factory=list)  # method dirs computed by this call
    skipped: list[str] = field(default_factory=list)  # finished earlier, reused
    seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [r["method"] for r in self.rows if r["status"] != "ok"]

    def row(self, method: str, seed: int | None = None) -> dict[str, Any]:
        """The row of ``method`` (and ``seed`` when the experiment has several)."""
        for r in self.rows:
            if r["method"] == method and (seed is None or r["seed"] == seed):
                return r
        raise KeyError(method)

    def markdown(self) -> str:
        from nasprune.report.tables import to_markdown

        return to_markdown(self.rows, self.baseline)


def _write_json(path: Path, obj: Any) -> Path:
    from nasprune.checkpoint import write_atomic

    return write_atomic(path, json.dumps(obj, indent=1, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


def read_json(path: Path) -> Any | None:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions and machine: what a reader needs to judge the timings."""
    import platform

    import nasprune

    dev = torch.device(device) if device is not None else torch.device("cpu")
    name = (torch.cuda.get_device_name(dev) if dev.type == "cuda" and torch.cuda.is_available()
            else platform.processor() or platform.machine())
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "nasprune": nasprune.__version__,
        "platform": platform.platform(),
        "device": str(dev),
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _resolve_device(device: str | None) -> torch.device:
    from nasprune.train.device import resolve_device

    return resolve_device(device)


# ---- measuring ---------------------------------------------------------------------------

def _latency(models: list[nn.Module], data, cfg: ExperimentConfig,
             device: torch.device) -> list[dict]:
    """Latency of each model at batch 1 and N, measured in interleaved rounds.

    Every round times every model once (``measure_latency``: median of ``repeats`` runs);
    the result per batch size is the median of the round medians. Interleaving puts the
    models under the same machine load, which on shared cores moves by seconds.
    """
    import statistics

    from nasprune.metrics import measure_latency

    lat = cfg.latency
    rounds: list[list[dict]] = [[] for _ in models]
    for _ in range(lat.rounds):
        for i, m in enumerate(models):
            rounds[i].append(measure_latency(m, data.input_shape, batch_sizes=(1, lat.batch),
                                             device=device, warmup=lat.warmup,
                                             repeats=lat.repeats, num_threads=lat.threads))
    out = []
    for per_model in rounds:
        table = {}
        for b in per_model[0]:
            medians = [r[b]["median_ms"] for r in per_model]
            table[str(b)] = {"median_ms": statistics.median(medians), "min_ms": min(
                r[b]["min_ms"] for r in per_model), "round_medians_ms": medians,
                "repeats": lat.repeats}
        out.append(table)
    return out


def _measure(model: nn.Module, data, cfg: ExperimentConfig, device: torch.device) -> dict:
    """Test-split quality, cost and size (``nasprune.metrics.summarize``), finite or failed."""
    from nasprune.metrics import summarize

    m = summarize(model, data, split="test", device=device)
    m.pop("latency", None)
    bad = [k for k in ("top1", "loss") if not math.isfinite(float(m[k]))]
    if bad:
        raise NaspruneError(f"the model's test {bad[0]} is {m[bad[0]]} (not finite)")
    return m


def kept_channels_of(model: nn.Module, groups: list) -> dict[str, int]:
    """Channels each of the unpruned model's groups keeps in ``model`` (0: layer removed).

    Read from the group's first output layer (conv ``out_channels``, linear
    ``out_features``), or its first input layer when it has none.
    """
    named = dict(model.named_modules())
    out: dict[str, int] = {}
    for g in groups:
        n = 0
        for name in g.out_layers:
            m = named.get(name)
            if m is not None:
                n = getattr(m, "out_channels", getattr(m, "out_features", g.channels))
                break
        else:
            for name in g.in_layers:
                m = named.get(name)
                if m is not None:
                    n = getattr(m, "in_channels", getattr(m, "in_features", g.channels))
                    break
        out[g.name] = int(n)
    return out


# ---- the unpruned model --------------------------------------------------------------------

def _train_seconds_of(meta: Any) -> float:
    """Training time a checkpoint recorded about itself, if any (0 when unknown)."""
    if not isinstance(meta, dict):
        return 0.0
    for key in ("train_seconds", "seconds"):
        if isinstance(meta.get(key), (int, float)):
            return float(meta[key])
    for sub in ("fit", "train", "result"):
        if isinstance(meta.get(sub), dict):
            v = _train_seconds_of(meta[sub])
            if v:
                return v
    return 0.0


def _baseline(cfg: ExperimentConfig, data, run: Path, device: torch.device, resume: bool,
              progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The trained unpruned model (cached in ``<run>/baseline``) and its measurements."""
    from nasprune.checkpoint import load, read_spec, save

    folder = run / "baseline"
    fp = fingerprint(baseline_settings(cfg), {"latency": shared_settings(cfg)["latency"]},
                     str(device))
    info = read_json(folder / "baseline.json") if resume else None
    if info and info.get("fingerprint") == fp and (folder / MODEL_DIR / "spec.json").exists():
        _log(progress, f"baseline: reusing {folder / MODEL_DIR}")
        return load(folder / MODEL_DIR).to(device), info

    history: list[dict] = []
    if cfg.checkpoint:
        ckpt = Path(cfg.checkpoint)
        if not ckpt.is_dir():
            raise NaspruneError(f"checkpoint directory not found: {ckpt}")
        _log(progress, f"baseline: loading {ckpt}")
        model = load(ckpt).to(device)
        train_seconds = _train_seconds_of((read_spec(ckpt) or {}).get("meta"))
        source = {"checkpoint": str(ckpt)}
    else:
        from nasprune.models import create_model
        from nasprune.train import fit, seed_everything

        b = cfg.baseline
        kwargs = {"num_classes": data.num_classes, "in_channels": data.input_shape[0],
                  **cfg.model_kwargs}
        seed_everything(cfg.seeds[0])  # the initial weights too, not only the training
        model = create_model(cfg.model, **kwargs)
        _log(progress, f"baseline: training {cfg.model} on {cfg.data} for {b.epochs} epochs")
        res = fit(model, data, epochs=b.epochs, optimizer=b.optimizer, lr=b.lr,
                  weight_decay=b.weight_decay, schedule=b.schedule, batch_size=b.batch_size,
                  augment=b.augment, seed=cfg.seeds[0], device=device, progress=progress)
        train_seconds, history = res.train_seconds, res.history
        source = {"model": cfg.model, "model_kwargs": kwargs}
    model.to(device).eval()
    metrics = _measure(model, data, cfg, device)
    (latency,) = _latency([model], data, cfg, device)
    info = {"fingerprint": fp, "source": source, "train_seconds": train_seconds,
            "history": history, "metrics": metrics, "latency": latency}
    save(model, folder / MODEL_DIR, meta={"train_seconds": train_seconds, "metrics": metrics})
    _write_json(folder / "baseline.json", info)
    _log(progress, f"baseline: test top-1 {metrics['top1']:.2%}, {metrics['macs']:,} MACs")
    return model, info


# ---- one method ----------------------------------------------------------------------------

def method_dir_name(spec: MethodSpec, seed: int, seeds: list[int]) -> str:
    return spec.slug if len(seeds) == 1 else f"{spec.slug}-seed{seed}"


def _method_fingerprint(cfg: ExperimentConfig, spec: MethodSpec, seed: int,
                        baseline_fp: str) -> str:
    common = shared_settings(cfg)
    for key in _METHOD_SECTIONS:  # the method's own section is in spec.settings
        common.pop(key, None)
    return fingerprint(common, spec.to_dict(), seed, baseline_fp)


def _finite_weights(model: nn.Module) -> None:
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise NaspruneError(f"the compressed model has non-finite values in '{name}'")


def _commit_dir(tmp: Path, final: Path) -> None:
    """Move the finished ``tmp`` directory to ``final``, replacing an old one."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _run_method(ctx: Context, cfg: ExperimentConfig, baseline: dict, groups: list,
                folder: Path, fp: str) -> dict[str, Any]:
    """Compress, fine-tune, measure and save one method; returns its result record."""
    from nasprune.checkpoint import save, temp_dir_beside
    from nasprune.train import finetune, recalibrate_bn, seed_everything

    spec = ctx.spec
    record: dict[str, Any] = {"method": spec.name, "kind": spec.method, "seed": ctx.seed,
                              "fingerprint": fp, "dir": folder.name,
                              "settings": spec.to_dict().get("settings")}
    start = time.perf_counter()
    tmp = temp_dir_beside(folder)
    try:
        try:
            seed_everything(ctx.seed)
            pruned: Pruned = METHODS.get(spec.kind)(ctx)
            model = pruned.model.to(ctx.device)
            _finite_weights(model)
            ft_seconds, history = 0.0, []
            f = cfg.finetune
            if pruned.finetune and f.bn_batches > 0:
                recalibrate_bn(model, ctx.data.loader("train", batch_size=f.batch_size,
                                                      shuffle=True, device=ctx.device,
                                                      seed=ctx.seed), batches=f.bn_batches)
            if pruned.finetune and f.epochs > 0:
                teacher = ctx.model if f.distill else None
                res = finetune(model, ctx.data, epochs=f.epochs, teacher=teacher,
                               optimizer=f.optimizer, lr=f.lr, weight_decay=f.weight_decay,
                               schedule=f.schedule, batch_size=f.batch_size,
                               augment=f.augment, kd_temperature=f.kd_temperature,
                               kd_weight=f.kd_weight, seed=ctx.seed, device=ctx.device,
                               progress=False)
                ft_seconds, history = res.train_seconds, res.history
            model.eval()
            _finite_weights(model)
            metrics = _measure(model, ctx.data, cfg, ctx.device)
            if spec.kind == "unpruned":
                latency = reference = baseline["latency"]
            else:
                # The unpruned model is timed again, interleaved with this one: on a shared
                # machine the load moves, and the speed-up should compare like with like.
                reference, latency = _latency([ctx.model, model], ctx.data, cfg, ctx.device)
            record.update({
                "status": "ok", "error": None, "metrics": metrics, "latency": latency,
                "reference_latency": reference,
                "search_seconds": pruned.search_seconds,
                "finetune_seconds": ft_seconds,
                "extra_train_seconds": pruned.extra_train_seconds,
                "train_seconds": baseline["train_seconds"] + pruned.extra_train_seconds
                + ft_seconds,
                "finetuned": bool(pruned.finetune and cfg.finetune.epochs > 0),
                "info": pruned.info,
                "kept": None if spec.kind == "threshold" else kept_channels_of(model, groups),
                "history": history,
            })
            record["wall_seconds"] = time.perf_counter() - start
            save(model, tmp / MODEL_DIR, meta={"method": spec.name, "kind": spec.method,
                                               "seed": ctx.seed, "metrics": metrics})
            for name, obj in pruned.artifacts.items():
                _write_json(tmp / f"{name}.json", obj)
        except Exception as exc:
            # A failed method is a result too: recorded with its message, the others go on.
            record.update({"status": "failed",
                           "error": f"{type(exc).__name__}: {exc}".strip()[:2000],
                           "wall_seconds": time.perf_counter() - start})
            (tmp / "traceback.txt").write_text(traceback.format_exc(), encoding="utf-8")
        _write_json(tmp / RESULT_FILE, record)
        _commit_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return record


# ---- the experiment ----------------------------------------------------------------------

def experiment(config: ExperimentConfig | dict | str | os.PathLike,
               out_dir: str | os.PathLike | None = None, resume: bool = True,
               overrides: dict | None = None, progress: bool = True,
               report: bool = True) -> ExperimentResult:
    """Run (or resume) the comparison described by ``config`` into ``out_dir``.

    ``config``: an :class:`ExperimentConfig`, a plain dict, a YAML path or the name of a
    bundled example config (``"example-digits"``); ``overrides`` (dotted keys, e.g.
    ``{"finetune.epochs": 2}``) win over it. ``out_dir`` defaults to ``runs/<name>``.
    With ``resume`` a method already finished with the same settings is not recomputed.
    ``report`` also writes the plots and ``report.html``. Returns an
    :class:`ExperimentResult`; every file is in ``out_dir``.
    """
    from nasprune.config import save_resolved
    from nasprune.data import load_dataset
    from nasprune.pruning import groups as list_groups

    start = time.perf_counter()
    cfg = load_experiment_config(config, overrides)
    specs = resolve_methods(cfg)
    run = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name
    # What the user named must exist before anything is written.
    if cfg.checkpoint and not (Path(cfg.checkpoint) / "spec.json").is_file():
        raise NaspruneError(f"checkpoint directory not found (no spec.json): {cfg.checkpoint}")
    data = load_dataset(cfg.data, root=cfg.data_dir, seed=cfg.seeds[0], **cfg.data_options)
    try:
        (run / "methods").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NaspruneError(f"cannot create run directory '{run}': {exc.strerror or exc}") \
            from exc
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _resolve_device(cfg.device)
    save_resolved(cfg, run / "config.yaml")
    env_written = False  # written when something is computed: it describes that machine

    model, baseline = _baseline(cfg, data, run, device, resume, progress)
    example = data.example_input(1).to(device)
    groups = list_groups(model, example)
    baseline["kept"] = kept_channels_of(model, groups)
    baseline["groups"] = [{"name": g.name, "channels": g.channels} for g in groups]
    base_macs = int(baseline["metrics"]["macs"])

    jobs = [(spec, seed) for seed in cfg.seeds for spec in specs]
    records: list[dict[str, Any]] = []
    computed: list[str] = []
    skipped: list[str] = []
    for i, (spec, seed) in enumerate(jobs, 1):
        dname = method_dir_name(spec, seed, cfg.seeds)
        folder = run / "methods" / dname
        fp = _method_fingerprint(cfg, spec, seed, baseline["fingerprint"])
        label = spec.name + (f" (seed {seed})" if len(cfg.seeds) > 1 else "")
        old = read_json(folder / RESULT_FILE) if resume else None
        if (old and old.get("status") == "ok" and old.get("fingerprint") == fp
                and (folder / MODEL_DIR / "spec.json").exists()):
            _log(progress, f"[{i}/{len(jobs)}] {label}: done earlier, skipped")
            records.append(old)
            skipped.append(dname)
            continue
        _log(progress, f"[{i}/{len(jobs)}] {label}: running")
        if not env_written:
            _write_json(run / "environment.json", environment(device))
            env_written = True
        ctx = Context(cfg=cfg, spec=spec, data=data, model=model, example=example,
                      base_macs=base_macs, seed=seed, device=device,
                      work=run / "work" / f"{dname}-{fp}", progress=False)
        rec = _run_method(ctx, cfg, baseline, groups, folder, fp)
        records.append(rec)
        computed.append(dname)
        if rec["status"] == "ok":
            shutil.rmtree(ctx.work, ignore_errors=True)
            m = rec["metrics"]
            _log(progress, f"[{i}/{len(jobs)}] {label}: top-1 {m['top1']:.2%}, MACs "
                           f"{m['macs'] / base_macs:.1%} ({rec['wall_seconds']:.1f} s)")
        else:
            _log(progress, f"[{i}/{len(jobs)}] {label}: FAILED: {rec['error']}")

    with contextlib.suppress(OSError):  # scratch space of unfinished methods only
        (run / "work").rmdir()

    from nasprune.report.tables import build_rows, write_tables

    rows = build_rows(records, baseline, cfg)
    files = write_tables(run, rows, baseline, cfg)
    result = ExperimentResult(run_dir=run, config=cfg, rows=rows, baseline=baseline,
                              computed=computed, skipped=skipped, files=files)
    if report:
        from nasprune.report.html import write_report
        from nasprune.report.plots import make_plots

        files.update(make_plots(run))
        files["report"] = write_report(run, draw=False)
    result.seconds = time.perf_counter() - start
    _log(progress, f"experiment: {len(computed)} computed, {len(skipped)} reused, "
                   f"{len(result.failed)} failed in {result.seconds:.1f} s -> {run}")
    return result


def load_result(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``results.json`` of a finished run (NaspruneError when it is not a run directory)."""
    path = Path(run_dir) / "results.json"
    doc = read_json(path)
    if not isinstance(doc, dict) or "rows" not in doc:
        raise NaspruneError(f"'{run_dir}' is not an experiment run directory (no readable "
                            "results.json): run `nasprune experiment` first")
    return doc


__all__ = ["ExperimentResult", "environment", "experiment", "load_result"]
