"""``nasprune experiment``: compare pruning methods at one MACs budget."""

from __future__ import annotations

import argparse

from nasprune.cli._flags import (
    add_checkpoint,
    add_data,
    add_device_threads,
    add_out,
    add_quiet,
    add_task,
    csv_list,
    parse_options,
)
from nasprune.errors import NaspruneError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="compare pruning methods (classic and NAS) at one "
                       "MACs budget: table, plots and an HTML report",
                       description="Compare pruning methods at one MACs budget. Re-running "
                       "resumes (finished methods are skipped). Exit code 0 when every "
                       "method finished, 1 when some failed (recorded in the table), 2 for "
                       "a bad config.")
    p.add_argument("--config", required=True, metavar="FILE.yaml|NAME",
                   help="experiment YAML (an `experiment:` section or flat keys) or a "
                   "bundled example name, e.g. example-digits")
    add_out(p, "DIR", "run directory (default runs/<name>)")
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
    add_checkpoint(p, "start from this saved model instead of training --model", required=False)
    add_data(p)
    add_task(p)
    add_device_threads(p)
    add_quiet(p, "no progress lines")
    p.set_defaults(func=cmd_experiment)


def cmd_experiment(args: argparse.Namespace) -> int:
    if args.task is not None and args.data is not None:
        raise NaspruneError("give --task or --data, not both: the task brings its own data")
    from nasprune.experiment import experiment

    overrides = {
        "budget": args.budget, "methods": csv_list(args.methods),
        "finetune.epochs": args.epochs, "baseline.epochs": args.baseline_epochs,
        "search.trials": args.trials, "seeds": csv_list(args.seeds, int),
        "model": args.model, "checkpoint": args.checkpoint, "data": args.data,
        "data_dir": args.data_dir, "device": args.device, "threads": args.threads,
        "task": args.task,
        "task_args": parse_options(args.task_arg, "--task-arg") if args.task_arg else None,
    }
    result = experiment(args.config, args.out, resume=args.resume, overrides=overrides,
                        progress=not args.quiet)
    print(result.markdown(), end="")
    print(f"wrote results.md/.csv/.json, plots/ and report.html in {result.run_dir} "
          f"({len(result.computed)} computed, {len(result.skipped)} reused, "
          f"{len(result.failed)} failed, {result.seconds:.1f} s)")
    return 1 if result.failed else 0
