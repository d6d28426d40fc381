"""The renter's client for a provider's HTTP API: signed management calls and the proxied
kernel gateway of a session. Used by the Jupyter Server extension, the magics and tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from tornado import httpclient, websocket

from ..common import responses
from ..common.gateway import Gateway, ProviderAPIError, fetch
from ..common.keys import KeyPair
from ..common.protocol import API, gateway_path, token_auth
from ..common.protocol import audience as audience_of
from ..common.signed_requests import sign_request
from ..common.tls import TLSError, pinned_context, split_pin
from ..ledger.vouchers import voucher_fields


class ProviderClient:
    def __init__(self, base_url: str, key: KeyPair, *, timeout: float = 30.0,
                 pin: str | None = None) -> None:
        """`base_url` may carry its certificate pin: `https://host:port#sha256=<hex>`."""
        url, url_pin = split_pin(base_url)
        self.base_url = url
        self.pin = pin or url_pin
        self.key = key
        self.timeout = timeout
        self._path_prefix = urlsplit(self.base_url).path.rstrip("/")
        self._ssl: object = None  # resolved on first use: None (http) or an SSLContext

    async def _ssl_options(self):
        if self._ssl is None:
            try:
                context = await asyncio.to_thread(pinned_context, self.base_url, self.pin)
            except TLSError as exc:
                raise ProviderAPIError(0, str(exc)) from exc
            self._ssl = context if context is not None else False
        return self._ssl or None

    async def _call(self, method: str, path: str, body: Any = None, *, signed: bool = True
                    ) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if signed:
            headers.update(sign_request(self.key, method, self._path_prefix + path, data,
                                        audience=await self.audience()))
        limit = responses.BodyLimit()
        request = httpclient.HTTPRequest(
            self.base_url + path, method=method, headers=headers,
            body=data if method in ("POST", "PUT", "PATCH") else None,
            request_timeout=self.timeout, connect_timeout=min(10.0, self.timeout),
            ssl_options=await self._ssl_options(), streaming_callback=limit.feed)
        try:
            try:
                resp = await self._fetch(request)
            finally:
                limit.check()  # an oversized body ends the read: say so, not "unreachable"
            if resp.code == 599:
                raise ProviderAPIError(0, f"provider unreachable: {resp.error}")
            if resp.code >= 400:
                try:
                    payload = responses.decode(limit.body)
                except responses.InvalidResponse:
                    payload = None
                message = (payload or {}).get("error", {}).get("message") if isinstance(
                    payload, dict) and isinstance(payload.get("error"), dict) else None
                text = message if isinstance(message, str) else resp.reason or "provider error"
                raise ProviderAPIError(resp.code, text[:500])
            return responses.validate(method, path.removeprefix(API),
                                      responses.decode(limit.body))
        except responses.InvalidResponse as exc:
            raise ProviderAPIError(502, exc.message) from exc

    async def audience(self) -> str:
        """Whom a signed request is for: the pinned certificate's fingerprint over HTTPS,
        on plain HTTP (loopback only) the provider address its status gives."""
        if self.base_url.startswith("https:"):
            return audience_of(self.pin, "")  # no pin: refused before anything is sent
        if getattr(self, "_address", None) is None:
            self._address = (await self.status())["provider_address"]
        return audience_of(None, self._address)

    _fetch = staticmethod(fetch)

    async def health(self) -> dict:
        return await self._call("GET", f"{API}/health", signed=False)

    async def status(self) -> dict:
        return await self._call("GET", f"{API}/status", signed=False)

    async def create_session(self, **request: Any) -> dict:
        return await self._call("POST", f"{API}/sessions", request)

    async def get_session(self, session_id: str) -> dict:
        return await self._call("GET", f"{API}/sessions/{session_id}")

    async def list_sessions(self) -> list[dict]:
        return (await self._call("GET", f"{API}/sessions"))["sessions"]

    async def stop_session(self, session_id: str) -> dict:
        return await self._call("DELETE", f"{API}/sessions/{session_id}")

    async def set_idle_stop(self, session_id: str, idle_stop_s: int) -> dict:
        """A running session's idle threshold (0: never); its idle clock starts again."""
        return await self._call("PATCH", f"{API}/sessions/{session_id}",
                                {"idle_stop_s": idle_stop_s})

    async def send_voucher(self, session_id: str, amount_mist: int, signature: bytes) -> dict:
        return await self._call("POST", f"{API}/sessions/{session_id}/vouchers",
                                voucher_fields(amount_mist, signature))

    async def set_away(self, session_id: str, seconds: int,
                       vouchers: list[tuple[int, bytes]]) -> dict:
        """Away mode on (issue #17): the ladder of away vouchers, for `seconds` from now."""
        return await self._call("PUT", f"{API}/sessions/{session_id}/away", {
            "seconds": seconds, "vouchers": [voucher_fields(a, s) for a, s in vouchers]})

    async def end_away(self, session_id: str) -> dict:
        return await self._call("DELETE", f"{API}/sessions/{session_id}/away")

    async def top_up_session(self, session_id: str) -> dict:
        """Ask the provider to read the session's topped-up channel on the ledger."""
        return await self._call("POST", f"{API}/sessions/{session_id}/topup", {})

    async def wait_running(self, session_id: str, timeout: float = 120.0,
                           on_status=None) -> dict:
        """Poll until the session runs; raises with the provider's reason if it failed."""
        return await self._wait_session(
            session_id, timeout, on_status, lambda session: session["status"] == "running",
            f"session did not start within {timeout:.0f}s")

    async def wait_environment(self, session_id: str, timeout: float, on_status=None) -> dict:
        """Poll while the provider prepares the session's requirements (issue #15): returns
        the session once its environment is ready (or cached), or once it runs; raises with
        the provider's reason if it failed. `on_status` sees each status on the way."""
        def prepared(session: dict) -> bool:
            state = (session.get("environment") or {}).get("state")
            return session["status"] == "running" or state in ("ready", "cached")

        return await self._wait_session(
            session_id, timeout, on_status, prepared,
            f"the session's requirements were not installed within {timeout:.0f}s")

    async def _wait_session(self, session_id: str, timeout: float, on_status,
                            done: Callable[[dict], bool], too_late: str) -> dict:
        """Poll the session's status until `done` says so; a failed or stopped session raises
        with the provider's reason, a deadline passed with `too_late`."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            session = await self.get_session(session_id)
            if on_status is not None:
                on_status(session)
            if done(session):
                return session
            if session["status"] in ("failed", "stopped"):
                raise ProviderAPIError(409, f"session {session['status']}: {session['reason']}")
            if time.monotonic() > deadline:
                raise ProviderAPIError(0, too_late)
            await asyncio.sleep(delay)  # polling a remote service, bounded by the deadline
            delay = min(delay * 1.5, 0.5)

    # --- the session's kernel gateway, through the provider's proxy --------------------

    def gateway_base(self, session_id: str) -> str:
        return self.base_url + gateway_path(session_id)

    @staticmethod
    def gateway_headers(access_token: str) -> dict[str, str]:
        return token_auth(access_token)

    def session_gateway(self, session_id: str, access_token: str) -> Gateway:
        """The session's kernel gateway behind the provider's proxy, over this client's
        pinned TLS: every renter->gateway REST call and websocket goes through here."""
        return Gateway(self.gateway_base(session_id), self.gateway_headers(access_token),
                       tls=self._ssl_options, timeout=self.timeout)

    async def gateway(self, session_id: str, access_token: str, method: str, path: str,
                      body: Any = None) -> Any:
        return await self.session_gateway(session_id, access_token).rest(method, path, body)

    async def kernel_websocket(self, session_id: str, access_token: str, kernel_id: str,
                               subprotocols: list[str] | None = None,
                               session: str | None = None, ack: int | None = None
                               ) -> websocket.WebSocketClientConnection:
        return await self.session_gateway(session_id, access_token).websocket(
            kernel_id, subprotocols=subprotocols, session=session, ack=ack)

    async def download(self, path: str, headers: dict[str, str], sink: BinaryIO,
                       limit: int) -> int:
        """GET `path` (an API path) into `sink`, over the pinned TLS; refuses a body over
        `limit` bytes. Returns the bytes written."""
        written = 0

        def feed(chunk: bytes) -> None:
            nonlocal written
            written += len(chunk)
            if written > limit:
                raise ProviderAPIError(502, f"the provider sent more than {limit} bytes")
            sink.write(chunk)

        request = httpclient.HTTPRequest(
            self.base_url + path, headers=headers, request_timeout=300, connect_timeout=10,
            follow_redirects=False, streaming_callback=feed,
            ssl_options=await self._ssl_options())
        # the shared client stops at 100 MB; this one lets `feed` count up to `limit`
        http = httpclient.AsyncHTTPClient(force_instance=True,
                                          max_body_size=2 * limit + (1 << 20))
        try:
            resp = await http.fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError) as exc:  # also how `feed` ends a read
            resp = httpclient.HTTPResponse(request, 599, error=exc)
        finally:
            http.close()
        if written > limit:
            raise ProviderAPIError(502, f"the provider sent more than {limit} bytes")
        if resp.code == 599:
            raise ProviderAPIError(0, f"provider unreachable: {resp.error}")
        if resp.code >= 300:
            raise ProviderAPIError(resp.code, resp.reason or "provider error")
        return written
