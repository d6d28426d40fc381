"""The gateway proxy: a session's kernel-gateway REST calls and kernel websockets, reachable
through the provider's one port under `/api/v1/sessions/<id>/gateway/`.

The renter presents the session's access token (`Authorization: token ...`, never in the
URL); the proxy swaps it for the gateway's internal token, so a renter's token alone never
reaches the container. Every socket hop sets TCP_NODELAY.
"""

from __future__ import annotations

import asyncio
import logging

from tornado import websocket
from tornado.httputil import HTTPHeaders

from ..common.gateway import connect_websocket
from ..common.keepalive import Keepalive, Watchdog
from ..common.protocol import token_auth
from .sessions import SessionError

log = logging.getLogger("walnut.provider.proxy")

_HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                "trailers", "transfer-encoding", "upgrade", "host", "authorization",
                "content-length", "cookie", "x-walnut-session"}


def session_token_from(headers: HTTPHeaders) -> str:
    auth = headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() not in ("token", "bearer") or not token.strip():
        raise SessionError(401, "missing session token (Authorization: token <session token>)")
    return token.strip()


def forward_headers(headers: HTTPHeaders, gateway_token: str) -> dict[str, str]:
    out = {k: v for k, v in headers.get_all() if k.lower() not in _HOP_HEADERS}
    return {**out, **token_auth(gateway_token)}


class GatewayWebsocketBridge:
    """Both directions of one proxied kernel websocket, text and binary frames preserved."""

    def __init__(self, handler: websocket.WebSocketHandler, metrics) -> None:
        self.handler = handler
        self.metrics = metrics
        self.upstream: websocket.WebSocketClientConnection | None = None
        self._pump: asyncio.Task | None = None

    async def connect(self, url: str, headers: dict[str, str], subprotocols: list[str]) -> None:
        self.upstream = await connect_websocket(url, headers, subprotocols=subprotocols)
        # a gateway gone silent closes the link's upstream
        Watchdog(self.upstream, Keepalive.from_env())

    def start_pump(self) -> None:
        self._pump = asyncio.ensure_future(self._pump_upstream())

    async def _pump_upstream(self) -> None:
        assert self.upstream is not None
        try:
            while True:
                msg = await self.upstream.read_message()
                if msg is None:
                    break
                binary = isinstance(msg, bytes)
                self.metrics.bytes_to_renter.inc(len(msg))
                self.metrics.msgs_to_renter.inc()
                await self.handler.write_message(msg, binary=binary)
        except websocket.WebSocketClosedError:
            pass
        finally:
            if self.handler.ws_connection is not None:
                code = self.upstream.close_code or 1011
                self.handler.close(code if code != 1005 else 1000,
                                   self.upstream.close_reason or "gateway closed")

    async def to_gateway(self, message: str | bytes) -> None:
        if self.upstream is None:
            return
        self.metrics.bytes_to_gateway.inc(len(message))
        self.metrics.msgs_to_gateway.inc()
        try:
            await self.upstream.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            self.handler.close(1011, "gateway connection lost")

    def close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
