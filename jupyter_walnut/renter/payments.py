"""The renter's side of payment channels: open one per session, sign cumulative vouchers in
arrears as metered time passes, and get the rest back when the session ends.

A voucher never exceeds what the renter can account for itself: the provider's metered
cost, capped by the renter's own clock (time since the session started, plus a small
tolerance) and by the deposit. So a renter pays at most price x metered seconds.
"""

from __future__ import annotations

import asyncio
import time

from traitlets import Int
from traitlets.config import LoggingConfigurable

from ..common.keys import KeyPair
from ..common.models import Settlement
from ..ledger import Channel, Ledger, LedgerError
from ..ledger.vouchers import Voucher
from .store import RenterSession


class RenterPayments(LoggingConfigurable):
    """Configured as `c.RenterPayments.<name>` (RenterManager makes it with `parent=`)."""

    challenge_period_s = Int(
        600, help="Seconds of challenge period asked for each channel "
                  "(WalnutApp.challenge_period).")
    clock_tolerance_s = Int(
        5, config=True, help="Seconds a voucher may run ahead of the renter's own clock.")
    refund_after_s = Int(
        120, config=True,
        help="Seconds after a session ended before the renter recovers a channel the "
             "provider left open.")

    def __init__(self, ledger: Ledger, key: KeyPair, **kwargs) -> None:
        super().__init__(**kwargs)  # the traits above, parent= / config=
        self.ledger = ledger
        self.key = key

    async def _call(self, fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def balance(self) -> int:
        return await self._call(self.ledger.balance, self.key.address)

    async def open(self, provider_address: str, price_mist_per_second: int, deposit: int
                   ) -> Channel:
        """The session's channel, or LedgerError (its status from the ledger's table)."""
        try:
            return await self._call(self.ledger.open_channel, self.key, provider_address,
                                    self.key.public_key, deposit, price_mist_per_second,
                                    self.challenge_period_s)
        except LedgerError as exc:
            if exc.code != "E_INSUFFICIENT_FUNDS":
                raise
            balance = await self.balance()  # say how short the wallet is
            raise LedgerError("E_INSUFFICIENT_FUNDS", f"insufficient balance: the deposit is "
                              f"{deposit} MIST, the wallet holds {balance} MIST") from exc

    async def top_up(self, channel_id: str, amount: int) -> Channel:
        """The topped-up channel, or LedgerError (its status from the ledger's table)."""
        return await self._call(self.ledger.top_up, self.key, channel_id, amount)

    def voucher_for(self, session: RenterSession, provider_cost_mist: int,
                    now: float | None = None) -> Voucher | None:
        """The next voucher to sign, or None when nothing new is owed."""
        if session.channel_id is None or session.started_at is None:
            return None
        now = time.time() if now is None else now
        end = session.ended_at or now
        own_seconds = max(0, int(end - session.started_at)) + self.clock_tolerance_s
        amount = min(provider_cost_mist, own_seconds * session.price_mist_per_second,
                     session.deposit_mist)
        if amount <= session.voucher_mist:
            return None
        return Voucher.sign(self.key, session.channel_id, amount)

    async def settlement_state(self, session: RenterSession, now: float | None = None) -> dict:
        """Where the session's money stands, as the money columns to set (an error of an
        earlier pass is cleared); recovers a channel the provider left open."""
        now = time.time() if now is None else now
        try:
            channel = await self._call(self.ledger.get_channel, session.channel_id)
        except LedgerError as exc:
            return {"settlement": Settlement.UNKNOWN, "settlement_error": exc.message}
        facts = {"deposit_mist": channel.deposited, "claimed_mist": channel.claimed,
                 "refunded_mist": channel.refunded, "settlement_error": None}
        if channel.closed:
            return {**facts, "settlement": Settlement.SETTLED}
        if channel.close_requested_at_ms is None:
            if session.ended_at is not None and now - session.ended_at > self.refund_after_s:
                try:  # the provider never settled: start the challenge period
                    await self._call(self.ledger.request_close, self.key, session.channel_id)
                except LedgerError as exc:
                    return {**facts, "settlement": Settlement.OPEN,
                            "settlement_error": exc.message}
                return {**facts, "settlement": Settlement.CLOSING}
            return {**facts, "settlement": Settlement.OPEN}
        try:  # the ledger's clock decides whether the challenge period is over
            closed = await self._call(self.ledger.finalize_close, self.key, session.channel_id)
        except LedgerError as exc:
            state = {**facts, "settlement": Settlement.CLOSING,
                     "refund_at": (channel.close_allowed_at_ms() or 0) / 1000}
            if exc.code != "E_CHALLENGE_PERIOD_ACTIVE":
                state["settlement_error"] = exc.message
            return state
        return {"deposit_mist": closed.deposited, "claimed_mist": closed.claimed,
                "refunded_mist": closed.refunded, "settlement": Settlement.SETTLED,
                "settlement_error": None}
