"""A kernel gateway over HTTP(S), as both roles reach one: the renter through the provider's
pinned proxy, a provider directly on its own network. REST answers and websocket frames are
capped, since the other side may be hostile."""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from tornado import httpclient, websocket

from . import responses
from .errors import StatusError
from .keepalive import Keepalive
from .protocol import LINK_ACK_QUERY, LINK_ID_QUERY, MAX_MESSAGE_SIZE, kernel_channels_path

MAX_GATEWAY_JSON = 16 * 1024 * 1024  # a kernel gateway's REST answer (kernel models)


class ProviderAPIError(StatusError):
    """The provider refused or failed a call; `status` is its answer, 0 when it was
    unreachable (callers branch on 0 and 404)."""

    @property
    def answer_status(self) -> int:
        # relayed to our own caller: its 4xx was about the request, anything else is the
        # provider's failure, not ours
        return self.status if 400 <= self.status < 500 else 502

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


async def fetch(request: httpclient.HTTPRequest) -> httpclient.HTTPResponse:
    """One HTTP exchange; an unreachable peer is ProviderAPIError with status 0."""
    try:
        return await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
    # refused, reset, closed mid-way; tornado raises ValueError("IOStream is not idle")
    # for a reset during the TLS handshake
    except (OSError, ValueError, httpclient.HTTPClientError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ProviderAPIError(0, f"provider unreachable: {reason}") from exc


async def connect_websocket(url: str, headers: dict[str, str], *,
                            subprotocols: list[str] | None = None,
                            ssl_options: ssl.SSLContext | None = None
                            ) -> websocket.WebSocketClientConnection:
    """A kernel websocket, as every hop opens one (the renter to the provider's proxy, the
    provider to a session's gateway): capped frames, TCP_NODELAY, and pings that find a
    silently dropped link in seconds, so a resumable link reconnects and replays."""
    request = httpclient.HTTPRequest(url, headers=headers, connect_timeout=10,
                                     request_timeout=30, ssl_options=ssl_options)
    conn = await websocket.websocket_connect(request, max_message_size=MAX_MESSAGE_SIZE,
                                             subprotocols=subprotocols or None,
                                             **Keepalive.from_env().client_options())
    conn.protocol.stream.set_nodelay(True)
    return conn


TLSOptions = Callable[[], Awaitable["ssl.SSLContext | None"]]


class Gateway:
    """One kernel gateway over HTTP(S): REST calls and kernel websockets, with capped
    answers. The renter's is `ProviderClient.session_gateway` (the provider's proxy, pinned
    TLS); a provider reaches its own session's gateway directly (`tls=None`, plain HTTP on
    its own network)."""

    def __init__(self, base_url: str, headers: dict[str, str], *,
                 tls: TLSOptions | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.timeout = timeout
        self._tls = tls

    async def _ssl_options(self) -> ssl.SSLContext | None:
        return None if self._tls is None else await self._tls()

    async def rest(self, method: str, path: str, body: Any = None,
                   timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        if method in ("POST", "PUT", "PATCH") and data is None:
            data = b""
        limit = responses.BodyLimit(MAX_GATEWAY_JSON)
        request = httpclient.HTTPRequest(
            f"{self.base_url}/{path.lstrip('/')}", method=method,
            headers={**self.headers, "Content-Type": "application/json"}, body=data,
            request_timeout=timeout or self.timeout, allow_nonstandard_methods=True,
            follow_redirects=False, streaming_callback=limit.feed,
            ssl_options=await self._ssl_options())
        try:
            try:
                resp = await fetch(request)
            finally:
                limit.check()
            if resp.code >= 300 or resp.code == 599:
                try:
                    message = str(json.loads(limit.body)["error"]["message"])
                except (ValueError, KeyError, TypeError):
                    message = limit.body.decode(errors="replace")[:200] or str(resp.error)
                raise ProviderAPIError(0 if resp.code == 599 else resp.code, message[:500])
            return json.loads(limit.body) if limit.body else None
        except (responses.InvalidResponse, ValueError) as exc:
            raise ProviderAPIError(502, f"the kernel gateway sent a bad answer: {exc}") \
                from exc

    async def websocket(self, kernel_id: str, *, subprotocols: list[str] | None = None,
                        session: str | None = None, ack: int | None = None
                        ) -> websocket.WebSocketClientConnection:
        url = self.base_url.replace("http", "ws", 1) + "/" + kernel_channels_path(kernel_id)
        query = [f"{LINK_ID_QUERY}={session}"] if session else []
        if ack is not None:
            query.append(f"{LINK_ACK_QUERY}={ack}")
        if query:
            url += "?" + "&".join(query)
        return await connect_websocket(url, self.headers, subprotocols=subprotocols,
                                       ssl_options=await self._ssl_options())
