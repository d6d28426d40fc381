"""The typed state both roles keep about a session's money: its status, where its payment
channel's settlement stands, and the amounts, as stored in real columns (see
`money_store.MoneyStore`, which also migrates a store that kept them in its `extra` JSON)
and as the REST views emit them, at the top level of a session.

The enums are `StrEnum`s, so SQLite and JSON hold the same strings as before.
"""

from __future__ import annotations

import dataclasses
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class SessionStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class Settlement(StrEnum):
    NONE = "none"  # no channel to follow (a provider that takes no payments)
    OPEN = "open"  # the channel pays; vouchers are taken
    CLOSING = "closing"  # renter: it asked the ledger to close; the challenge period runs
    SETTLED = "settled"  # closed: claimed and refunded are final
    LOST = "lost"  # provider: the channel closed before its newest voucher was claimed
    UNKNOWN = "unknown"  # renter: the ledger could not be read; asked again next pass

    @property
    def final(self) -> bool:
        return self in (Settlement.SETTLED, Settlement.LOST)


@dataclass(kw_only=True)
class ChannelMoney:
    """A session's payment channel as one side records it; integer MIST throughout."""
    channel_id: str | None = None
    settlement: Settlement = Settlement.NONE
    deposit_mist: int = 0  # what the ledger last showed deposited
    voucher_mist: int = 0  # newest cumulative voucher: signed (renter), received (provider)
    claimed_mist: int = 0  # paid to the provider on the ledger
    refunded_mist: int = 0  # returned to the renter when the channel closed
    # away mode (issue #17): the largest away voucher signed beyond the regular chain
    # (renter) or held (provider), and when the renter's leave ends; 0 / None when off
    away_top_mist: int = 0
    away_until: float | None = None

    def is_away(self, now: float | None = None) -> bool:
        """Whether away mode holds now: a ladder signed and its time not over."""
        return bool(self.away_top_mist) and self.away_until is not None and \
            (time.time() if now is None else now) < self.away_until


@dataclass(kw_only=True)
class RenterMoney(ChannelMoney):
    settlement_error: str | None = None  # why the last settlement step failed
    refund_at: float | None = None  # when the challenge period of a closing channel ends
    away_budget_mist: int = 0  # what the provider may claim beyond what was paid, while away


@dataclass(kw_only=True)
class ProviderMoney(ChannelMoney):
    voucher_signature: str | None = None  # hex, of voucher_mist; never shown to the renter
    claimed_at: float | None = None  # the last claim while the session ran
    lost_mist: int = 0  # signed, never claimable: the channel closed before the claim
    away_vouchers: str | None = None  # JSON [[amount, signature hex], ...]; never shown


SQLITE_INT_MAX = 2**63 - 1  # what an INTEGER column holds
_SQL = {int: "INTEGER NOT NULL DEFAULT 0", str: "TEXT", float: "REAL"}


def money_fields(cls: type[ChannelMoney]) -> tuple[str, ...]:
    """The money fields of a record type; channel_id is the session's own column."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "channel_id")


def money_columns(cls: type[ChannelMoney]) -> dict[str, str]:
    """Column name -> SQLite declaration of each money field of `cls`."""
    hints = typing.get_type_hints(cls)
    out: dict[str, str] = {}
    for name in money_fields(cls):
        kind = hints[name]
        if kind is Settlement:
            out[name] = f"TEXT NOT NULL DEFAULT '{Settlement.NONE.value}'"
        else:  # X | None is nullable, with no default
            base = next(a for a in typing.get_args(kind) if a is not type(None)) \
                if isinstance(kind, types.UnionType) else kind
            out[name] = _SQL[base]
    return out


def legacy_money(cls: type[ChannelMoney], extra: dict[str, Any],
                 defaults: Callable[[dict[str, Any]], dict[str, Any]]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a previous release's `extra` into (money columns, what stays in extra).

    A value of the wrong type stays in extra as `unreadable_<key>` (nothing lost, and no
    money key left in extra) and its column takes the default; `defaults(money)` gives the
    fallbacks the previous release's readers used for the keys it lacked."""
    hints = typing.get_type_hints(cls)
    money: dict[str, Any] = {}
    rest = dict(extra)
    for name in money_fields(cls):
        if name not in extra:
            continue
        value, kind = extra[name], hints[name]
        if kind is Settlement:
            ok = value in {s.value for s in Settlement}
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) \
                and 0 <= value <= SQLITE_INT_MAX
        elif kind == float | None:
            ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
        else:
            ok = value is None or isinstance(value, str)
        del rest[name]
        if ok:
            money[name] = value
        else:
            rest[f"unreadable_{name}"] = value
    for name, value in defaults(money).items():
        money.setdefault(name, value)
    return money, rest


def money_of(row: dict[str, Any]) -> dict[str, Any]:
    """Turn a row's status and settlement columns into their enums."""
    if "settlement" in row:
        row["settlement"] = Settlement(row["settlement"])
    if "status" in row:
        row["status"] = SessionStatus(row["status"])
    return row
