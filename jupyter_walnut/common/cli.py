"""What every Walnut command line shares: one-line errors and exit codes, never a traceback."""

from __future__ import annotations

import argparse
import sys

from .errors import WalnutError


class CommandError(WalnutError):
    """A user-facing failure: printed as one line, exit code 1."""


def run_command(func, args: argparse.Namespace, prog: str = "walnut") -> int:
    """Run a subcommand, turning known failures into one line on stderr and exit code 1."""
    try:
        return int(func(args) or 0)
    except (WalnutError, ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


