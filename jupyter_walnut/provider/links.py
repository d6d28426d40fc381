"""Resumable kernel links: a renter's kernel websocket that survives network cuts.

With the `walnut.resume.v1` subprotocol, the provider keeps the gateway side of a kernel
websocket open while the renter is away (up to a grace period) and numbers every message:

    data frame (binary, both directions):  8-byte big-endian sequence number || v1 frame
    control frame (text, both directions): {"ack": N, "link": "<link instance>"}

Each side keeps what it sent until the other acknowledges it, and drops what it receives
twice. A reconnecting renter names the link (`session_id` query) and the last sequence it
got (`walnut_ack`); the provider answers with its own ack, replays the rest, and the renter
replays what the provider missed. So a cut loses and duplicates nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from collections import deque

from tornado import websocket

log = logging.getLogger("walnut.provider.links")

RESUME_SUBPROTOCOL = "walnut.resume.v1"
SEQ = struct.Struct(">Q")
MAX_BUFFERED_BYTES = 256 * 1024 * 1024


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
        self._expiry: asyncio.TimerHandle | None = None
        self.closed = False
        self._pump = asyncio.ensure_future(self._pump_upstream())

    # --- renter side -------------------------------------------------------------------

    def attach(self, handler: websocket.WebSocketHandler, renter_ack: int) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.handler = handler
        self._drop_acked(renter_ack)
        self._send_control(handler)
        for seq, payload in list(self.out_buffer):
            self._write(handler, seq, payload)

    def detach(self, handler: websocket.WebSocketHandler) -> None:
        if self.handler is not handler or self.closed:
            return
        self.handler = None
        self._expiry = asyncio.get_running_loop().call_later(self.grace_s, self.close)

    async def from_renter(self, message: str | bytes) -> None:
        if isinstance(message, str):
            try:
                ack = int(json.loads(message).get("ack", 0))
            except (ValueError, AttributeError, TypeError):
                return
            self._drop_acked(ack)
            return
        if len(message) < SEQ.size:
            return
        (seq,) = SEQ.unpack_from(message)
        if seq <= self.in_delivered:
            return  # a replay of something the gateway already has
        payload = message[SEQ.size:]
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
                if self.out_bytes > MAX_BUFFERED_BYTES:
                    log.warning("link %s: renter acknowledges nothing; closing", self.key)
                    break
                if self.handler is not None:
                    self._write(self.handler, self.out_seq, payload)
        finally:
            self.close(reason="gateway closed")

    # --- helpers ---------------------------------------------------------------------

    def _drop_acked(self, ack: int) -> None:
        while self.out_buffer and self.out_buffer[0][0] <= ack:
            _, payload = self.out_buffer.popleft()
            self.out_bytes -= len(payload)

    def _send_control(self, handler: websocket.WebSocketHandler) -> None:
        try:
            handler.write_message(json.dumps({"ack": self.in_delivered, "link": self.instance}))
        except websocket.WebSocketClosedError:
            pass

    def _write(self, handler: websocket.WebSocketHandler, seq: int, payload: bytes) -> None:
        try:
            handler.write_message(SEQ.pack(seq) + payload, binary=True)
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
