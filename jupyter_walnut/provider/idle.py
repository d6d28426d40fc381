"""Idle auto-stop (issue #17): a running session whose kernels have done nothing for its
threshold (`idle_stop_s`, from the create request or a PATCH; 0 = never) is stopped through
the normal stop path, which saves its results (issue #16), with the reason "idle for N min".

What the provider reads, every `interval_s`, from the session's gateway (`api/kernels` and
`api/terminals`, with the gateway token, as jobs.py reaches it):

- a kernel whose `execution_state` is anything but idle (busy, starting, restarting) makes
  the session not idle: a long cell is never stopped, whoever is attached;
- otherwise the idle clock starts at the newest `last_activity` of its kernels and
  terminals: the last message a kernel sent (a cell's end, a completion while someone
  types, a widget's update) or a terminal's last output; for an away session that is when
  its last cell finished;
- an open connection alone is not attendance: the renter's own Jupyter Server holds a
  websocket to every kernel it runs, and so does a browser tab left open on a forgotten
  notebook, which is the case this is for. `connections` is shown, never counted.
  "Keep running" (a PATCH) restarts the clock.

Trust: the gateway runs in the renter's container, so what it answers is the renter's word.
A renter that lies can only keep its own session alive, and it pays for every second of
that; a renter that answers garbage (not JSON, the wrong shape, too big, unreachable) gets
the same: the pass counts as "not idle" and says so once in the log. Nothing a renter sends
makes the provider stop a session before its threshold: the clock never starts before the
session ran and this node first watched it, and an activity time in the future counts as now.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..common.protocol import token_auth
from .session_request import MAX_IDLE_STOP_S
from .store import SessionRecord, SessionStore

__all__ = ["MAX_IDLE_STOP_S", "IdleWatch", "idle_reason", "newest_activity"]

log = logging.getLogger("walnut.provider.idle")

MAX_ANSWER_BYTES = 1 << 20  # a gateway's kernel list is a few hundred bytes a kernel
MAX_KERNELS = 1024
CHECK_TIMEOUT_S = 5.0
CONCURRENCY = 16  # gateways asked at once by one pass
NOT_BUSY = ("idle", "dead")  # a dead kernel runs nothing; everything else may


class GarbageAnswer(Exception):
    """The gateway's answer is not what a kernel gateway says: counted as "not idle"."""


def idle_stop_of(rec: SessionRecord) -> int:
    value = rec.extra.get("idle_stop_s", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def idle_reason(threshold_s: int) -> str:
    return (f"idle for {threshold_s} s" if threshold_s < 60
            else f"idle for {round(threshold_s / 60)} min")


def _when(value: object) -> float:
    if not isinstance(value, str) or len(value) > 64:
        raise GarbageAnswer("last_activity is not a timestamp")
    try:
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError) as exc:
        raise GarbageAnswer("last_activity is not a timestamp") from exc


def newest_activity(kernels: object, terminals: object) -> tuple[float, int] | None:
    """(newest activity time, 0.0 when nothing ran; connections) of an idle session, None
    when a kernel is busy; GarbageAnswer when either list is not what a gateway answers."""
    newest, connections = 0.0, 0
    for kind, items in (("kernels", kernels), ("terminals", terminals)):
        if not isinstance(items, list) or len(items) > MAX_KERNELS:
            raise GarbageAnswer(f"{kind} is not a list")
        for item in items:
            if not isinstance(item, dict):
                raise GarbageAnswer(f"a {kind[:-1]} is not an object")
            if kind == "kernels":
                state = item.get("execution_state")
                if not isinstance(state, str):
                    raise GarbageAnswer("execution_state is not a string")
                if state not in NOT_BUSY:
                    return None
                count = item.get("connections", 0)
                if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                    connections += min(count, 1 << 20)
            newest = max(newest, _when(item.get("last_activity")))
    return newest, connections


class IdleWatch:
    """The idle clocks of running sessions, in memory: after a provider restart a clock
    starts again from the restart (never stopping a session for time this node did not
    watch)."""

    def __init__(self, store: SessionStore, handle_of: Callable[[str], object | None],
                 stop: Callable[[str, str], Awaitable[object]],
                 is_stopping: Callable[[str], bool]) -> None:
        self.store = store
        self._handle_of = handle_of
        self._stop = stop
        self._is_stopping = is_stopping
        self.interval_s = 1.0
        self._since: dict[str, float] = {}  # session -> when its idle time began (wall)
        self._connections: dict[str, int] = {}
        self._garbage: set[str] = set()  # sessions whose garbage was logged already
        self._born = time.time()

    # --- what the status says, and what a renter changes -----------------------------

    def status(self, rec: SessionRecord, now: float | None = None) -> dict | None:
        """{idle_s, stop_in_s, threshold_s, connections} of a running session, else None."""
        if rec.status != "running":
            return None
        now = time.time() if now is None else now
        threshold = idle_stop_of(rec)
        idle_s = max(0.0, now - self._since.get(rec.id, self._start_of(rec, now)))
        return {"idle_s": int(idle_s), "threshold_s": threshold,
                "stop_in_s": max(0, int(threshold - idle_s)) if threshold else None,
                "connections": self._connections.get(rec.id, 0)}

    def set_threshold(self, rec: SessionRecord, idle_stop_s: int) -> SessionRecord:
        """A renter's new threshold (0: never); its idle clock starts again ("keep running")."""
        self.store.update(rec.id, extra={**self.store.get(rec.id).extra,
                                         "idle_stop_s": idle_stop_s})
        self._since[rec.id] = time.time()
        return self.store.get(rec.id)

    # --- the pass -----------------------------------------------------------------------

    def _start_of(self, rec: SessionRecord, now: float) -> float:
        return min(now, max(rec.started_at or now, self._born))

    async def check_once(self) -> list[str]:
        """One pass over running sessions with a threshold; the ids it stopped."""
        running = self.store.list(statuses=("running",))
        live = {r.id for r in running}
        for gone in set(self._since) - live:
            self._since.pop(gone, None)
            self._connections.pop(gone, None)
            self._garbage.discard(gone)
        watched = [r for r in running if idle_stop_of(r) and not self._is_stopping(r.id)]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def check(rec: SessionRecord) -> bool:
            async with gate:
                return await self._is_due(rec)

        due = await asyncio.gather(*(check(r) for r in watched))
        stopped = []
        for rec, is_due in zip(watched, due, strict=True):
            fresh = self.store.get(rec.id)
            if not is_due or fresh is None or fresh.status != "running":
                continue
            threshold = idle_stop_of(fresh)
            if not threshold or time.time() - self._since.get(rec.id, time.time()) < threshold:
                continue  # kept running (a PATCH) while this pass asked the gateways
            log.info("session %s idle for %d s: stopping", rec.id, threshold)
            await self._stop(rec.id, idle_reason(threshold))
            stopped.append(rec.id)
        return stopped

    async def _is_due(self, rec: SessionRecord) -> bool:
        now = time.time()
        since = self._since.setdefault(rec.id, self._start_of(rec, now))
        try:
            seen = await self._read(rec)
        except GarbageAnswer as exc:
            if rec.id not in self._garbage:
                self._garbage.add(rec.id)
                log.warning("session %s: its gateway's kernel list is unusable (%s): "
                            "counted as not idle", rec.id, exc)
            seen = None
        now = time.time()
        if seen is None:  # busy, or not known to be idle
            self._since[rec.id] = now
            return False
        self._garbage.discard(rec.id)
        newest, self._connections[rec.id] = seen
        since = max(since, min(newest, now))  # a time in the future counts as now
        self._since[rec.id] = since
        return now - since >= idle_stop_of(rec)

    async def _read(self, rec: SessionRecord) -> tuple[float, int] | None:
        handle = self._handle_of(rec.id)
        url = getattr(handle, "gateway_url", None)
        if not url:
            raise GarbageAnswer("the gateway is not reachable")
        kernels = await self._get(url + "/api/kernels", rec.gateway_token)
        terminals = await self._get(url + "/api/terminals", rec.gateway_token, missing=[])
        return newest_activity(kernels, terminals)

    async def _get(self, url: str, token: str, missing: object = None) -> object:
        body = bytearray()

        def feed(chunk: bytes) -> None:
            body.extend(chunk)
            if len(body) > MAX_ANSWER_BYTES:
                raise GarbageAnswer(f"over {MAX_ANSWER_BYTES} bytes")

        try:
            await AsyncHTTPClient().fetch(HTTPRequest(
                url, headers=token_auth(token), request_timeout=CHECK_TIMEOUT_S,
                connect_timeout=CHECK_TIMEOUT_S, follow_redirects=False,
                streaming_callback=feed))
        except HTTPClientError as exc:
            if exc.code == 404 and missing is not None:
                return missing  # a gateway without terminals
            raise GarbageAnswer(f"HTTP {exc.code}") from exc
        except GarbageAnswer:
            raise
        except Exception as exc:  # unreachable, reset, timed out: not known to be idle
            raise GarbageAnswer(f"unreachable: {exc}") from exc
        try:
            return json.loads(bytes(body))
        except (ValueError, RecursionError) as exc:
            raise GarbageAnswer("not JSON") from exc
