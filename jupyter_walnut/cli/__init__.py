"""The `walnut` command: a small dispatcher over subcommand modules.

Each module in SUBCOMMANDS has `add_parser(subparsers)`, which registers its parser and
sets `func(args) -> int` as the parser default. Errors the user can act on surface as
one line on stderr with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS = ["jupyter_walnut.cli.wallet", "jupyter_walnut.cli.job"]


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="walnut", description="Walnut: rent remote Jupyter kernels by the second."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def run_command(func, args: argparse.Namespace, prog: str = "walnut") -> int:
    """Run a subcommand, turning known failures into one line on stderr and exit code 1."""
    from ..keys import KeyError_
    from ..ledger import LedgerError
    from ..sqlite_store import StorageError

    try:
        return int(func(args) or 0)
    except (CommandError, LedgerError, KeyError_, StorageError, ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return run_command(args.func, args)
