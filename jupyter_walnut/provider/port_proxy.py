"""A session's own web apps: `/api/v1/sessions/<id>/proxy/<port>/<path>` (HTTP and websockets).

The renter presents the session's access token (`Authorization: token ...`); the request goes
to that port of that session only, with the token, cookies and hop-by-hop headers dropped,
and the answer streams back as it comes (a large download or an event stream is never held
whole here). Where a session's port lives depends on the runtime:

- docker: the container's address on its own bridge network (nothing else is on it);
- process: the host's loopback, which also holds this provider's API, its package cache relay
  and other sessions' gateways, so a port is proxied only while a process of the session's
  own tree (found here with psutil, not told by the session) listens on it;
- slurm: refused (the session runs on a compute node whose ports are not the session's own).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING, Any

import psutil
from tornado import httpclient, websocket

from ..common.errors import BadGateway, BadRequest, PayloadTooLarge, WalnutError
from ..common.http_relay import ResponseRelay
from .app import error_body
from .proxy import GatewayWebsocketBridge, session_token_from
from .runtimes.base import RuntimeHandle
from .runtimes.docker import resource_name

if TYPE_CHECKING:
    from .node import ProviderNode

PORT = r"(\d{1,5})"
# never forwarded to the app: the session token, the caller's cookies, per-hop headers
DROP_REQUEST = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                "trailers", "transfer-encoding", "upgrade", "host", "authorization",
                "content-length", "cookie", "x-walnut-session", "sec-websocket-key",
                "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
LOOPBACK = {"127.0.0.1", "::1", "0.0.0.0", "::", "::ffff:127.0.0.1"}


def parse_port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise BadRequest(f"port {text} is not between 1 and 65535")
    return port


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def listened_by_tree(pid: int, port: int) -> bool:
    """Whether a process of `pid`'s tree listens on `port` on loopback or every address."""
    for proc in _tree(pid):
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port \
                    and conn.laddr.ip in LOOPBACK:
                return True
    return False


def _container_address(runtime: Any, handle: RuntimeHandle) -> str:
    container = runtime.client.containers.get(handle.ref)
    networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    address = (networks.get(resource_name(handle.session_id)) or {}).get("IPAddress") or ""
    if not address:
        raise BadGateway("the session's container has no address on its network")
    return address


async def target_host(node: ProviderNode, handle: RuntimeHandle, port: int) -> str:
    """Where `port` of this session is, or a 4xx saying why it is not proxied."""
    runtime = node.sessions.runtime
    if runtime.name == "docker":
        try:
            return await asyncio.to_thread(_container_address, runtime, handle)
        except WalnutError:
            raise
        except Exception as exc:
            raise BadGateway("the session's container is not reachable") from exc
    if runtime.name == "process":
        if not await asyncio.to_thread(listened_by_tree, int(handle.ref), port):
            raise WalnutError(f"port {port} is not listened on by this session's processes "
                              "(the process runtime proxies only the session's own ports)",
                              status=403)
        return "127.0.0.1"
    raise WalnutError(f"the {runtime.name} runtime does not proxy session ports", status=501)


def url_host(host: str) -> str:
    return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host


class PortProxyHandler(websocket.WebSocketHandler):
    """One request to a session's port: proxied HTTP, or a websocket bridged both ways."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    @property
    def node(self) -> ProviderNode:
        return self.settings["walnut_node"]

    def refuse(self, exc: WalnutError) -> None:
        self.clear()
        self.set_status(exc.answer_status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(error_body(exc))

    def check_origin(self, origin: str) -> bool:
        return True  # authenticated by the session token header, not by cookies

    async def _target(self, session_id: str, port_text: str) -> str | None:
        """`http://host:port` of the session's port, or None once refused."""
        try:
            port = parse_port(port_text)
            handle = self.node.sessions.authorize_gateway(
                session_id, session_token_from(self.request.headers))
            return f"http://{url_host(await target_host(self.node, handle, port))}:{port}"
        except WalnutError as exc:
            self.refuse(exc)
            return None

    def _upstream_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.request.headers.get_all() if k.lower() not in DROP_REQUEST}

    async def get(self, session_id: str, port: str, path: str) -> None:
        base = await self._target(session_id, port)
        if base is None:
            return
        upgrade = self.request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and self.request.method == "GET":
            await self._websocket(base, path)
        else:
            await self._http(base, path)

    head = post = put = patch = delete = options = get

    # --- websockets -----------------------------------------------------------------------

    async def _websocket(self, base: str, path: str) -> None:
        query = ("?" + self.request.query) if self.request.query else ""
        requested = [p.strip() for p in
                     self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                     if p.strip()]
        bridge = GatewayWebsocketBridge(self, self.node.metrics)
        try:
            await bridge.connect(base.replace("http", "ws", 1) + "/" + path + query,
                                 self._upstream_headers(), requested)
        except (httpclient.HTTPClientError, OSError) as exc:
            code = getattr(exc, "code", 502)
            self.refuse(WalnutError("the session's websocket is unavailable",
                                    status=code if 400 <= code < 500 else 502))
            return
        self.bridge = bridge
        self._subprotocol = bridge.upstream.selected_subprotocol
        await super().get()

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return getattr(self, "_subprotocol", None)

    def open(self, *args: str) -> None:
        self.set_nodelay(True)
        self.bridge.start_pump()

    async def on_message(self, message: str | bytes) -> None:
        await self.bridge.to_gateway(message)

    def on_close(self) -> None:
        bridge = getattr(self, "bridge", None)
        if bridge is not None:
            bridge.close()

    # --- HTTP -----------------------------------------------------------------------------

    async def _http(self, base: str, path: str) -> None:
        body = self.request.body or b""
        if len(body) > self.node.config.max_body_bytes:
            self.refuse(PayloadTooLarge(
                f"request body over {self.node.config.max_body_bytes} bytes"))
            return
        method = self.request.method
        query = ("?" + self.request.query) if self.request.query else ""
        relay = ResponseRelay(self, counted=self.node.metrics.proxy_bytes.labels("to_renter").inc)
        request = relay.request(f"{base}/{path}{query}", method, self._upstream_headers(),
                                body if method in ("POST", "PUT", "PATCH") or body else None)
        if not await relay.fetch(request):
            self.refuse(BadGateway("nothing answers on that port of the session"))
