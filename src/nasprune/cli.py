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
    parser = _Parser(prog="nasprune", description=__doc__.splitlines()[0])
    from nasprune import __version__

    parser.add_argument("--version", action="version", version=f"nasprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    return parser


# Each entry adds one sub-command; modules for the verbs live beside their subject.
_COMMANDS: list = []


def command(fn):
    """Register a function ``add(subparsers)`` that defines one verb."""
    _COMMANDS.append(fn)
    return fn


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
