"""The `walnut` command: a small dispatcher over subcommand modules.

Each module in SUBCOMMANDS has `add_parser(subparsers)`, which registers its parser and
sets `func(args) -> int` as the parser default. Errors the user can act on surface as
one line on stderr with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ...common.cli import CommandError, run_command  # noqa: F401  (subcommands raise it)
from . import job, wallet

SUBCOMMANDS = [wallet, job]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="walnut", description="Walnut: rent remote Jupyter kernels by the second."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return run_command(args.func, args)
