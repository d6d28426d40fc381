"""Settlement: payment channels with off-chain cumulative vouchers.

`LocalLedger` (SQLite, the default) and `SuiLedger` (pysui, imported lazily) implement
the same `Ledger` rules as the Move package in contracts/.
"""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

from ..common.money import MIST_PER_SUI  # re-exported: the ledger's unit
from .base import (
    ABORT_CODES,
    HTTP_STATUS,
    Channel,
    Ledger,
    LedgerError,
    ProviderEntry,
)
from .local import LocalLedger
from .vouchers import Voucher, parse_voucher_message, verify_voucher, voucher_message

__all__ = [
    "ABORT_CODES",
    "HTTP_STATUS",
    "MIST_PER_SUI",
    "Channel",
    "Ledger",
    "LedgerError",
    "LocalLedger",
    "ProviderEntry",
    "Voucher",
    "default_ledger_path",
    "parse_voucher_message",
    "verify_voucher",
    "voucher_message",
    "walnut_home",
]


def walnut_home() -> Path:
    """Root of the renter's walnut state: $WALNUT_HOME, else <jupyter data dir>/walnut."""
    env = os.environ.get("WALNUT_HOME")
    if env:
        return Path(env).expanduser()
    return Path(jupyter_data_dir()) / "walnut"


def default_ledger_path() -> Path:
    """$WALNUT_LEDGER, else <walnut home>/ledger.sqlite; provider and renter can share it."""
    env = os.environ.get("WALNUT_LEDGER")
    if env:
        return Path(env).expanduser()
    return walnut_home() / "ledger.sqlite"
