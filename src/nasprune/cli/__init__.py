"""The ``nasprune`` command line: one sub-command per verb.

Every verb is a ``cmd_<verb>(args) -> int`` function registered in ``build_parser``. Heavy
imports happen inside the verbs so ``nasprune --help`` is instant. A :class:`NaspruneError`
becomes one ``error: ...`` line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nasprune.errors import NaspruneError


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags already; keep its message to one line plus usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nasprune",
        description="Prune a trained network to a MACs, parameter or latency budget: search "
                    "how many channels each layer keeps, remove them for real, fine-tune, "
                    "and compare with the classic methods. Start with `nasprune demo`.")
    from nasprune import __version__

    parser.add_argument("--version", action="version", version=f"nasprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    # --help lists the verbs in the order a new user meets them, not in source order.
    for add in sorted(_COMMANDS, key=lambda f: _HELP_ORDER.index(f.__name__.removeprefix("_add_"))):
        add(sub)
    return parser


# Each entry adds one sub-command; modules for the verbs live beside their subject.
_COMMANDS: list = []
_HELP_ORDER = ("demo", "train", "evaluate", "prune", "finetune", "search", "workers",
               "experiment", "report")


def command(fn):
    """Register a function ``add(subparsers)`` that defines one verb."""
    _COMMANDS.append(fn)
    return fn


# ---------------------------------------------------------------------------------------
# evaluate: every metric of a saved checkpoint on a data split (owner: metrics)
# ---------------------------------------------------------------------------------------


@command
def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="accuracy, precision/recall/F1, MACs/FLOPs, params, size (and latency) of a "
        "checkpoint",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="directory written by nasprune.save / `nasprune train`")
    p.add_argument("--data", default=None, metavar="NAME",
                   help="data set name, e.g. digits (default: the one the checkpoint records)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="where the data set lives")
    p.add_argument("--download", action="store_true",
                   help="fetch the data set's official files if they are missing")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--seed", type=int, default=None,
                   help="data split seed (default: the training run's, recorded in the "
                   "checkpoint, so its val and test images stay unseen)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.add_argument("--latency", action="store_true",
                   help="also measure latency (median/p90) at batch 1 and 64")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for the latency measurement (default: torch's)")
    p.add_argument("--out", default=None, metavar="FILE.json",
                   help="write all metrics as JSON here")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from pathlib import Path

    ckpt = Path(args.checkpoint)
    if not ckpt.is_dir():
        raise NaspruneError(f"checkpoint directory not found: {ckpt}")
    if args.batch_size < 1:
        raise NaspruneError(f"--batch-size must be at least 1, got {args.batch_size}")

    from nasprune.checkpoint import load, recorded_dataset
    from nasprune.metrics import format_summary, resolve_device, summarize, write_json

    model = load(ckpt)  # before the data: a bad checkpoint fails fast, without a long decode
    data, _ = recorded_dataset(ckpt, args.data, args.data_dir, args.download, args.seed)
    if args.device is not None:
        model.to(resolve_device(args.device))
    summary = {"checkpoint": str(ckpt), "model": (getattr(model, "nasprune_arch", None)
                                                  or {}).get("name")}
    summary.update(summarize(model, data, split=args.split, batch_size=args.batch_size,
                             latency=args.latency, latency_threads=args.threads))
    print(f"{ckpt} ({summary['model'] or type(model).__name__}) on {format_summary(summary)}")
    if args.out:
        print(f"wrote {write_json(summary, args.out)}")
    return 0


# ---------------------------------------------------------------------------------------
# prune: structured (channels) or unstructured (threshold) pruning of a checkpoint
# (owner: pruning)
# ---------------------------------------------------------------------------------------


@command
def _add_prune(sub) -> None:
    p = sub.add_parser("prune", help="prune a checkpoint (remove channels or zero weights) "
                       "and save the result")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="model to prune")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--ratio", type=float, metavar="R",
                     help="remove this fraction of the channels of every group")
    how.add_argument("--ratios", metavar="FILE.json",
                     help="per-group prune ratios {group: ratio} (e.g. from `nasprune search`)")
    how.add_argument("--global", dest="global_target", type=float, metavar="T",
                     help="remove this fraction of all channels, least important first across "
                     "the whole network")
    how.add_argument("--threshold-sparsity", type=float, metavar="S",
                     help="unstructured: zero this fraction of the conv/linear weights")
    how.add_argument("--threshold", type=float, metavar="T",
                     help="unstructured: zero weights with |w| < T (× std(w) with --scope layer)")
    p.add_argument("--criterion", default="l1",
                   help="channel importance: l1, l2, fpgm, bn_scale, taylor, random")
    p.add_argument("--round-to", type=int, default=None, metavar="N",
                   help="keep channel counts multiples of N (hardware friendly)")
    p.add_argument("--min-channels", type=int, default=1, metavar="N")
    p.add_argument("--ignore", nargs="+", default=None, metavar="LAYER",
                   help="layers never to prune")
    p.add_argument("--scope", default="global", choices=("global", "layer"),
                   help="threshold pruning: one cut for all layers or one per layer")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="model input shape, if the checkpoint does not record it")
    p.add_argument("--data", default=None, metavar="NAME",
                   help="data set (needed by --criterion taylor; also gives the input shape)")
    p.add_argument("--data-dir", default=None, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR", help="where to save the result")
    p.set_defaults(func=cmd_prune)


def _find_key(doc: object, key: str, depth: int = 2):
    """``doc[key]`` in a dict or in its nested dicts (checkpoint meta has no fixed layout)."""
    if not isinstance(doc, dict):
        return None
    if doc.get(key) is not None:
        return doc[key]
    for v in doc.values() if depth > 0 else ():
        found = _find_key(v, key, depth - 1)
        if found is not None:
            return found
    return None


def _prune_input_shape(args, meta: dict | None, data) -> tuple[int, ...]:
    text = args.input_shape
    if text is not None:
        try:
            shape = tuple(int(v) for v in text.split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise NaspruneError(f"--input-shape must look like 3,32,32, got '{text}'")
        return shape
    if data is not None:
        return tuple(data.input_shape)
    found = _find_key(meta, "input_shape")
    if isinstance(found, list) and found and all(isinstance(v, int) and v > 0 for v in found):
        return tuple(found)
    raise NaspruneError("the checkpoint does not record its input shape: pass "
                        "--input-shape C,H,W (or --data NAME)")


def _read_ratios(path: str) -> dict:
    import json
    from pathlib import Path

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NaspruneError(f"ratios file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NaspruneError(f"cannot read ratios from '{path}': {exc}") from exc
    if isinstance(doc, dict) and isinstance(doc.get("ratios"), dict):
        doc = doc["ratios"]  # a search result or a spec's pruning record
    if not isinstance(doc, dict) or not doc:
        raise NaspruneError(f"'{path}' must hold a JSON object {{group name: prune ratio}}")
    return doc


def _cost_line(label: str, before, after) -> str:
    return f"  {label:<15} {before:>14} → {after:>14}"


def cmd_prune(args) -> int:
    from pathlib import Path

    src, out = Path(args.checkpoint), Path(args.out)
    if src.resolve() == out.resolve():
        raise NaspruneError("--out must differ from --checkpoint (the original is kept)")

    import torch

    from nasprune.checkpoint import load, read_spec, save
    from nasprune.metrics import count_macs, count_params, model_size_mb, sparse_size_mb

    ratios = _read_ratios(args.ratios) if args.ratios else None  # bad file: fail before work
    meta = read_spec(src).get("meta") or {}
    model = load(src)
    data = None
    if args.data is not None:
        from nasprune.data import load_dataset

        data = load_dataset(args.data, root=args.data_dir, seed=args.seed)
    shape = _prune_input_shape(args, meta, data)
    x = torch.randn(1, *shape)
    try:
        macs = count_macs(model, x)
    except RuntimeError as exc:  # --input-shape / --data not what the model was built for
        raise NaspruneError(f"the model does not accept inputs of shape {shape}: "
                            f"{str(exc).strip().splitlines()[0]}") from exc
    before = {"macs": macs, "params": count_params(model), "size_mb": model_size_mb(model)}
    if args.threshold_sparsity is not None or args.threshold is not None:
        from nasprune.pruning.unstructured import threshold

        pruned = model
        report = threshold(pruned, sparsity=args.threshold_sparsity, threshold=args.threshold,
                           scope=args.scope, layers=None, example_inputs=x)
        print(report)
        after = {"macs": report.sparse_macs, "params": count_params(pruned),
                 "size_mb": sparse_size_mb(pruned), "sparsity": report.sparsity}
    else:
        from nasprune.pruning import prune

        how = (ratios if ratios is not None else
               "global" if args.global_target is not None else args.ratio)
        pruned = prune(model, x, how, criterion=args.criterion, round_to=args.round_to,
                       min_channels=args.min_channels, ignored=args.ignore, data=data,
                       global_target=args.global_target, seed=args.seed)
        after = {"macs": count_macs(pruned, x), "params": count_params(pruned),
                 "size_mb": model_size_mb(pruned)}
    keep = {k: meta[k] for k in ("data", "seed", "num_classes") if k in meta}
    save(pruned, out, meta={**keep, "input_shape": list(shape), "pruned_from": str(src),
                            "before": before, "after": after})
    sparse = "sparse " if "sparsity" in after else ""
    print(f"pruned {src} → {out}")
    print(_cost_line(f"{sparse}MACs", f"{before['macs']:,}", f"{after['macs']:,}")
          + f"  ({after['macs'] / max(before['macs'], 1):.1%})")
    print(_cost_line("params", f"{before['params']:,}", f"{after['params']:,}")
          + f"  ({after['params'] / max(before['params'], 1):.1%})")
    print(_cost_line(f"{sparse}size MB", f"{before['size_mb']:.3f}", f"{after['size_mb']:.3f}")
          + f"  ({after['size_mb'] / max(before['size_mb'], 1e-12):.1%})")
    print(f"not fine-tuned yet; next: nasprune finetune --checkpoint {out} --teacher {src}")
    return 0


# ---------------------------------------------------------------------------------------
# finetune: recover the accuracy of a pruned checkpoint (owner: train)
# ---------------------------------------------------------------------------------------


_NO_DEFAULTS = dict.fromkeys(("epochs", "batch_size", "optimizer", "momentum", "weight_decay",
                              "schedule", "label_smoothing", "augment", "seed"))


def _add_fit_flags(p: argparse.ArgumentParser, defaults: dict, lr_help: str,
                   seed_help: str | None = None) -> None:
    """The optimisation flags ``train`` and ``finetune`` share (``nasprune.fit``'s)."""
    d = defaults
    p.add_argument("--epochs", type=int, default=d["epochs"], metavar="N")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], metavar="N")
    p.add_argument("--optimizer", default=d["optimizer"],
                   help="sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, adadelta")
    p.add_argument("--lr", type=float, default=None, help=lr_help)
    p.add_argument("--momentum", type=float, default=d["momentum"])
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    p.add_argument("--schedule", default=d["schedule"], help="constant, step, cosine, onecycle")
    p.add_argument("--label-smoothing", type=float, default=d["label_smoothing"])
    p.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                   default=d["augment"], help="no random crops/flips")
    p.add_argument("--seed", type=int, default=d["seed"], help=seed_help)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads")


@command
def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a saved (pruned) checkpoint on the data it "
                       "was trained on, optionally distilling from the unpruned model")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="model to fine-tune")
    p.add_argument("--teacher", default=None, metavar="DIR",
                   help="the unpruned checkpoint: distil from it (knowledge distillation)")
    p.add_argument("--data", default=None, metavar="NAME",
                   help="data set (default: the one the checkpoint records)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="where the data set lives")
    p.add_argument("--download", action="store_true",
                   help="fetch the data set's official files if they are missing")
    _add_fit_flags(p, {"epochs": 5, "batch_size": 128, "optimizer": "sgd", "momentum": 0.9,
                       "weight_decay": 5e-4, "schedule": "cosine", "label_smoothing": 0.0,
                       "augment": True, "seed": 0},
                   lr_help="default: a tenth of the optimizer's training default",
                   seed_help="seeds the fine-tuning (the data split is always the "
                   "checkpoint's)")
    p.add_argument("--kd-temperature", type=float, default=4.0, metavar="T",
                   help="distillation temperature (with --teacher)")
    p.add_argument("--kd-weight", type=float, default=0.9, metavar="W",
                   help="weight of the distillation loss, 0..1 (with --teacher)")
    p.add_argument("--bn-batches", type=int, default=20, metavar="N",
                   help="re-estimate BatchNorm statistics on N batches first (0: off)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to save the fine-tuned checkpoint (default: CHECKPOINT-ft)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args) -> int:
    from pathlib import Path

    from nasprune.train.finetune_run import finetune_checkpoint

    ckpt = Path(args.checkpoint)
    if not ckpt.is_dir():
        raise NaspruneError(f"checkpoint directory not found: {ckpt}")
    if args.teacher is not None and not Path(args.teacher).is_dir():
        raise NaspruneError(f"teacher checkpoint directory not found: {args.teacher}")
    _set_threads(args.threads)
    out = Path(args.out) if args.out else ckpt.with_name(ckpt.name + "-ft")
    summary = finetune_checkpoint(
        ckpt, out, teacher=args.teacher, data=args.data, data_dir=args.data_dir,
        download=args.download, bn_batches=args.bn_batches, progress=not args.quiet,
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        label_smoothing=args.label_smoothing, kd_temperature=args.kd_temperature,
        kd_weight=args.kd_weight, augment=args.augment, seed=args.seed, device=args.device)
    b, a = summary["before"], summary["after"]
    print(f"fine-tuned {ckpt} on {summary['data']}: {len(summary['history'])} epochs in "
          f"{summary['finetune_seconds']:.1f} s"
          + (f", distilled from {args.teacher}" if args.teacher else ""))
    print(f"test top-1 {b['top1']:.2%} → {a['top1']:.2%}  F1 {b['f1']:.3f} → {a['f1']:.3f}  "
          f"(n={a['n']})")
    print(f"saved checkpoint and results.json in {out}")
    return 0


# ---------------------------------------------------------------------------------------
# train / demo: train a model from flags or a config file; the embedded demo (owner: train)
# ---------------------------------------------------------------------------------------


@command
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on a data set, evaluate it on the test "
                       "split and save a checkpoint")
    # Flags default to None = "not given", so a --config file's values are kept.
    p.add_argument("--model", default=None, metavar="NAME", help="model name (default digitscnn)")
    p.add_argument("--data", default=None, metavar="NAME", help="data set name (default digits)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="where the data set lives")
    p.add_argument("--download", action="store_true",
                   help="fetch the data set's official files if they are missing")
    _add_fit_flags(p, _NO_DEFAULTS, lr_help="default: the optimizer's own")
    p.add_argument("--bn-l1", type=float, default=None,
                   help="network slimming: L1 penalty on BatchNorm scale factors")
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="YAML config (a `train:` section or flat keys) or a bundled config "
                   "name such as 'demo'; flags override it")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default runs/<model>-<data>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _set_threads(n: int | None) -> None:
    if n is not None:
        if n < 1:
            raise NaspruneError(f"--threads must be at least 1, got {n}")
        import torch

        torch.set_num_threads(n)


def _config_path(arg: str | None) -> str | None:
    """A config file path, or the name of a bundled one (``--config demo``)."""
    from pathlib import Path

    if arg is None or Path(arg).exists() or "/" in arg or "\\" in arg:
        return arg
    from nasprune.config import bundled_config

    try:
        return str(bundled_config(arg))
    except NaspruneError:
        return arg  # reported as a missing file by the loader


def cmd_train(args) -> int:
    import dataclasses

    from nasprune.config import TrainConfig, load_config
    from nasprune.train.run import default_out, save_run, train_from_config

    keys = ("model", "data", "data_dir", "epochs", "batch_size", "optimizer", "lr",
            "momentum", "weight_decay", "schedule", "label_smoothing", "bn_l1", "augment",
            "seed", "device", "out")
    cfg = load_config(TrainConfig, _config_path(args.config),
                      {k: getattr(args, k) for k in keys})
    _set_threads(args.threads)
    out = default_out(cfg)
    cfg = dataclasses.replace(cfg, out=str(out))  # the resolved config names where it went
    run = train_from_config(cfg, progress=not args.quiet, download=args.download)
    save_run(run, out)
    t = run.test
    print(f"trained {cfg.model} on {cfg.data}: {len(run.fit.history)} epochs in "
          f"{run.fit.train_seconds:.1f} s ({run.fit.images_per_second:,.0f} images/s)")
    print(f"test top-1 {t['top1']:.2%}  top-5 {t['top5']:.2%}  F1 {t['f1']:.3f}  "
          f"(n={t['n']})")
    print(f"saved checkpoint, config.yaml and results.json in {out}")
    return 0


@command
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the embedded default: digits data, small CNN, no "
                       "download")
    p.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="output directory (default runs/demo)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    # One thread: the digits models' ops are too small to split, and on a busy CPU extra
    # OpenMP threads spin-wait (measured: 22 s vs 143 s for the demo at load 13 on 2 cores).
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads (default 1, fastest for these small models)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from nasprune.demo import run_demo

    _set_threads(args.threads)
    run_demo(out=args.out, progress=not args.quiet, device=args.device)
    return 0


# ---------------------------------------------------------------------------------------
# experiment / report: compare methods at one budget; HTML report of a run (owner: report)
# ---------------------------------------------------------------------------------------


def _csv_list(text: str | None, cast=str) -> list | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [cast(t) for t in items]
    except ValueError as exc:
        raise NaspruneError(f"cannot read the list '{text}': {exc}") from None


@command
def _add_experiment(sub) -> None:
    p = sub.add_parser("experiment", help="compare pruning methods (classic and NAS) at one "
                       "MACs budget: table, plots and an HTML report",
                       description="Compare pruning methods at one MACs budget. Re-running "
                       "resumes (finished methods are skipped). Exit code 0 when every "
                       "method finished, 1 when some failed (recorded in the table), 2 for "
                       "a bad config.")
    p.add_argument("--config", required=True, metavar="FILE.yaml|NAME",
                   help="experiment YAML (an `experiment:` section or flat keys) or a "
                   "bundled example name, e.g. example-digits")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run directory (default runs/<name>)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="recompute every method even if the run directory has its result")
    # Flags default to None = "not given", so the config file's values are kept.
    p.add_argument("--budget", type=float, default=None, metavar="F",
                   help="fraction of the unpruned model's MACs to keep (default 0.5)")
    p.add_argument("--methods", default=None, metavar="A,B,...",
                   help="comma-separated methods, e.g. unpruned,uniform,nas:evolution")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="fine-tuning epochs for every method")
    p.add_argument("--baseline-epochs", type=int, default=None, metavar="N",
                   help="training epochs of the unpruned model")
    p.add_argument("--trials", type=int, default=None, metavar="N", help="trials per search")
    p.add_argument("--seeds", default=None, metavar="S,S,...", help="e.g. 0,1,2")
    p.add_argument("--model", default=None, metavar="NAME")
    p.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="start from this saved model instead of training --model")
    p.add_argument("--data", default=None, metavar="NAME")
    p.add_argument("--data-dir", default=None, metavar="DIR")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_experiment)


def cmd_experiment(args) -> int:
    from nasprune.experiment import experiment

    overrides = {
        "budget": args.budget, "methods": _csv_list(args.methods),
        "finetune.epochs": args.epochs, "baseline.epochs": args.baseline_epochs,
        "search.trials": args.trials, "seeds": _csv_list(args.seeds, int),
        "model": args.model, "checkpoint": args.checkpoint, "data": args.data,
        "data_dir": args.data_dir, "device": args.device, "threads": args.threads,
    }
    result = experiment(args.config, args.out, resume=args.resume, overrides=overrides,
                        progress=not args.quiet)
    print(result.markdown(), end="")
    print(f"wrote results.md/.csv/.json, plots/ and report.html in {result.run_dir} "
          f"({len(result.computed)} computed, {len(result.skipped)} reused, "
          f"{len(result.failed)} failed, {result.seconds:.1f} s)")
    return 1 if result.failed else 0


@command
def _add_report(sub) -> None:
    p = sub.add_parser("report", help="write one self-contained report.html (tables, plots, "
                       "config, environment) for an experiment run directory")
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory of `nasprune experiment`")
    p.add_argument("--out", default=None, metavar="FILE.html",
                   help="where to write it (default RUN_DIR/report.html)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from pathlib import Path

    from nasprune.report import write_report

    if not Path(args.run_dir).is_dir():
        raise NaspruneError(f"run directory not found: {args.run_dir}")
    print(f"wrote {write_report(args.run_dir, args.out)}")
    return 0


# ---------------------------------------------------------------------------------------
# search: NAS over per-group prune ratios at a budget (owner: search)
# ---------------------------------------------------------------------------------------


@command
def _add_search(sub) -> None:
    p = sub.add_parser("search", help="search per-group prune ratios at a MACs/params/latency "
                       "budget and write them as JSON for `nasprune prune --ratios`")
    # Flags default to None = "not given", so a --config file's values are kept.
    p.add_argument("--model", default=None, metavar="NAME",
                   help="an untrained zoo model (to try the mechanics)")
    p.add_argument("--checkpoint", default=None, metavar="DIR", help="a trained, saved model")
    p.add_argument("--data", default=None, metavar="NAME",
                   help="data set (default: the checkpoint's)")
    p.add_argument("--data-dir", default=None, metavar="DIR")
    p.add_argument("--strategy", default=None, metavar="NAME",
                   help="random, evolution, bayes, tpe, rl, gan, predictor, differentiable")
    p.add_argument("--option", action="append", default=None, metavar="KEY=VALUE",
                   help="a strategy option, e.g. --option population=16 (repeatable)")
    p.add_argument("--target-macs", type=float, default=None, metavar="F",
                   help="keep at most this fraction of the MACs (default 0.5)")
    p.add_argument("--target-params", type=float, default=None, metavar="F")
    p.add_argument("--target-latency-ms", type=float, default=None, metavar="MS",
                   help="predicted latency (per-layer table measured once per device)")
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help="complete trials the study should hold at the end (default 50)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="sqlite:///FILE or postgresql://... (default: in memory)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="study name: an existing one is continued")
    p.add_argument("--objective", default=None, choices=("single", "multi"))
    p.add_argument("--min-keep", type=float, default=None, metavar="F")
    p.add_argument("--max-keep", type=float, default=None, metavar="F")
    p.add_argument("--round-to", type=int, default=None, metavar="N")
    p.add_argument("--bn-batches", type=int, default=None, metavar="N",
                   help="training batches for adaptive BN (default 20)")
    p.add_argument("--val-size", type=int, default=None, metavar="N",
                   help="validation images per candidate (default 1000)")
    p.add_argument("--finetune-steps", type=int, default=None, metavar="K")
    p.add_argument("--check-proxy", type=int, default=None, metavar="N",
                   help="fine-tune N candidates briefly and report the proxy's Spearman "
                   "correlation")
    p.add_argument("--check-proxy-epochs", type=float, default=None, metavar="E")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads")
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="YAML config (a `search:` section or flat keys); flags override it")
    p.add_argument("--out", default=None, metavar="FILE.json",
                   help="best prune ratios (default search.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_search)


def _options(items: list[str] | None) -> dict | None:
    if not items:
        return None
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NaspruneError(f"--option must look like KEY=VALUE, got '{item}'")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise NaspruneError(f"--option {item}: cannot read the value: {exc}") from None
    return out


def search_config_from_args(args):
    """The resolved :class:`SearchConfig` of parsed ``nasprune search`` flags (YAML < flags)."""
    from nasprune.config import load_config
    from nasprune.search.config import SearchConfig

    keys = ("model", "checkpoint", "data", "data_dir", "strategy", "target_macs",
            "target_params", "target_latency_ms", "trials", "storage", "study", "objective",
            "min_keep", "max_keep", "round_to", "bn_batches", "val_size", "finetune_steps",
            "check_proxy", "check_proxy_epochs", "seed", "device", "out")
    overrides = {k: getattr(args, k) for k in keys}
    overrides["strategy_options"] = _options(args.option)
    return load_config(SearchConfig, _config_path(args.config), overrides)


def cmd_search(args) -> int:
    from nasprune.search.command import run_search_command

    cfg = search_config_from_args(args)
    _set_threads(args.threads)
    run_search_command(cfg, progress=not args.quiet)
    return 0


# ---------------------------------------------------------------------------------------
# workers: N `nasprune search` processes on one shared study (owner: reliability)
# ---------------------------------------------------------------------------------------


@command
def _add_workers(sub) -> None:
    p = sub.add_parser(
        "workers", help="run N `nasprune search` processes on one study (shared --storage "
        "and --study); on a cluster run the same search command on every host",
        usage="nasprune workers [-n N] -- SEARCH_FLAGS...")
    p.add_argument("-n", "--workers", type=int, default=2, metavar="N",
                   help="worker processes on this machine (default 2)")
    p.add_argument("search_args", nargs=argparse.REMAINDER, metavar="SEARCH_FLAGS",
                   help="after --: the flags of `nasprune search`, including --storage URL "
                   "and --study NAME")
    p.set_defaults(func=cmd_workers)


def cmd_workers(args) -> int:
    from nasprune.search.workers import run_workers

    return run_workers(args.workers, args.search_args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NaspruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

