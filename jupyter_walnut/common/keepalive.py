"""Keepalive on the long-lived websockets: the renter's kernel link to its provider, the
provider's side of that link, and the provider's websocket to a session's gateway.

A silent partition drops packets without a reset, so without keepalive a cut link looks open
for as long as TCP retransmits (minutes) and a running cell just hangs. Every hop pings each
`interval_s` (tornado's pings, answered by any websocket peer). A `Watchdog` on a client
websocket closes it once `timeout_s` passed with not one byte from the peer while this side
was reading; the resumable link then reconnects and replays.

Any byte counts as a sign of life, not only a pong, and tornado's own pong deadline stays
off: a pong can wait behind a long frame on a slow link, and a deadline would cut a healthy
link, and again after each reconnect that replays the same frame. A reader that is not
reading (a message waits for its consumer: the link's deliberate back-pressure) is not
judged.

Both sides read `WALNUT_PING_INTERVAL_S` (default 5) and `WALNUT_PING_TIMEOUT_S` (default
15), in seconds; an interval of 0 turns keepalive off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tornado.websocket import WebSocketClientConnection

INTERVAL_ENV = "WALNUT_PING_INTERVAL_S"
TIMEOUT_ENV = "WALNUT_PING_TIMEOUT_S"

log = logging.getLogger("walnut.keepalive")


@dataclass(frozen=True)
class Keepalive:
    interval_s: float = 5.0  # ping this often
    timeout_s: float = 15.0  # a peer silent this long is dead

    def __post_init__(self) -> None:
        for name, value in ((INTERVAL_ENV, self.interval_s), (TIMEOUT_ENV, self.timeout_s)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if self.interval_s and self.timeout_s <= self.interval_s:
            raise ValueError(f"{TIMEOUT_ENV} ({self.timeout_s}) must be longer than "
                             f"{INTERVAL_ENV} ({self.interval_s}): a live peer answers a ping")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Keepalive:
        defaults = cls()
        return cls(_seconds(environ, INTERVAL_ENV, defaults.interval_s),
                   _seconds(environ, TIMEOUT_ENV, defaults.timeout_s))

    def client_options(self) -> dict[str, float | None]:
        """Keyword arguments for tornado's `websocket_connect`: pings, no pong deadline."""
        return {"ping_interval": self.interval_s or None, "ping_timeout": 0}

    def server_settings(self) -> dict[str, float]:
        """Settings for a tornado `Application` serving websockets: pings, no pong deadline
        (the renter's watchdog judges the link; a renter that comes back replaces it)."""
        return {"websocket_ping_interval": self.interval_s, "websocket_ping_timeout": 0}


class Watchdog:
    """Closes a client websocket whose peer sent nothing for `timeout_s` while we read."""

    def __init__(self, conn: WebSocketClientConnection, keepalive: Keepalive) -> None:
        self.conn = conn
        self.timeout_s = keepalive.timeout_s
        self.last_heard = time.monotonic()
        stream = conn.protocol.stream
        read = stream.read_from_fd

        def counting_read(buf: bytearray | memoryview) -> int | None:
            got = read(buf)
            if got:
                self.last_heard = time.monotonic()
            return got

        stream.read_from_fd = counting_read  # every byte read, pongs and partial frames too
        self._period = min(1.0, keepalive.interval_s)
        self._timer: asyncio.TimerHandle | None = None
        if keepalive.interval_s:
            self._schedule()

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._period, self._check)

    def _check(self) -> None:
        protocol = self.conn.protocol  # None once tornado has closed the connection
        if protocol is None or protocol.stream.closed():
            return
        stream = protocol.stream
        if self.conn.read_queue.qsize():
            self.last_heard = time.monotonic()  # our consumer is behind: we are not reading
        elif time.monotonic() - self.last_heard > self.timeout_s:
            log.warning("websocket peer silent for %.0fs: closing the connection",
                        self.timeout_s)
            stream.close()  # at once: no closing handshake can cross a dead link
            return
        self._schedule()


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
