"""Workspace transfers over kept-alive connections (issues #16, #18).

A push of one file is four or five requests (stat, what arrived, the PUT, the commit) and a
1,000-file sync two thousand; a fresh TCP and TLS connection for each costs more than the
bytes of a small file. One httpx client per event loop and TLS context keeps a few HTTP/1.1
connections to the provider open between them, with TCP_NODELAY so a request's headers and
its body never wait on the delayed ACK. Bodies stream both ways: a request body from an async
iterator, a response handed over chunk by chunk to the caller, which may refuse it
(`TransferError` ends the read and closes that connection).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

from ...common.gateway import ProviderAPIError
from .sync import TransferError

KEEP_ALIVE = 4  # connections kept per provider: transfers of one renter run a few at once
IDLE_S = 30.0  # a kept connection closes after this long unused
_clients: dict[tuple[int, int], tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = {}


@dataclass
class Answer:
    status: int
    reason: str
    headers: dict[str, str]


def client_for(context: ssl.SSLContext | None) -> httpx.AsyncClient:
    """The kept-alive client of this event loop for `context` (None: plain HTTP)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), id(context))
    found = _clients.get(key)
    if found is not None and found[0] is loop and not found[1].is_closed:
        return found[1]
    for stale in [k for k, (lp, _) in _clients.items() if lp.is_closed()]:
        _clients.pop(stale, None)  # clients of finished loops (tests, benchmarks)
    transport = httpx.AsyncHTTPTransport(
        verify=context if context is not None else True, http1=True, http2=False,
        limits=httpx.Limits(max_keepalive_connections=KEEP_ALIVE, keepalive_expiry=IDLE_S),
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    client = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
    _clients[key] = (loop, client)
    return client


async def exchange(method: str, url: str, headers: dict[str, str], *,
                   context: ssl.SSLContext | None, timeout: float,
                   body: bytes | AsyncIterator[bytes] | None = None,
                   on_answer: Callable[[Answer], None] | None = None,
                   on_chunk: Callable[[bytes], None]) -> Answer:
    """One request; the answer's chunks go to `on_chunk` as they arrive. An unreachable or
    vanished provider is ProviderAPIError(0); a TransferError of the body or `on_chunk`
    (our own refusal) is raised as itself."""
    client = client_for(context)
    limits = httpx.Timeout(timeout, connect=min(10.0, timeout))
    # the bytes as sent: a download is hashed as it arrives, never decoded first
    request = client.build_request(method, url, headers={"Accept-Encoding": "identity",
                                                         **headers},
                                   content=body, timeout=limits)
    try:
        response = await client.send(request, stream=True)
        try:
            answer = Answer(response.status_code, response.reason_phrase,
                            {k.lower(): v for k, v in response.headers.items()})
            if on_answer is not None:
                on_answer(answer)
            async for chunk in response.aiter_raw():
                on_chunk(chunk)
        finally:
            await response.aclose()
    except TransferError:
        raise
    except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
        raise ProviderAPIError(0, f"provider unreachable: {exc or type(exc).__name__}") \
            from exc
    return answer
