"""The ``nasprune`` parser, without its verbs: the CLI adds them all, ``workers`` only
``search`` (to check a worker's flags the way ``nasprune search`` will, same messages)."""

from __future__ import annotations

import argparse
import sys


class Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags already; keep its message to one line plus usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


def root_parser() -> tuple[Parser, argparse._SubParsersAction]:
    """The top-level parser and the sub-parsers action its verbs are added to."""
    from nasprune import __version__

    parser = Parser(
        prog="nasprune",
        description="Prune a trained network to a MACs, parameter or latency budget: search "
                    "how many channels each layer keeps, remove them for real, fine-tune, "
                    "and compare with the classic methods. Start with `nasprune demo`.")
    parser.add_argument("--version", action="version", version=f"nasprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    return parser, sub
