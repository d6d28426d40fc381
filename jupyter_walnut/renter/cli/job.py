"""`walnut job ...` and `walnut sweep ...`: batch jobs from a terminal.

Providers come from $WALNUT_PROVIDERS (comma-separated) or --provider; state lives in the
Walnut home ($WALNUT_HOME), so any later shell can follow a job another one submitted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from ...common.cli import CommandError
from ...ledger import walnut_home
from ..jobs.cli_args import (
    add_job_arguments,
    add_sweep_arguments,
    run_job_command,
    run_sweep_command,
)
from ..jobs.manager import JobError, JobManager
from ..jobs.offers import OfferError
from ..manager import RenterError, RenterManager
from ..provider_client import ProviderAPIError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    job = subparsers.add_parser("job", help="batch jobs that run unattended on a provider",
                                description="Submit, follow and fetch batch jobs.")
    job.add_argument("--provider", action="append", default=[], metavar="URL",
                     help="a provider to use (also $WALNUT_PROVIDERS)")
    add_job_arguments(job)
    job.set_defaults(func=cmd_job)
    sweep = subparsers.add_parser("sweep", help="one notebook over a grid of parameters",
                                  description="Fan a notebook out over parameter sets.")
    sweep.add_argument("--provider", action="append", default=[], metavar="URL")
    add_sweep_arguments(sweep)
    sweep.set_defaults(func=cmd_sweep)


class TerminalUI:
    def run(self, factory) -> Any:
        width = 0

        def progress(line: str) -> None:
            nonlocal width
            head, _, rest = line.partition(" ")
            text = rest if "/" in head and head.replace("/", "").isdigit() else line
            if sys.stderr.isatty():
                sys.stderr.write("\r" + text.ljust(width))
                width = len(text)
            else:
                sys.stderr.write(text + "\n")
            sys.stderr.flush()

        try:
            return asyncio.run(factory(progress))
        finally:
            if width:
                sys.stderr.write("\n")


def _manager(args: argparse.Namespace):
    env = [u.strip() for u in os.environ.get("WALNUT_PROVIDERS", "").split(",") if u.strip()]
    return JobManager(RenterManager(walnut_home(), [*env, *args.provider]))


def _run(action, args: argparse.Namespace) -> int:
    try:
        out = action(args, _manager(args), TerminalUI())
    except (JobError, OfferError, RenterError, ProviderAPIError) as exc:
        raise CommandError(getattr(exc, "message", None) or str(exc)) from exc
    print(json.dumps(out, indent=1) if isinstance(out, dict) else out)
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    return _run(run_job_command, args)


def cmd_sweep(args: argparse.Namespace) -> int:
    return _run(run_sweep_command, args)
