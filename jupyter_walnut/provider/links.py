"""Resumable kernel links: a renter's kernel websocket that survives network cuts.

With the `walnut.resume.v1` subprotocol, the provider keeps the gateway side of a kernel
websocket open while the renter is away (up to a grace period) and numbers every message
(data and control frames: common/protocol.py).

Each side keeps what it sent until the other acknowledges it, and drops what it receives
twice. A reconnecting renter names the link (`session_id` query) and the last sequence it
got (`walnut_ack`); the provider answers with its own ack, replays the rest, and the renter
replays what the provider missed. So a cut loses and duplicates nothing.

What a link holds lives in the provider's memory, so `LinkTable` (the node's `links`) caps it:
unacknowledged output per link, per session and in total (over a cap, the link holding the
most is closed with the reason; the renter reconnects to a fresh link), and detached links
per session (beyond the cap the oldest is dropped). While a renter is attached the pump waits
for each write, so a renter that stops reading stalls its own kernel, not the provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass

from tornado import websocket

from ..common.protocol import control_frame, data_frame, receive

log = logging.getLogger("walnut.provider.links")

MiB = 1024 * 1024
MAX_BUFFERED_BYTES = 64 * MiB  # per link, when no LinkTable caps it


@dataclass(frozen=True)
class LinkLimits:
    link_bytes: int = 64 * MiB  # unacknowledged output one link may hold
    session_bytes: int = 128 * MiB  # ... all links of one session together
    total_bytes: int = 512 * MiB  # ... every link in this provider process
    detached_per_session: int = 4  # links waiting for their renter, per session


def session_of(key: str) -> str:
    return key.split("/", 1)[0]


class LinkTable(dict):
    """The provider's resumable links by `<session>/<kernel path>/<link id>`, within limits."""

    def __init__(self, limits: LinkLimits | None = None) -> None:
        super().__init__()
        self.limits = limits or LinkLimits()
        self.closed_over_limit = 0  # links this table closed, for tests and logs

    def __setitem__(self, key: str, link: ResumableLink) -> None:
        super().__setitem__(key, link)
        link.table = self

    def links_of(self, session_id: str) -> list[ResumableLink]:
        return [link for key, link in self.items() if session_of(key) == session_id]

    def buffered_bytes(self, session_id: str | None = None) -> int:
        """Unacknowledged output held in memory: one session's, or all of it."""
        links = self.values() if session_id is None else self.links_of(session_id)
        return sum(link.out_bytes for link in links)

    def detached(self, session_id: str) -> list[ResumableLink]:
        """A session's links without a renter, oldest first."""
        waiting = [link for link in self.links_of(session_id) if link.handler is None]
        return sorted(waiting, key=lambda link: link.detached_at)

    def _drop(self, link: ResumableLink, reason: str) -> None:
        log.warning("link %s closed: %s", link.key, reason)
        self.closed_over_limit += 1
        link.close(reason)

    def on_detached(self, link: ResumableLink) -> None:
        waiting = self.detached(session_of(link.key))
        for old in waiting[: max(0, len(waiting) - self.limits.detached_per_session)]:
            self._drop(old, f"over {self.limits.detached_per_session} detached links")

    def on_buffered(self, link: ResumableLink) -> None:
        """After `link` buffered more output: close whatever holds too much."""
        lim = self.limits
        if link.out_bytes > lim.link_bytes:
            self._drop(link, f"renter left over {lim.link_bytes // MiB} MiB unacknowledged")
            return
        session = session_of(link.key)
        if self.buffered_bytes(session) > lim.session_bytes:
            biggest = max(self.links_of(session), key=lambda x: x.out_bytes)
            self._drop(biggest, f"session over {lim.session_bytes // MiB} MiB unacknowledged")
        elif self.buffered_bytes() > lim.total_bytes:
            biggest = max(self.values(), key=lambda x: x.out_bytes)
            self._drop(biggest, f"provider over {lim.total_bytes // MiB} MiB unacknowledged")


class ResumableLink:
    def __init__(self, key: str, upstream: websocket.WebSocketClientConnection, metrics,
                 grace_s: float, forget) -> None:
        self.key = key
        self.instance = uuid.uuid4().hex  # tells a renter when numbering started afresh
        self.upstream = upstream
        self.metrics = metrics
        self.grace_s = grace_s
        self._forget = forget
        self.handler: websocket.WebSocketHandler | None = None
        self.out_seq = 0
        self.out_buffer: deque[tuple[int, bytes]] = deque()
        self.out_bytes = 0
        self.in_delivered = 0
        self.table: LinkTable | None = None  # set when the node's table takes the link
        self.detached_at = time.monotonic()
        self._expiry: asyncio.TimerHandle | None = None
        self.closed = False
        self._pump = asyncio.ensure_future(self._pump_upstream())

    # --- renter side -------------------------------------------------------------------

    def attach(self, handler: websocket.WebSocketHandler, renter_ack: int) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        old, self.handler = self.handler, handler
        if old is not None and old is not handler and old.ws_connection is not None:
            # the renter came back on a new connection: the old one is dead to it, and a
            # pump write stuck on it (a silent partition) must fail rather than hold the link
            old.close(1001, "the renter reconnected")
        self._drop_acked(renter_ack)
        self._send_control(handler)
        for seq, payload in list(self.out_buffer):
            self._write(handler, seq, payload)

    def detach(self, handler: websocket.WebSocketHandler) -> None:
        if self.handler is not handler or self.closed:
            return
        self.handler = None
        self.detached_at = time.monotonic()
        self._expiry = asyncio.get_running_loop().call_later(self.grace_s, self.close)
        if self.table is not None:
            self.table.on_detached(self)

    async def from_renter(self, message: str | bytes) -> None:
        got = receive(message, self.in_delivered)  # None: a replay the gateway already has
        if got is None:
            return
        if got.ack is not None:
            self._drop_acked(got.ack)
            return
        seq, payload = got.seq, got.payload
        self.metrics.bytes_to_gateway.inc(len(payload))
        self.metrics.msgs_to_gateway.inc()
        try:
            await self.upstream.write_message(payload, binary=True)
        except websocket.WebSocketClosedError:
            self.close()
            return
        self.in_delivered = seq
        if self.handler is not None:
            self._send_control(self.handler)

    # --- gateway side --------------------------------------------------------------------

    async def _pump_upstream(self) -> None:
        try:
            while True:
                msg = await self.upstream.read_message()
                if msg is None:
                    break
                payload = msg if isinstance(msg, bytes) else msg.encode()
                self.out_seq += 1
                self.out_buffer.append((self.out_seq, payload))
                self.out_bytes += len(payload)
                self.metrics.bytes_to_renter.inc(len(payload))
                self.metrics.msgs_to_renter.inc()
                if self.table is not None:
                    self.table.on_buffered(self)
                elif self.out_bytes > MAX_BUFFERED_BYTES:
                    self.close(f"renter left over {MAX_BUFFERED_BYTES // MiB} MiB "
                               "unacknowledged")
                if self.closed:
                    return
                if self.handler is not None:
                    await self._send(self.handler, self.out_seq, payload)
        finally:
            self.close(reason="gateway closed")

    # --- helpers ---------------------------------------------------------------------

    def _drop_acked(self, ack: int) -> None:
        while self.out_buffer and self.out_buffer[0][0] <= ack:
            _, payload = self.out_buffer.popleft()
            self.out_bytes -= len(payload)

    def _send_control(self, handler: websocket.WebSocketHandler) -> None:
        try:
            handler.write_message(control_frame(self.in_delivered, self.instance))
        except websocket.WebSocketClosedError:
            pass

    def _write(self, handler: websocket.WebSocketHandler, seq: int, payload: bytes) -> None:
        try:
            handler.write_message(data_frame(seq, payload), binary=True)
        except websocket.WebSocketClosedError:
            pass  # kept in the buffer: replayed when the renter comes back

    async def _send(self, handler: websocket.WebSocketHandler, seq: int, payload: bytes
                    ) -> None:
        """Write and wait until the socket took it: a renter that stops reading holds back
        its gateway (and so its kernel), not the provider's memory."""
        try:
            await handler.write_message(data_frame(seq, payload), binary=True)
        except websocket.WebSocketClosedError:
            pass  # kept in the buffer: replayed when the renter comes back

    def close(self, reason: str = "link expired") -> None:
        if self.closed:
            return
        self.closed = True
        self._forget(self.key)
        if self._expiry is not None:
            self._expiry.cancel()
        self.upstream.close()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        if self.handler is not None and self.handler.ws_connection is not None:
            self.handler.close(1011, reason)
