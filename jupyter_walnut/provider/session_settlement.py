"""A session's money on its payment channel: the renter's vouchers, claims while it runs,
following the channel on the ledger (a top-up, a close request, a close) and the settlement
once it ended."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..common.models import Settlement
from ..ledger import Channel, LedgerError
from .away import AwayRequest, check_rungs, merged_ladder
from .config import ProviderConfig
from .session_request import SessionError
from .settlement import PaymentError, ProviderSettlement
from .store import ACTIVE, SessionRecord, SessionStore

if TYPE_CHECKING:
    from .sessions import SessionManager

log = logging.getLogger("walnut.provider")


class SessionSettlement:
    """The channel side of sessions; `sessions` owns, stops and reports them."""

    def __init__(self, config: ProviderConfig, store: SessionStore,
                 settlement: ProviderSettlement | None, sessions: SessionManager) -> None:
        self.config = config
        self.store = store
        self.settlement = settlement
        self.sessions = sessions
        self._settling: dict[str, asyncio.Lock] = {}  # by session id, while it settles

    def record_voucher(self, session_id: str, renter: str, amount: int, signature: bytes
                       ) -> SessionRecord:
        """Keep a renter's newer voucher (persisted before it counts)."""
        if self.settlement is None:
            raise SessionError(409, "this node does not take payments")
        rec = self.sessions.owned(session_id, renter)
        self.settlement.check_voucher(rec, amount, signature)  # or PaymentError
        # one statement, and only over a smaller voucher of a channel still open
        if not self.store.update_money(session_id, monotonic="voucher_mist",
                                       expect={"settlement": Settlement.OPEN},
                                       voucher_mist=amount, voucher_signature=signature.hex()):
            raise SessionError(409, "a larger voucher or the settlement came first")
        return self.store.get(session_id)

    def set_away(self, session_id: str, renter: str, request: AwayRequest | None
                 ) -> SessionRecord:
        """Away mode on (or its ladder extended) until `request.seconds` from now, or off
        (None); checked whole before anything is kept (away.py)."""
        if self.settlement is None:
            raise SessionError(409, "this node does not take payments")
        rec = self.sessions.owned(session_id, renter)
        if rec.status not in ACTIVE:
            raise SessionError(409, f"session is {rec.status}")
        if rec.channel_id is None or rec.settlement is not Settlement.OPEN:
            raise SessionError(409, "this session's channel is not open")
        if request is None:
            self.store.update_money(session_id, away_top_mist=0, away_until=None,
                                    away_vouchers=None)
            return self.store.get(session_id)
        check_rungs(rec, request.rungs)  # or 400
        ladder = merged_ladder(rec, request.rungs)
        if not self.store.update_money(session_id, expect={"settlement": Settlement.OPEN},
                                       away_vouchers=ladder,
                                       away_top_mist=request.rungs[-1][0],
                                       away_until=time.time() + request.seconds):
            raise SessionError(409, "the settlement came first")
        log.info("session %s: away for %ds, up to %d MIST", session_id, request.seconds,
                 request.rungs[-1][0])
        return self.store.get(session_id)

    async def settle_once(self) -> None:
        """Settle ended sessions: once the final voucher covers the cost, or after a wait."""
        if self.settlement is None:
            return
        await asyncio.sleep(0)  # a caller polling this in a loop lets pending stops finish
        for rec in self.store.list(statuses=("stopped", "failed")):
            if rec.settlement is not Settlement.OPEN or rec.channel_id is None or \
                    self.sessions.is_stopping(rec.id):
                continue
            waited = time.time() - (rec.ended_at or 0)
            if rec.voucher_mist < rec.cost_mist and \
                    waited < self.settlement.policy.settle_after_s:
                continue
            await self._settle(rec.id)

    async def _settle(self, session_id: str) -> None:
        """Claim and close one ended session's channel; a ledger that fails is tried again on
        the next pass, a channel closed before the claim is recorded as a final loss."""
        # one settlement of a session at a time; a second caller waits for the first
        async with self._settling.setdefault(session_id, asyncio.Lock()):
            rec = self.store.get(session_id)
            if rec.settlement is not Settlement.OPEN:
                return
            try:
                facts = await self.settlement.settle(rec)
            except Exception as exc:  # the ledger is unreachable: try again next pass
                log.warning("settling session %s failed (tried again): %s", rec.id, exc)
                return
            self._record_settlement(rec.id, facts)
        self._settling.pop(session_id, None)

    def _record_settlement(self, session_id: str, facts: dict) -> None:
        self.store.update_money(session_id, **facts)  # only these columns: vouchers stay
        final = self.store.get(session_id)
        self.sessions.on_event(
            "settlement_lost" if final.settlement is Settlement.LOST else "settled", final)

    # --- the renter's channel on the ledger ----------------------------------------------

    async def channels_once(self) -> None:
        """Follow every running session's channel: a top-up extends the session, a close
        request is claimed at once and stops it, a closed channel stops it and is recorded
        as lost; long sessions are claimed every `claim_interval_s`."""
        if self.settlement is None:
            return
        for rec in self.store.list(statuses=("running",)):
            if rec.channel_id is None or self.sessions.metering.is_unsaved(rec.id):
                continue
            try:
                channel = await self.settlement.read_channel(rec.channel_id)
            except PaymentError as exc:
                log.warning("session %s: cannot read channel %s: %s", rec.id, rec.channel_id,
                            exc.message)
                continue
            await self._follow_channel(rec.id, channel)

    async def _follow_channel(self, session_id: str, channel: Channel) -> None:
        rec = self.store.get(session_id)
        if rec is None or rec.status != "running":
            return
        if channel.closed:
            await self.sessions.stop(rec.id, status="stopped", reason=(
                "the payment channel was closed on the ledger: this session is no longer paid"))
            await self._settle(rec.id)
        elif channel.close_requested_at_ms is not None:
            await self._claim(rec.id, settling=True)  # inside the challenge period
            await self.sessions.stop(rec.id, status="stopped", reason=(
                "the renter asked the ledger to close the payment channel"))
        else:
            self._extend(rec, channel)
            if time.time() - (rec.claimed_at or rec.started_at or 0) >= \
                    self.settlement.policy.claim_interval_s:
                await self._claim(rec.id)

    async def _claim(self, session_id: str, settling: bool = False) -> None:
        """Claim a running session's newest voucher now; a closed channel stops it."""
        rec = self.store.get(session_id)
        try:
            paid = await self.settlement.claim_newest(rec, settling)
        except LedgerError as exc:
            if exc.code != "E_CHANNEL_CLOSED":
                log.warning("session %s: claim failed (tried again): %s", session_id, exc)
                return
            try:
                channel = await self.settlement.read_channel(rec.channel_id)
            except PaymentError as err:
                log.warning("session %s: %s", session_id, err.message)
                return
            await self._follow_channel(session_id, channel)
            return
        changes: dict = {"claimed_at": time.time()}
        if paid:
            changes["claimed_mist"] = rec.claimed_mist + paid
            log.info("session %s: claimed %d MIST while running", session_id, paid)
        self.store.update_money(session_id, **changes)

    def _extend(self, rec: SessionRecord, channel: Channel) -> SessionRecord:
        """A deposit the ledger shows larger than the session's (a top-up) buys more time,
        up to the node's maximum duration."""
        if channel.deposited <= rec.deposit_mist:
            return rec
        max_seconds = rec.max_seconds
        if rec.price_mist_per_second:
            bought = min(self.config.availability.max_session_seconds,
                         channel.deposited // rec.price_mist_per_second)
            max_seconds = max(max_seconds, bought)
        self.store.update(rec.id, max_seconds=max_seconds)
        self.store.update_money(rec.id, monotonic="deposit_mist", deposit_mist=channel.deposited)
        log.info("session %s: deposit now %d MIST, up to %ds", rec.id, channel.deposited,
                 max_seconds)
        return self.store.get(rec.id)

    async def top_up(self, session_id: str, renter: str) -> SessionRecord:
        """The renter says it topped up its channel: the ledger, not the renter, says by
        how much."""
        if self.settlement is None:
            raise SessionError(409, "this node does not take payments")
        rec = self.sessions.owned(session_id, renter)
        if rec.status not in ACTIVE:
            raise SessionError(409, f"session is {rec.status}")
        channel = await self.settlement.read_channel(rec.channel_id)  # or PaymentError
        if channel.closed or channel.close_requested_at_ms is not None:
            await self._follow_channel(rec.id, channel)
            raise SessionError(409, f"the channel is {channel.status}: the session stops")
        rec = self.sessions.owned(session_id, renter)  # fresh after the await
        return self._extend(rec, channel)
