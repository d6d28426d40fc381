"""Settlement: payment channels with off-chain cumulative vouchers.

`LocalLedger` (SQLite, the default) and `SuiLedger` (pysui, imported lazily) implement
the same `Ledger` rules as the Move package in contracts/.
"""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

from .base import (
    ABORT_CODES,
    HTTP_STATUS,
    MIST_PER_SUI,
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
    "format_sui",
    "parse_sui",
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


def format_sui(mist: int) -> str:
    """'1.5 SUI' style text from integer MIST, exact (no float on the way)."""
    whole, frac = divmod(mist, MIST_PER_SUI)
    text = f"{whole:,}"
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return f"{text} SUI"


def parse_sui(text: str) -> int:
    """Exact MIST from a SUI amount such as '1.5' or '0.000000001'; never via float."""
    text = text.strip().replace("_", "").replace(",", "")
    if text.lower().endswith("sui"):
        text = text[:-3].strip()
    whole, _, frac = text.partition(".")
    if not (whole or frac) or not (whole or "0").isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not an amount of SUI: {text!r}")
    if len(frac) > 9:
        raise ValueError("SUI has 9 decimal places (1 MIST = 0.000000001 SUI)")
    return int(whole or "0") * MIST_PER_SUI + int(frac.ljust(9, "0") or "0")
