"""Arguments and actions of `job` and `sweep`, shared by `walnut job` and `%walnut job`."""

from __future__ import annotations

import argparse
from typing import Any


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?")


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?")


def run_job_command(args: argparse.Namespace, manager: Any, ui: Any, listed=None) -> Any:
    raise NotImplementedError("jobs are not available yet")


def run_sweep_command(args: argparse.Namespace, manager: Any, ui: Any, listed=None) -> Any:
    raise NotImplementedError("sweeps are not available yet")
