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
    p.add_argument("--data", required=True, metavar="NAME", help="data set name, e.g. digits")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="where the data set lives")
    p.add_argument("--download", action="store_true",
                   help="fetch the data set's official files if they are missing")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--seed", type=int, default=0,
                   help="data split seed; use the training run's to get the same val split")
    p.add_argument("--batch-size", type=int, default=256, metavar="N")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.add_argument("--latency", action="store_true",
                   help="also measure latency (median/p90) at batch 1 and 64")
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

    from nasprune.checkpoint import load
    from nasprune.data import load_dataset
    from nasprune.metrics import format_summary, resolve_device, summarize, write_json

    model = load(ckpt)  # before the data: a bad checkpoint fails fast, without a long decode
    extra = {"download": True} if args.download else {}
    data = load_dataset(args.data, root=args.data_dir, seed=args.seed, **extra)
    if args.device is not None:
        model.to(resolve_device(args.device))
    summary = {"checkpoint": str(ckpt), "model": (getattr(model, "nasprune_arch", None)
                                                  or {}).get("name")}
    summary.update(summarize(model, data, split=args.split, batch_size=args.batch_size,
                             latency=args.latency))
    print(f"{ckpt} ({summary['model'] or type(model).__name__}) on {format_summary(summary)}")
    if args.out:
        print(f"wrote {write_json(summary, args.out)}")
    return 0


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
