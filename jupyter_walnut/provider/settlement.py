"""The provider's side of payment channels: admit a session only against an open channel
that can pay for it, keep the newest voucher, and settle when the session ends.

A session runs while the renter's vouchers keep up with metered cost: once the unpaid part
exceeds `grace_seconds` of the price, or the deposit is used up, the session is stopped.
So a renter who disappears costs the provider at most the grace period.
At the end the provider claims the newest voucher and closes the channel, which returns
everything unclaimed to the renter at once.

The renter holds the other end of the channel: it may top it up (the session's allowance
grows once the ledger shows the deposit) or ask the ledger to close it. So the provider reads
each running session's channel every `channel_check_interval_s`: a close request is answered
by claiming the newest voucher at once and stopping the session, well inside the challenge
period; long sessions are also claimed every `claim_interval_s`. A channel that closed before
the provider could claim is a final loss, recorded (settlement "lost") and not retried.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, fields

from ..common.errors import StatusError
from ..common.keys import KeyPair
from ..common.models import Settlement
from ..ledger import Channel, Ledger, LedgerError
from ..ledger.vouchers import verify_voucher
from .away import best_voucher
from .store import SessionRecord

log = logging.getLogger("walnut.provider.settlement")


@dataclass(frozen=True)
class SettlementPolicy:
    grace_seconds: int = 30  # unpaid metered time tolerated before stopping a session
    min_prepaid_seconds: int = 60  # a channel must lock at least this much time
    min_challenge_period_s: int = 60  # time the provider has to claim after a renter's close
    settle_after_s: int = 15  # wait this long after the end for the renter's final voucher
    channel_check_interval_s: int = 5  # read running sessions' channels this often
    claim_interval_s: int = 600  # claim the newest voucher of a running session this often
    bills_install: bool = False  # meter a session while its launch requirements install

    def problem(self) -> str | None:
        """What makes this policy unsafe ("key: why"), or None."""
        if self.channel_check_interval_s < 1:
            return "channel_check_interval_s: must be at least 1"
        if self.claim_interval_s < 1:
            return "claim_interval_s: must be at least 1"
        if self.min_challenge_period_s and \
                self.channel_check_interval_s >= self.min_challenge_period_s:
            # a close request must be seen while the provider can still claim
            return "channel_check_interval_s: must be below min_challenge_period_s"
        return None


SETTLEMENT_KEYS = tuple(f.name for f in fields(SettlementPolicy))


class PaymentError(StatusError):
    """A channel or voucher the provider refuses: 402 when it does not pay, 409 when it
    conflicts with what the session already holds, 503 when the ledger cannot be read."""


class ProviderSettlement:
    def __init__(self, ledger: Ledger, identity: KeyPair, policy: SettlementPolicy) -> None:
        self.ledger = ledger
        self.identity = identity
        self.policy = policy

    async def _call(self, fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def read_channel(self, channel_id: str) -> Channel:
        """The channel as the ledger holds it now, or PaymentError: a channel the ledger
        cannot show pays nothing (402), unless the ledger itself failed (its own 5xx)."""
        try:
            return await self._call(self.ledger.get_channel, channel_id)
        except LedgerError as exc:
            status = exc.status if exc.status >= 500 else 402
            raise PaymentError(status, f"channel {channel_id}: {exc.message}") from exc

    async def check_channel(self, channel_id: str, renter: str, renter_public_key: str,
                            price_mist_per_second: int) -> int:
        """The deposit of a channel fit for a new session, or PaymentError."""
        channel = await self.read_channel(channel_id)
        if channel.provider != self.identity.address:
            raise PaymentError(402, "the channel pays another provider")
        if channel.renter != renter:
            raise PaymentError(402, "the channel belongs to another renter")
        if channel.voucher_pubkey.hex() != renter_public_key:
            raise PaymentError(402, "the channel's voucher key is not the signing key")
        if channel.closed or channel.close_requested_at_ms is not None:
            raise PaymentError(402, "the channel is closed or closing")
        if channel.claimed:  # vouchers are cumulative per channel: one channel, one session
            raise PaymentError(409, "this channel already paid for a session")
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
        return channel.deposited

    def check_voucher(self, rec: SessionRecord, amount: int, signature: bytes) -> None:
        """A voucher the provider will keep; PaymentError says why not, and nothing changes."""
        if rec.channel_id is None:
            raise PaymentError(409, "this session has no payment channel")
        state = rec.settlement
        if state is Settlement.LOST:
            raise PaymentError(409, "this session's channel was closed on the ledger: "
                                    "vouchers for it are worth nothing")
        if state is not Settlement.OPEN:
            raise PaymentError(409, "this session's channel is already settled")
        if not verify_voucher(bytes.fromhex(rec.renter_public_key), rec.channel_id, amount,
                              signature):
            raise PaymentError(400, "voucher signature is not valid for this channel and amount")
        latest = rec.voucher_mist
        if amount < latest:
            raise PaymentError(409, f"out-of-order voucher: {amount} MIST is below the "
                                    f"{latest} MIST already signed")
        deposit = rec.deposit_mist
        if amount > deposit:
            raise PaymentError(400, f"voucher for {amount} MIST exceeds the deposit of "
                                    f"{deposit} MIST")

    def behind(self, rec: SessionRecord, now: float | None = None) -> str | None:
        """Why a running session must stop for payment, or None. While its renter is away
        (away.py) the top of its away vouchers counts as paid."""
        paid, deposit = rec.voucher_mist, rec.deposit_mist
        if rec.cost_mist >= deposit:
            return "the deposit is used up"
        unpaid = rec.cost_mist - paid > rec.price_mist_per_second * self.policy.grace_seconds
        if rec.is_away(now):
            if unpaid and rec.cost_mist >= rec.away_top_mist:
                return "the away budget is used up"
            return None
        if unpaid:
            if rec.away_top_mist and rec.away_until is not None:
                return "the away time is over and payment fell behind"
            return f"payment fell more than {self.policy.grace_seconds}s behind"
        return None

    async def claim_newest(self, rec: SessionRecord, settling: bool = False) -> int:
        """Claim the voucher that pays the metered cost best (away.best_voucher); the MIST
        paid now (0 when nothing is new). LedgerError E_CHANNEL_CLOSED when the channel
        closed before this claim."""
        pick = best_voucher(rec, rec.cost_mist, settling)
        if pick is None or pick[0] <= rec.claimed_mist:
            return 0
        amount, signature = pick
        try:
            return await self._call(self.ledger.claim, self.identity, rec.channel_id, amount,
                                    signature)
        except LedgerError as exc:
            if exc.code in ("E_STALE_VOUCHER", "E_DEPOSIT_EXHAUSTED"):
                return 0  # claimed before (a restart between claim and record)
            raise

    async def settle(self, rec: SessionRecord) -> dict:
        """Claim the newest voucher and close the channel; returns the settlement facts,
        money columns of the record (settlement "settled", or "lost" when the channel closed
        before the claim)."""
        try:
            paid = await self.claim_newest(rec, settling=True)
        except LedgerError as exc:
            if exc.code != "E_CHANNEL_CLOSED":
                raise
            return self.closed_without_claim(rec, await self.read_channel(rec.channel_id))
        try:
            channel = await self._call(self.ledger.provider_close, self.identity, rec.channel_id)
        except LedgerError as exc:
            if exc.code != "E_CHANNEL_CLOSED":
                raise
            channel = await self.read_channel(rec.channel_id)  # the renter finalized first
        log.info("session %s settled: claimed %d MIST (%d now), refunded %d MIST", rec.id,
                 channel.claimed, paid, channel.refunded)
        return {"settlement": Settlement.SETTLED, "claimed_mist": channel.claimed,
                "refunded_mist": channel.refunded}

    def closed_without_claim(self, rec: SessionRecord, channel: Channel) -> dict:
        """The facts of a channel the renter closed on the ledger: what the provider claimed
        before, and the signed rest it can never claim now (a final loss, not a retry)."""
        pick = best_voucher(rec, rec.cost_mist, settling=True)  # an away rung counts
        lost = max(0, (pick[0] if pick else rec.voucher_mist) - channel.claimed)
        if lost:
            log.error("session %s: the renter closed channel %s on the ledger before the "
                      "provider claimed; %d MIST of signed vouchers are lost", rec.id,
                      rec.channel_id, lost)
        return {"settlement": Settlement.LOST if lost else Settlement.SETTLED,
                "claimed_mist": channel.claimed,
                "refunded_mist": channel.refunded, "lost_mist": lost}
