"""``nasprune.experiment``: compare compression methods on one model at one budget.

The runner trains (or loads) the unpruned model once and caches it in the run directory,
then runs every method of the config for every seed, one after another: the method
compresses a copy to the MACs budget (:mod:`nasprune.methods`), the copy gets the
common fine-tuning, and it is measured on the test split (accuracy, P/R/F1, MACs, params,
size, latency). Each result lands atomically in ``<run>/methods/<name>/`` (the model saved
with ``nasprune.save``, ``result.json`` and the method's artifacts); a re-run skips results
computed from the same settings, so a crashed or interrupted experiment resumes. A method
that fails is recorded as failed with its message, and the others go on. At the end the
comparison is written as ``results.json``/``.csv``/``.md``, plots and ``report.html``.

The unpruned model is in :mod:`._baseline`, measuring in :mod:`._measure`, the run
directory's files and reuse in :mod:`._results` and :mod:`._fingerprint`; rendering is
:mod:`nasprune.report`, which only reads the files written here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasprune._io import read_json
from nasprune.errors import NaspruneError
from nasprune.experiment._baseline import baseline as _baseline
from nasprune.experiment._baseline import quality_text
from nasprune.experiment._fingerprint import method_fingerprint
from nasprune.experiment._measure import (
    finite_weights,
    kept_channels_of,
    latency,
    measure,
)
from nasprune.experiment._results import (
    MODEL_DIR,
    RESULT_FILE,
    ExperimentResult,
    commit_dir,
    environment,
    log,
    method_dir_name,
    reusable,
    write_json,
)
from nasprune.experiment._task import example_input, latency_shape, load_data
from nasprune.experiment.config import (
    ExperimentConfig,
    MethodSpec,
    load_experiment_config,
    resolve_methods,
)
from nasprune.methods import METHODS, Context, Pruned
from nasprune.report.results import load_result
from nasprune.task import is_dataset


@dataclass
class _Setup:
    """What every method of one run shares: the config, data, unpruned model and device."""

    cfg: ExperimentConfig
    run: Path
    data: Any
    device: torch.device
    model: nn.Module
    baseline: dict[str, Any]
    groups: list
    example: Any  # one input: a tensor, or a task's keyword arguments
    input_shape: tuple[int, ...] | None  # timed for latency (None: not one tensor)

    @property
    def base_macs(self) -> int:
        return int(self.baseline["metrics"]["macs"])


# ---- one method ----------------------------------------------------------------------------

def _compress(ctx: Context, cfg: ExperimentConfig) -> tuple[Pruned, nn.Module, float, list]:
    """The method's model after the common fine-tuning: ``(pruned, model, seconds, history)``."""
    from nasprune.train import finetune, recalibrate_bn, seed_everything

    seed_everything(ctx.seed)
    pruned: Pruned = METHODS.get(ctx.spec.kind)(ctx)
    model = pruned.model.to(ctx.device)
    finite_weights(model)
    ft_seconds, history = 0.0, []
    f = cfg.finetune
    if pruned.finetune and f.bn_batches > 0:
        if is_dataset(ctx.data):
            recalibrate_bn(model, ctx.data.loader("train", batch_size=f.batch_size,
                                                  shuffle=True, device=ctx.device,
                                                  seed=ctx.seed), batches=f.bn_batches)
        else:  # the task's own loader: its batch size and shuffling apply
            recalibrate_bn(model, ctx.data.split("train"), batches=f.bn_batches,
                           forward=ctx.data.forward)
    if pruned.finetune and f.epochs > 0:
        teacher = ctx.model if f.distill else None
        res = finetune(model, ctx.data, epochs=f.epochs, teacher=teacher,
                       optimizer=f.optimizer, lr=f.lr, weight_decay=f.weight_decay,
                       schedule=f.schedule, batch_size=f.batch_size, augment=f.augment,
                       kd_temperature=f.kd_temperature, kd_weight=f.kd_weight, seed=ctx.seed,
                       device=ctx.device, progress=False)
        ft_seconds, history = res.train_seconds, res.history
    model.eval()
    finite_weights(model)
    return pruned, model, ft_seconds, history


def _measured(ctx: Context, setup: _Setup, pruned: Pruned, model: nn.Module,
              ft_seconds: float, history: list) -> dict[str, Any]:
    """The result fields of a compressed, fine-tuned model: metrics, latency, times."""
    cfg, spec = setup.cfg, ctx.spec
    metrics = measure(model, ctx.data, setup.example, ctx.device)
    if spec.kind == "unpruned":
        lat = reference = setup.baseline["latency"]
    else:
        # The unpruned model is timed again, interleaved with this one: on a shared
        # machine the load moves, and the speed-up should compare like with like.
        reference, lat = latency([ctx.model, model], setup.input_shape, cfg, ctx.device)
    return {
        "status": "ok", "error": None, "metrics": metrics, "latency": lat,
        "reference_latency": reference,
        "search_seconds": pruned.search_seconds,
        "finetune_seconds": ft_seconds,
        "extra_train_seconds": pruned.extra_train_seconds,
        "train_seconds": setup.baseline["train_seconds"] + pruned.extra_train_seconds
        + ft_seconds,
        "finetuned": bool(pruned.finetune and cfg.finetune.epochs > 0),
        "info": pruned.info,
        "kept": None if spec.kind == "threshold" else kept_channels_of(model, setup.groups),
        "history": history,
    }


def _run_method(ctx: Context, setup: _Setup, folder: Path, fp: str) -> dict[str, Any]:
    """Compress, fine-tune, measure and save one method; returns its result record.

    Everything is written into a temp directory that replaces ``folder`` only when done.
    """
    from nasprune.checkpoint import save, temp_dir_beside

    spec = ctx.spec
    record: dict[str, Any] = {"method": spec.name, "kind": spec.method, "seed": ctx.seed,
                              "fingerprint": fp, "dir": folder.name,
                              "settings": spec.to_dict().get("settings")}
    start = time.perf_counter()
    tmp = temp_dir_beside(folder)
    try:
        try:
            pruned, model, ft_seconds, history = _compress(ctx, setup.cfg)
            record.update(_measured(ctx, setup, pruned, model, ft_seconds, history))
            record["wall_seconds"] = time.perf_counter() - start
            save(model, tmp / MODEL_DIR, meta={"method": spec.name, "kind": spec.method,
                                               "seed": ctx.seed,
                                               "metrics": record["metrics"]})
            for name, obj in pruned.artifacts.items():
                write_json(tmp / f"{name}.json", obj)
        except Exception as exc:
            # A failed method is a result too: recorded with its message, the others go on.
            record.update({"status": "failed",
                           "error": f"{type(exc).__name__}: {exc}".strip()[:2000],
                           "wall_seconds": time.perf_counter() - start})
            (tmp / "traceback.txt").write_text(traceback.format_exc(), encoding="utf-8")
        write_json(tmp / RESULT_FILE, record)
        commit_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return record


# ---- the experiment ----------------------------------------------------------------------

def _setup(cfg: ExperimentConfig, run: Path, resume: bool, progress: bool) -> _Setup:
    """Check what the config names, create the run directory, get the unpruned model."""
    from nasprune.config import save_resolved
    from nasprune.pruning import groups as list_groups
    from nasprune.train.device import resolve_device

    # What the user named must exist before anything is written.
    if cfg.checkpoint and not (Path(cfg.checkpoint) / "spec.json").is_file():
        raise NaspruneError(f"checkpoint directory not found (no spec.json): {cfg.checkpoint}")
    data, loaded = load_data(cfg)
    try:
        (run / "methods").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NaspruneError(f"cannot create run directory '{run}': {exc.strerror or exc}") \
            from exc
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    save_resolved(cfg, run / "config.yaml")
    example = example_input(data, device)
    model, baseline = _baseline(cfg, data, loaded, example, run, device, resume, progress)
    groups = list_groups(model, example)
    baseline["kept"] = kept_channels_of(model, groups)
    baseline["groups"] = [{"name": g.name, "channels": g.channels} for g in groups]
    return _Setup(cfg=cfg, run=run, data=data, device=device, model=model,
                  baseline=baseline, groups=groups, example=example,
                  input_shape=latency_shape(example))


def _run_jobs(setup: _Setup, specs: list[MethodSpec], resume: bool, progress: bool,
              ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Every method for every seed, finished ones reused: ``(records, computed, skipped)``."""
    cfg, run = setup.cfg, setup.run
    jobs = [(spec, seed) for seed in cfg.seeds for spec in specs]
    records: list[dict[str, Any]] = []
    computed: list[str] = []
    skipped: list[str] = []
    for i, (spec, seed) in enumerate(jobs, 1):
        dname = method_dir_name(spec, seed, cfg.seeds)
        folder = run / "methods" / dname
        fp = method_fingerprint(cfg, spec, seed, setup.baseline["fingerprint"])
        tag = f"[{i}/{len(jobs)}] {spec.name}" + (f" (seed {seed})" if len(cfg.seeds) > 1
                                                  else "")
        old = reusable(folder, fp) if resume else None
        if old is not None:
            log(progress, f"{tag}: done earlier, skipped")
            records.append(old)
            skipped.append(dname)
            continue
        log(progress, f"{tag}: running")
        if not computed:  # written when something is computed: it describes that machine
            write_json(run / "environment.json", environment(setup.device))
        ctx = Context(cfg=cfg, spec=spec, data=setup.data, model=setup.model,
                      example=setup.example, base_macs=setup.base_macs, seed=seed,
                      device=setup.device, work=run / "work" / f"{dname}-{fp}", progress=False)
        rec = _run_method(ctx, setup, folder, fp)
        records.append(rec)
        computed.append(dname)
        if rec["status"] == "ok":
            shutil.rmtree(ctx.work, ignore_errors=True)
            m = rec["metrics"]
            log(progress, f"{tag}: {quality_text(m)}, MACs "
                          f"{m['macs'] / setup.base_macs:.1%} ({rec['wall_seconds']:.1f} s)")
        else:
            log(progress, f"{tag}: FAILED: {rec['error']}")
    with contextlib.suppress(OSError):  # scratch space of unfinished methods only
        (run / "work").rmdir()
    return records, computed, skipped


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
    from nasprune.report.tables import build_rows, write_tables

    start = time.perf_counter()
    cfg = load_experiment_config(config, overrides)
    specs = resolve_methods(cfg)
    run = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name
    setup = _setup(cfg, run, resume, progress)
    records, computed, skipped = _run_jobs(setup, specs, resume, progress)
    rows = build_rows(records, setup.baseline, cfg)
    files = write_tables(run, rows, setup.baseline, cfg)
    result = ExperimentResult(run_dir=run, config=cfg, rows=rows, baseline=setup.baseline,
                              computed=computed, skipped=skipped, files=files)
    if report:
        from nasprune.report.html import write_report
        from nasprune.report.plots import make_plots

        files.update(make_plots(run))
        files["report"] = write_report(run, draw=False)
    result.seconds = time.perf_counter() - start
    log(progress, f"experiment: {len(computed)} computed, {len(skipped)} reused, "
                  f"{len(result.failed)} failed in {result.seconds:.1f} s -> {run}")
    return result


# Names the runner has always offered (bench/peers.py reads results through them).
__all__ = ["MODEL_DIR", "RESULT_FILE", "ExperimentResult", "environment", "experiment",
           "kept_channels_of", "load_result", "method_dir_name", "read_json"]
