"""The ``nasprune`` command line: one sub-command per verb, one module per verb.

Each verb module (``nasprune.cli.<verb>``) has ``add(subparsers)``, which defines its flags,
and ``cmd_<verb>(args) -> int``. Heavy imports happen inside the commands so ``nasprune
--help`` is instant. A :class:`NaspruneError` becomes one ``error: ...`` line on stderr and
exit code 2, never a traceback; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nasprune.cli import (
    demo,
    evaluate,
    experiment,
    finetune,
    prune,
    report,
    search,
    train,
    workers,
)
from nasprune.cli._parser import root_parser
from nasprune.errors import NaspruneError

# --help lists the verbs in the order a new user meets them.
_VERBS = (demo, train, evaluate, prune, finetune, search, workers, experiment, report)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every verb."""
    parser, sub = root_parser()
    for verb in _VERBS:
        verb.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nasprune ARGV``; returns the exit code."""
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
