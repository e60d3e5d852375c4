"""``nasprune report``: one self-contained report.html for an experiment run directory."""

from __future__ import annotations

import argparse

from nasprune.cli._flags import add_out
from nasprune.errors import NaspruneError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write one self-contained report.html (tables, plots, "
                       "config, environment) for an experiment run directory")
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory of `nasprune experiment`")
    add_out(p, "FILE.html", "where to write it (default RUN_DIR/report.html)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nasprune.report import write_report

    if not Path(args.run_dir).is_dir():
        raise NaspruneError(f"run directory not found: {args.run_dir}")
    print(f"wrote {write_report(args.run_dir, args.out)}")
    return 0
