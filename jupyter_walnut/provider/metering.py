"""Metering of running sessions: running time against this process's monotonic clock,
checkpointed to the store, ends kept in memory while the store cannot take them (a full disk),
and the stop of a session that reached its duration or fell behind on payment.

Metering uses this process's monotonic clock while it runs. A provider that was down (a
crash or a restart) charges nothing for the time it was down: an adopted session is metered
again from its adoption, so the renter pays only for time its session was reachable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from ..common.sqlite_store import StorageError
from .settlement import ProviderSettlement
from .store import SessionRecord, SessionStore

if TYPE_CHECKING:
    from .sessions import SessionManager

log = logging.getLogger("walnut.provider")


class Metering:
    """Running time per session; `sessions` stops the sessions whose time is up."""

    def __init__(self, store: SessionStore, settlement: ProviderSettlement | None,
                 sessions: SessionManager) -> None:
        self.store = store
        self.settlement = settlement
        self.sessions = sessions
        self._mono: dict[str, float] = {}  # session id -> monotonic time of last checkpoint
        # ends of sessions the store could not take yet (a full disk): unmetered ms, fields
        self._unsaved: dict[str, tuple[int, dict]] = {}

    def begin(self, session_id: str) -> None:
        """Meter a session from now on (it started, or was adopted after a restart)."""
        self._mono[session_id] = time.monotonic()

    def forget(self, session_id: str) -> None:
        """Stop metering a session that never ran (a failed start: nothing is billed)."""
        self._mono.pop(session_id, None)

    def is_metered(self, session_id: str) -> bool:
        return session_id in self._mono

    def is_unsaved(self, session_id: str) -> bool:
        """Whether the session ended but its end is not in the store yet."""
        return session_id in self._unsaved

    def record_end(self, session_id: str, **fields) -> None:
        unmetered = self._unmetered_ms(session_id, time.monotonic())
        self._mono.pop(session_id, None)
        pending_ms, pending = self._unsaved.get(session_id, (0, {}))
        self._unsaved[session_id] = (pending_ms + unmetered, {**pending, **fields})
        self._write_end(session_id)

    def _write_end(self, session_id: str) -> None:
        """Write a session's end kept in memory; kept there while the store cannot take it."""
        unmetered, fields = self._unsaved[session_id]
        try:
            if unmetered:
                self.store.add_running_time(session_id, unmetered, time.time())
                self._unsaved[session_id] = (0, fields)
            self.store.update(session_id, **fields)
        except StorageError as exc:
            log.error("session %s ended but is not recorded yet: %s", session_id, exc.message)
            return
        del self._unsaved[session_id]

    def as_recorded(self, rec: SessionRecord) -> SessionRecord:
        """The record as it will be written once the disk allows."""
        unmetered, fields = self._unsaved.get(rec.id, (0, {}))
        return replace(rec, running_ms=rec.running_ms + unmetered, **fields)

    def _unmetered_ms(self, session_id: str, now: float) -> int:
        """Running time since the last checkpoint written to the store (0 if not metered)."""
        last = self._mono.get(session_id)
        return 0 if last is None else int((now - last) * 1000)

    def checkpoint(self, session_id: str) -> None:
        if session_id not in self._mono:
            return
        mono = time.monotonic()
        self.store.add_running_time(session_id, self._unmetered_ms(session_id, mono), time.time())
        self._mono[session_id] = mono

    async def meter_once(self) -> None:
        for session_id in list(self._unsaved):
            self._write_end(session_id)
        running = [rec for rec in self.store.list(statuses=("running",))
                   if rec.id not in self._unsaved]
        mono, wall = time.monotonic(), time.time()
        deltas = [(rec.id, self._unmetered_ms(rec.id, mono), wall)
                  for rec in running if rec.id in self._mono]
        try:
            self.store.add_running_times(deltas)  # every session's checkpoint, one commit
        except StorageError as exc:
            log.error("metering %d sessions: %s", len(deltas), exc.message)
            # judged on the time they really ran: the checkpoints stay where they were
            running = [replace(rec, running_ms=rec.running_ms + self._unmetered_ms(rec.id, mono))
                       for rec in running]
        else:
            for session_id, _, _ in deltas:
                self._mono[session_id] = mono
            listed = {rec.id for rec in running}
            running = [rec for rec in self.store.list(statuses=("running",))
                       if rec.id in listed]
        for rec in running:
            if rec.running_ms >= rec.max_seconds * 1000:
                await self.sessions.stop(rec.id, reason=self._limit_reason(rec),
                                         status="stopped")
            elif self.settlement is not None and (why := self.settlement.behind(rec)):
                await self.sessions.stop(rec.id, reason=why, status="stopped")

    def _limit_reason(self, rec: SessionRecord) -> str:
        """Why a session that reached max_seconds stops: its deposit buys no more second,
        or the duration it asked for (or the node allows) is over."""
        if self.settlement is not None and rec.price_mist_per_second \
                and rec.deposit_mist - rec.cost_mist < rec.price_mist_per_second:
            return "the deposit is used up"
        return "maximum duration reached"
