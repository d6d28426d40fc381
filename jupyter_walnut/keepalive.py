"""Keepalive pings on the long-lived websockets: the renter's kernel link to its provider, the
provider's side of that link, and the provider's websocket to a session's gateway.

A silent partition drops packets without a reset, so without pings a cut link looks open
for as long as TCP retransmits (minutes). With them a dead peer is noticed within
`interval_s + timeout_s` (plus tornado's 5 s wait for the closing handshake), and the
resumable link reconnects and replays. Tornado pings every `interval_s` and closes the
connection when no pong came within `timeout_s` of a ping; it allows no timeout longer
than the interval.

Both sides read `WALNUT_PING_INTERVAL_S` and `WALNUT_PING_TIMEOUT_S` (seconds; an interval
of 0 turns pings off).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

INTERVAL_ENV = "WALNUT_PING_INTERVAL_S"
TIMEOUT_ENV = "WALNUT_PING_TIMEOUT_S"


@dataclass(frozen=True)
class Keepalive:
    interval_s: float = 5.0
    timeout_s: float = 5.0  # a peer silent this long after a ping is dead

    def __post_init__(self) -> None:
        for name, value in ((INTERVAL_ENV, self.interval_s), (TIMEOUT_ENV, self.timeout_s)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if self.interval_s and not 0 < self.timeout_s <= self.interval_s:
            raise ValueError(f"{TIMEOUT_ENV} ({self.timeout_s}) must be above 0 and at most "
                             f"{INTERVAL_ENV} ({self.interval_s})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Keepalive:
        defaults = cls()
        return cls(_seconds(environ, INTERVAL_ENV, defaults.interval_s),
                   _seconds(environ, TIMEOUT_ENV, defaults.timeout_s))

    def client_options(self) -> dict[str, float | None]:
        """Keyword arguments for tornado's `websocket_connect`."""
        if not self.interval_s:
            return {"ping_interval": None, "ping_timeout": None}
        return {"ping_interval": self.interval_s, "ping_timeout": self.timeout_s}

    def server_settings(self) -> dict[str, float]:
        """Settings for a tornado `Application` whose handlers are websockets."""
        return {"websocket_ping_interval": self.interval_s,
                "websocket_ping_timeout": self.timeout_s if self.interval_s else 0}


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
