"""The provider's HTTP service: a versioned JSON API, the gateway proxy and /metrics.

    GET    /api/v1/health                        liveness, no auth
    GET    /api/v1/status                        the offer: specs, utilisation, prices, capacity
    POST   /api/v1/sessions                      create (signed by the renter)
    GET    /api/v1/sessions                      the caller's own sessions (signed)
    GET    /api/v1/sessions/<id>                 one of the caller's sessions (signed)
    DELETE /api/v1/sessions/<id>                 stop it (signed)
    PATCH  /api/v1/sessions/<id>                 its idle threshold {idle_stop_s} (signed)
    POST   /api/v1/sessions/<id>/topup           re-read its channel's deposit (signed)
    PUT    /api/v1/sessions/<id>/away            away mode on, with its vouchers (signed)
    DELETE /api/v1/sessions/<id>/away            away mode off (signed)
    *      /api/v1/sessions/<id>/jobs/...        batch jobs (signed; provider/jobs.py)
    *      /api/v1/sessions/<id>/gateway/<path>  the session's kernel gateway (session token)
    GET    /metrics                              Prometheus

Errors are JSON `{"error": {"status": N, "message": "..."}}`, mapped in one place.
"""

from __future__ import annotations

import json
import logging
import re
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado import httpclient, httputil, web, websocket

from .._version import __version__
from ..common.errors import (
    BadGateway,
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    WalnutError,
)
from ..common.numbers import NumberError, loads_json, parse_int
from ..common.protocol import (
    HEADER_KEY,
    JUPYTER_V1_SUBPROTOCOL,
    LINK_ACK_QUERY,
    LINK_ID_PATTERN,
    LINK_ID_QUERY,
    RESUME_SUBPROTOCOL,
    SESSION_ID_PATTERN,
    audience,
    gateway_path,
    token_auth,
)
from ..common.sqlite_store import StorageError
from ..ledger.vouchers import parse_voucher_fields
from .away import parse_away_request
from .links import ResumableLink
from .proxy import (
    GatewayWebsocketBridge,
    forward_headers,
    session_token_from,
)
from .session_request import parse_session_patch
from .sessions import SessionRequest

if TYPE_CHECKING:
    from .node import ProviderNode

log = logging.getLogger("walnut.provider.api")

SESSION_ID = f"({SESSION_ID_PATTERN})"


def own_audience(node: ProviderNode) -> str:
    """What a renter's signature must name to reach this node: the fingerprint of the
    certificate it serves, or on plain HTTP (loopback only) its provider address."""
    return audience(getattr(node, "tls_fingerprint", None), node.identity.address)


def error_body(exc: WalnutError) -> str:
    """The provider's one error shape, for handlers and websocket upgrades alike."""
    return json.dumps({"error": {"status": exc.answer_status, "message": exc.message}})


class BaseHandler(web.RequestHandler):
    """JSON in, JSON out; every failure becomes a 4xx/5xx JSON error with a clear message."""

    @property
    def node(self) -> ProviderNode:
        return self.settings["walnut_node"]

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        self._t0 = time.perf_counter()
        length = parse_int(self.request.headers.get("Content-Length") or "0", "Content-Length")
        if length > self.node.config.max_body_bytes or len(self.request.body or b"") > \
                self.node.config.max_body_bytes:
            raise PayloadTooLarge(f"request body over {self.node.config.max_body_bytes} bytes")

    def on_finish(self) -> None:
        status = self.get_status()
        if status >= 400:
            self.node.metrics.http_errors.labels(str(status)).inc()
        self.node.metrics.request_seconds.labels(self.request.method).observe(
            time.perf_counter() - getattr(self, "_t0", time.perf_counter()))

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    def json_body(self) -> Any:
        try:
            return loads_json(self.request.body or b"")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("request body is not valid JSON") from exc

    def renter(self) -> tuple[str, str]:
        """(renter address, public key hex) of a correctly signed request."""
        address = self.node.verifier.verify(self.request.method, self.request.uri,
                                            self.request.headers, self.request.body or b"",
                                            audience=own_audience(self.node))  # or 401
        return address, self.request.headers[HEADER_KEY].strip().lower()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every failure of every handler is answered here: a WalnutError with its status
        and message, anything else as a bare 500 (details go to the log, not the caller)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, WalnutError):
            if isinstance(exc, web.HTTPError):
                exc = WalnutError(exc.log_message or self._reason, status=exc.status_code)
            else:
                exc = WalnutError("internal error", status=500)
        if isinstance(exc, StorageError):  # its message names the node's own paths: logged
            exc = WalnutError(STORAGE_ANSWERS.get(exc.status, STORAGE_ANSWERS[503]),
                              status=exc.status)
        self.set_status(exc.answer_status)
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(exc))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, WalnutError):  # answered in words: no traceback
            if value.answer_status >= 500:  # the node's own trouble (disk, runtime, ledger)
                log.error("%s %s: %s", self.request.method, self.request.path, value.message)
            return
        super().log_exception(typ, value, tb)


# What a renter reads when the node's own state cannot be written: the node's log has the
# path and the cause, the renter only needs to know it is the provider's trouble.
STORAGE_ANSWERS = {
    507: "the provider's disk is full: it cannot take this request now; try again later",
    503: "the provider's state is unavailable: try again later",
}


class HealthHandler(BaseHandler):
    def get(self) -> None:
        self.write_json({"status": "ok", "version": __version__, "node": self.node.config.name})


class StatusHandler(BaseHandler):
    def get(self) -> None:
        self.write_json(self.node.offer())


class OpenAPIHandler(BaseHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/yaml")
        self.finish(resources.files("jupyter_walnut.provider").joinpath("openapi.yaml")
                    .read_text())


class SessionsHandler(BaseHandler):
    async def post(self) -> None:
        renter, public_key = self.renter()
        req = SessionRequest.from_json(self.json_body())
        rec, token = await self.node.sessions.create(renter, public_key, req)
        self.write_json({**rec.public(), "access_token": token,
                         "gateway_path": gateway_path(rec.id)}, status=201)

    def get(self) -> None:
        renter, _ = self.renter()
        self.write_json({"sessions": [r.public() for r in self.node.sessions.store.list(renter)]})


class SessionHandler(BaseHandler):
    async def get(self, session_id: str) -> None:
        renter, _ = self.renter()
        rec = self.node.sessions.owned(session_id, renter)
        self.write_json({**rec.public(), "usage": await self.node.sessions.usage(rec),
                         "idle": self.node.sessions.idle.status(rec)})

    def patch(self, session_id: str) -> None:
        """A new idle threshold (idle.py; 0 = never), which also restarts the idle clock:
        the renter's "keep running"."""
        renter, _ = self.renter()
        idle_stop_s = parse_session_patch(self.json_body())  # or 400
        rec = self.node.sessions.owned(session_id, renter)
        if rec.status not in ("starting", "running"):
            raise Conflict(f"session is {rec.status}")
        rec = self.node.sessions.idle.set_threshold(rec, idle_stop_s)
        self.write_json({**rec.public(), "idle": self.node.sessions.idle.status(rec)})

    async def delete(self, session_id: str) -> None:
        renter, _ = self.renter()
        self.node.sessions.owned(session_id, renter)
        rec = await self.node.sessions.stop(session_id)
        self.write_json(rec.public())


class VouchersHandler(BaseHandler):
    """The renter's newest cumulative voucher for a session's channel."""

    def post(self, session_id: str) -> None:
        renter, _ = self.renter()
        body = self.json_body()
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        amount, sig = parse_voucher_fields(body)  # or 400 naming the field
        rec = self.node.sessions.record_voucher(session_id, renter, amount, sig)
        self.write_json(rec.public())


class AwayHandler(BaseHandler):
    """Away mode (away.py): the renter's ladder of away vouchers and how long it is away."""

    def put(self, session_id: str) -> None:
        renter, _ = self.renter()
        request = parse_away_request(self.json_body())  # or 400
        rec = self.node.sessions.payments.set_away(session_id, renter, request)
        self.write_json(rec.public())

    def delete(self, session_id: str) -> None:
        renter, _ = self.renter()
        rec = self.node.sessions.payments.set_away(session_id, renter, None)
        self.write_json(rec.public())


class TopUpHandler(BaseHandler):
    """The renter topped up a session's channel: the provider reads the new deposit on the
    ledger (the request carries no amount to trust) and extends the session."""

    async def post(self, session_id: str) -> None:
        renter, _ = self.renter()
        rec = await self.node.sessions.top_up(session_id, renter)
        self.write_json(rec.public())


def gateway_url(handle, request: httputil.HTTPServerRequest) -> str:
    """The gateway's URL for a proxied request: its path as the renter sent it (still
    URL-quoted, so a quoted '/', '?' or '%' in a file name stays what it was) and query."""
    path = request.path.split("/gateway/", 1)[1]
    return f"{handle.gateway_url}/{path}" + (f"?{request.query}" if request.query else "")


class GatewayProxyHandler(BaseHandler):
    """Kernel-gateway REST calls of one session."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

    async def _proxy(self, session_id: str, path: str) -> None:
        handle = self.node.sessions.authorize_gateway(
            session_id, session_token_from(self.request.headers))
        rec = self.node.sessions.store.get(session_id)
        body = self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None
        if body is not None and not body:
            body = b""
        request = httpclient.HTTPRequest(
            gateway_url(handle, self.request), method=self.request.method,
            headers=forward_headers(self.request.headers, rec.gateway_token), body=body,
            request_timeout=120, allow_nonstandard_methods=True, follow_redirects=False,
        )
        self.node.metrics.proxy_bytes.labels("to_gateway").inc(len(body or b""))
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except OSError as exc:
            raise BadGateway(f"session gateway unreachable: {exc.strerror or exc}") from exc
        if resp.code == 599:
            raise BadGateway("session gateway unreachable")
        self.node.metrics.proxy_bytes.labels("to_renter").inc(len(resp.body or b""))
        self.set_status(resp.code)
        self.clear_header("Content-Type")
        for name in ("Content-Type", "Location"):
            if name in resp.headers:
                self.set_header(name, resp.headers[name])
        self.finish(None if resp.code in (204, 304) else (resp.body or b""))

    async def get(self, session_id: str, path: str) -> None:
        await self._proxy(session_id, path)

    post = put = patch = delete = get


class GatewayWebsocketHandler(websocket.WebSocketHandler):
    """Kernel websocket of one session: `.../gateway/api/kernels/<kernel>/channels`."""

    @property
    def node(self) -> ProviderNode:
        return self.settings["walnut_node"]

    def refuse(self, exc: WalnutError) -> None:
        """Answer the upgrade request in the API's one error shape (no websocket opens)."""
        self.set_status(exc.answer_status)
        self.finish(error_body(exc))

    def check_origin(self, origin: str) -> bool:
        return True  # authenticated by the session token header, not by cookies

    async def get(self, session_id: str, kernel_path: str) -> None:
        try:
            handle = self.node.sessions.authorize_gateway(
                session_id, session_token_from(self.request.headers))
        except WalnutError as exc:
            self.refuse(exc)
            return
        rec = self.node.sessions.store.get(session_id)
        ws_url = handle.gateway_url.replace("http", "ws", 1) + "/" + kernel_path
        requested = [p.strip() for p in
                     self.request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        if RESUME_SUBPROTOCOL in requested:
            await self._open_link(session_id, kernel_path, ws_url, rec.gateway_token)
            return
        if self.request.query:
            ws_url += "?" + self.request.query
        self.bridge = await self._gateway_socket(ws_url, rec.gateway_token, requested)
        if self.bridge is None:
            return
        self._subprotocol = self.bridge.upstream.selected_subprotocol
        await super().get(session_id, kernel_path)

    async def _gateway_socket(self, url: str, gateway_token: str, subprotocols: list[str]
                              ) -> GatewayWebsocketBridge | None:
        """A websocket to the session's gateway, or None once the error is answered."""
        bridge = GatewayWebsocketBridge(self, self.node.metrics)
        try:
            await bridge.connect(url, token_auth(gateway_token), subprotocols)
        except (httpclient.HTTPClientError, OSError) as exc:
            status = 404 if getattr(exc, "code", 502) == 404 else 502
            self.refuse(WalnutError("kernel websocket unavailable", status=status))
            return None
        return bridge

    async def _open_link(self, session_id: str, kernel_path: str, ws_url: str,
                         gateway_token: str) -> None:
        """A resumable link: found again by its id, or made with a new gateway socket."""
        link_id = self.get_query_argument(LINK_ID_QUERY, "")
        try:
            self._renter_ack = parse_int(
                self.get_query_argument(LINK_ACK_QUERY, "0", strip=False), LINK_ACK_QUERY)
        except NumberError:
            self._renter_ack = -1
        if not re.fullmatch(LINK_ID_PATTERN, link_id) or self._renter_ack < 0:
            self.refuse(BadRequest(
                "a resumable link needs session_id (32 hex) and walnut_ack >= 0"))
            return
        key = f"{session_id}/{kernel_path}/{link_id}"
        link = self.node.links.get(key)
        if link is None:
            bridge = await self._gateway_socket(f"{ws_url}?{LINK_ID_QUERY}={link_id}",
                                                gateway_token, [JUPYTER_V1_SUBPROTOCOL])
            if bridge is None:
                return
            link = ResumableLink(key, bridge.upstream, self.node.metrics,
                                 self.node.link_grace_s, self.node.links.pop)
            self.node.links[key] = link
            self._renter_ack = 0  # an ack counts only within the link instance it came from
        self.link = link
        self._subprotocol = RESUME_SUBPROTOCOL
        await super().get(session_id, kernel_path)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return getattr(self, "_subprotocol", None)

    def open(self, *args: str) -> None:
        self.set_nodelay(True)
        link = getattr(self, "link", None)
        if link is not None:
            link.attach(self, self._renter_ack)
        else:
            self.bridge.start_pump()

    async def on_message(self, message: str | bytes) -> None:
        link = getattr(self, "link", None)
        if link is not None:
            await link.from_renter(message)
        else:
            await self.bridge.to_gateway(message)

    def on_close(self) -> None:
        link = getattr(self, "link", None)
        if link is not None:
            link.detach(self)
        bridge = getattr(self, "bridge", None)
        if bridge is not None:
            bridge.close()


class MetricsHandler(web.RequestHandler):
    def get(self) -> None:
        node = self.settings["walnut_node"]
        node.refresh_metrics()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(node.metrics.registry))


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise NotFound(f"no such endpoint: {self.request.method} {self.request.path}")


def log_request(handler: web.RequestHandler) -> None:
    """Access log without query strings: a token wrongly put in a URL must not reach the log."""
    status = handler.get_status()
    level = log.info if status < 400 else log.warning if status < 500 else log.error
    level("%d %s %s %.1fms", status, handler.request.method, handler.request.path,
          1000.0 * handler.request.request_time())
