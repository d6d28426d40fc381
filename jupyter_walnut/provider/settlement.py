"""The provider's side of payment channels: admit a session only against an open channel
that can pay for it, keep the newest voucher, and settle when the session ends.

A session runs while the renter's vouchers keep up with metered cost: once the unpaid part
exceeds `grace_seconds` of the price, or the deposit is used up, the session is stopped.
So a renter who disappears costs the provider at most the grace period.
At the end the provider claims the newest voucher and closes the channel, which returns
everything unclaimed to the renter at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ..keys import KeyPair
from ..ledger import Ledger, LedgerError
from ..ledger.vouchers import verify_voucher
from .store import SessionRecord

log = logging.getLogger("walnut.provider.settlement")


@dataclass(frozen=True)
class SettlementPolicy:
    grace_seconds: int = 30  # unpaid metered time tolerated before stopping a session
    min_prepaid_seconds: int = 60  # a channel must lock at least this much time
    min_challenge_period_s: int = 60  # time the provider has to claim after a renter's close
    settle_after_s: int = 15  # wait this long after the end for the renter's final voucher


class PaymentError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ProviderSettlement:
    def __init__(self, ledger: Ledger, identity: KeyPair, policy: SettlementPolicy) -> None:
        self.ledger = ledger
        self.identity = identity
        self.policy = policy

    async def _call(self, fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def check_channel(self, channel_id: str, renter: str, renter_public_key: str,
                            price_mist_per_second: int) -> int:
        """The deposit still locked in a channel fit for a new session, or PaymentError."""
        try:
            channel = await self._call(self.ledger.get_channel, channel_id)
        except LedgerError as exc:
            status = 503 if exc.code == "E_NODE" else 402
            raise PaymentError(status, f"channel {channel_id}: {exc.message}") from exc
        if channel.provider != self.identity.address:
            raise PaymentError(402, "the channel pays another provider")
        if channel.renter != renter:
            raise PaymentError(402, "the channel belongs to another renter")
        if channel.voucher_pubkey.hex() != renter_public_key:
            raise PaymentError(402, "the channel's voucher key is not the signing key")
        if channel.closed or channel.close_requested_at_ms is not None:
            raise PaymentError(402, "the channel is closed or closing")
        if channel.price_per_second_mist < price_mist_per_second:
            raise PaymentError(402, f"the channel's price ({channel.price_per_second_mist} "
                                    f"MIST/s) is below this shape's {price_mist_per_second}")
        if channel.challenge_period_ms < self.policy.min_challenge_period_s * 1000:
            raise PaymentError(402, f"the channel's challenge period must be at least "
                                    f"{self.policy.min_challenge_period_s}s")
        needed = price_mist_per_second * self.policy.min_prepaid_seconds
        if channel.locked < needed:
            raise PaymentError(402, f"the channel locks {channel.locked} MIST; this shape needs "
                                    f"at least {needed} MIST ({self.policy.min_prepaid_seconds}s)")
        return channel.locked

    def check_voucher(self, rec: SessionRecord, amount: int, signature: bytes) -> None:
        """A voucher the provider will keep; PaymentError says why not, and nothing changes."""
        if rec.channel_id is None:
            raise PaymentError(409, "this session has no payment channel")
        if rec.extra.get("settlement", "open") != "open":
            raise PaymentError(409, "this session's channel is already settled")
        if not verify_voucher(bytes.fromhex(rec.renter_public_key), rec.channel_id, amount,
                              signature):
            raise PaymentError(400, "voucher signature is not valid for this channel and amount")
        latest = rec.extra.get("voucher_mist", 0)
        if amount < latest:
            raise PaymentError(409, f"out-of-order voucher: {amount} MIST is below the "
                                    f"{latest} MIST already signed")
        deposit = rec.extra.get("deposit_mist", 0)
        if amount > deposit:
            raise PaymentError(400, f"voucher for {amount} MIST exceeds the deposit of "
                                    f"{deposit} MIST")

    def behind(self, rec: SessionRecord) -> str | None:
        """Why a running session must stop for payment, or None."""
        paid = rec.extra.get("voucher_mist", 0)
        deposit = rec.extra.get("deposit_mist", 0)
        if rec.cost_mist >= deposit:
            return "the deposit is used up"
        if rec.cost_mist - paid > rec.price_mist_per_second * self.policy.grace_seconds:
            return f"payment fell more than {self.policy.grace_seconds}s behind"
        return None

    async def settle(self, rec: SessionRecord) -> dict:
        """Claim the newest voucher and close the channel; returns the settlement facts."""
        extra = dict(rec.extra)
        amount = extra.get("voucher_mist", 0)
        paid = 0
        if amount > 0:
            try:
                paid = await self._call(self.ledger.claim, self.identity, rec.channel_id, amount,
                                        bytes.fromhex(extra["voucher_signature"]))
            except LedgerError as exc:
                if exc.code not in ("E_STALE_VOUCHER", "E_DEPOSIT_EXHAUSTED"):
                    raise
        try:
            channel = await self._call(self.ledger.provider_close, self.identity, rec.channel_id)
            refunded = channel.refunded
        except LedgerError as exc:
            if exc.code != "E_CHANNEL_CLOSED":
                raise
            refunded = (await self._call(self.ledger.get_channel, rec.channel_id)).refunded
        extra.update(settlement="settled", claimed_mist=amount, paid_now_mist=paid,
                     refunded_mist=refunded)
        log.info("session %s settled: claimed %d MIST, refunded %d MIST", rec.id, amount,
                 refunded)
        return extra
