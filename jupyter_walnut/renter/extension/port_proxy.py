"""A session's web apps (TensorBoard, a dashboard) in the renter's browser (issue #16).

`/walnut/sessions/<sid>/proxy/<port>/<path>` on JupyterLab's origin (Jupyter-authenticated)
answers our own small page that hands the browser over to the session's own origin,
`http://<sid>.localhost:<apps port>/walnut/sessions/<sid>/proxy/<port>/<path>`, a second
listener of this server that serves nothing but the session's ports, relayed to the provider
with the session's access token.

Why another origin. The app's HTML comes from the provider (hostile). On JupyterLab's origin
its script could read the `_xsrf` cookie and drive /api/kernels or /walnut/* as the renter.
`Content-Security-Policy: sandbox` (an opaque origin) stops that, but Chromium then sends no
cookie at all with the sandboxed page's requests (fetch, XHR, images, websockets; SameSite
Lax, Strict or None alike: tests/test_port_proxy.py shows it), so the app's own requests could
carry no credential but one in the URL, and no token may be in a URL. A port of the same host
is no better: cookies ignore ports, so its script would read Jupyter's `_xsrf`. So each
session's apps get an origin of their own site-less host, `<sid>.localhost` (browsers resolve
*.localhost to loopback): Jupyter's cookies are not sent there nor readable there, another
session's apps are another origin, and its own credential is a host-only HttpOnly cookie,
set from a one-time ticket that JupyterLab's origin POSTs there (never in a URL).

Environment: WALNUT_APPS_PORT (default: a free port), WALNUT_APPS_DOMAIN (default
`localhost`; a wildcard DNS name for a JupyterLab that browsers reach from afar).
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import secrets
import time
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from jupyter_server.base.handlers import JupyterHandler
from tornado import httpclient, httpserver, web, websocket
from tornado.netutil import bind_sockets

from ...common.errors import WalnutError
from ...common.gateway import ProviderAPIError, connect_websocket
from ...common.http_relay import HOP_BY_HOP, ResponseRelay
from ...common.protocol import API, SESSION_ID_PATTERN
from ..provider_client import ProviderClient
from ..store import RenterSession
from .handlers import WalnutHandler
from .terminal_handlers import running_session
from .ws_relay import UpstreamRelay

if TYPE_CHECKING:
    from ..manager import RenterManager

PORT = r"(\d{1,5})"
COOKIE = "walnut-proxy"
TICKET_S = 60
# never sent on to the provider: per-hop headers, our cookie and credentials, Host
DROP_REQUEST = HOP_BY_HOP | {"host", "authorization", "cookie", "content-length",
                             "sec-websocket-key", "sec-websocket-version",
                             "sec-websocket-extensions", "sec-websocket-protocol", "origin"}


def prefix(session_id: str, port: int) -> str:
    return f"/walnut/sessions/{session_id}/proxy/{port}/"


def check_port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise WalnutError(f"port {text} is not between 1 and 65535", status=400)
    return port


class Apps:
    """The apps listener of one Jupyter Server: its tickets and per-session credentials."""

    def __init__(self, walnut: RenterManager, address: str) -> None:
        self.walnut = walnut
        self.address = address
        self.domain = os.environ.get("WALNUT_APPS_DOMAIN", "localhost").strip(".").lower()
        self.port = 0
        self.tickets: dict[str, tuple[str, int, str, float]] = {}
        self.credentials: dict[str, str] = {}
        self._server: httpserver.HTTPServer | None = None

    def start(self) -> None:
        if self._server is not None:
            return
        app = web.Application([
            (r"/walnut-proxy/login", LoginHandler),
            (rf"/walnut/sessions/({SESSION_ID_PATTERN})/proxy/{PORT}/(.*)", AppHandler),
        ], walnut_apps=self, websocket_max_message_size=256 << 20)
        self._server = httpserver.HTTPServer(app, xheaders=False)
        sockets = bind_sockets(int(os.environ.get("WALNUT_APPS_PORT", "0")), self.address)
        self._server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def origin(self, session_id: str) -> str:
        return f"http://{session_id.lower()}.{self.domain}:{self.port}"

    def session_of_host(self, host: str) -> str | None:
        name = host.rsplit(":", 1)[0].lower()
        sid, _, domain = name.partition(".")
        return sid if domain == self.domain and re.fullmatch(SESSION_ID_PATTERN, sid) else None

    def ticket(self, session_id: str, port: int, path: str) -> str:
        now = time.monotonic()
        self.tickets = {k: v for k, v in self.tickets.items() if v[3] > now}
        ticket = secrets.token_urlsafe(32)
        self.tickets[ticket] = (session_id, port, path, now + TICKET_S)
        if session_id not in self.credentials:
            self.credentials[session_id] = secrets.token_urlsafe(32)
            # the apps' credential ends with the session
            self.walnut.on_end(session_id, lambda s: self.credentials.pop(s.id, None))
        return ticket

    def redeem(self, ticket: str, session_id: str) -> tuple[int, str] | None:
        entry = self.tickets.pop(ticket, None)  # once only
        if entry is None or entry[0] != session_id or entry[3] < time.monotonic():
            return None
        return entry[1], entry[2]


def apps_of(handler: web.RequestHandler) -> Apps:
    settings = handler.settings
    apps = settings.get("walnut_apps")
    if apps is None:
        ip = getattr(settings.get("serverapp"), "ip", "") or "127.0.0.1"
        apps = Apps(settings["walnut_manager"], "127.0.0.1" if ip in ("localhost", "") else ip)
        settings["walnut_apps"] = apps
    apps.start()
    return apps


# --- on JupyterLab's origin ---------------------------------------------------------------


def open_app(walnut: RenterManager, apps: Apps, session_id: str, port_text: str, path: str,
             query: str) -> dict:
    """Where the app opens and the one-time ticket that signs the browser in there."""
    port = check_port(port_text)
    running_session(walnut, session_id)  # 404 / 409
    path += ("?" + query) if query else ""
    origin = apps.origin(session_id)
    return {"url": origin + prefix(session_id, port) + path,
            "login": origin + "/walnut-proxy/login",
            "ticket": apps.ticket(session_id, port, path)}


class AppTicketHandler(WalnutHandler):
    """POST (XSRF-checked, as every /walnut/ write): the JSON that JupyterLab's Open
    command submits as a form to the app's origin."""

    @web.authenticated
    def post(self, session_id: str, port: str) -> None:
        self.finish(open_app(self.walnut, apps_of(self), session_id, port, "", ""))

    @web.authenticated
    def get(self, session_id: str, port: str) -> None:
        self.redirect(self.request.path + "/")


class AppPageHandler(JupyterHandler):
    """GET: our own page (never the app's bytes) that carries the ticket to the app's origin
    in a form POST, so a jupyter-server-proxy style link works; 403 without Jupyter auth."""

    @property
    def walnut(self) -> RenterManager:
        return self.settings["walnut_manager"]

    @property
    def content_security_policy(self) -> str:
        # the one inline script below, and the form may go only to the app's origin
        origin = getattr(self, "_app_origin", "'none'")
        return (f"default-src 'none'; script-src 'unsafe-inline'; form-action {origin}; "
                "frame-ancestors 'self'; base-uri 'none'")

    def get(self, session_id: str, port: str, path: str = "") -> None:
        if not self.current_user:
            raise web.HTTPError(403, "sign in to Jupyter first")
        try:
            apps = apps_of(self)
            opened = open_app(self.walnut, apps, session_id, port, path, self.request.query)
        except WalnutError as exc:
            raise web.HTTPError(exc.answer_status, exc.message) from exc
        self._app_origin = apps.origin(session_id)
        self.set_header("Content-Security-Policy", self.content_security_policy)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(
            "<!doctype html><title>Opening the session's app</title>"
            f'<form method="post" action="{html.escape(opened["login"])}">'
            f'<input type="hidden" name="ticket" value="{html.escape(opened["ticket"])}">'
            "<noscript><button>Open the app</button></noscript></form>"
            "<script>document.forms[0].submit()</script>")


# --- on the session's own origin ------------------------------------------------------------


class LoginHandler(web.RequestHandler):
    """The ticket (a form field) for the session's credential cookie, then the app."""

    def check_xsrf_cookie(self) -> None:
        """The one-time ticket is the proof: it came from JupyterLab's authenticated origin."""

    def post(self) -> None:
        apps: Apps = self.settings["walnut_apps"]
        session_id = apps.session_of_host(self.request.host)
        redeemed = apps.redeem(self.get_body_argument("ticket", ""), session_id or "")
        if session_id is None or redeemed is None or session_id not in apps.credentials:
            raise web.HTTPError(403, "this link to the session's app has expired: open it "
                                     "again from JupyterLab")
        port, path = redeemed
        self.set_cookie(COOKIE, apps.credentials[session_id], path="/", httponly=True,
                        samesite="Lax")
        self.redirect(prefix(session_id, port) + path, status=303)


def location(value: str, session_id: str, port: int) -> str:
    """A redirect of the app, kept under its prefix on this origin."""
    parts = urlsplit(value)
    host = (parts.hostname or "").lower()
    if parts.scheme in ("http", "https") and host:
        local = host == "localhost" or host.endswith(".localhost") or re.fullmatch(
            r"[0-9.]+|[0-9a-f:]+", host)
        if not local:
            return value  # elsewhere on the web: the app's own business
        value = parts.path + (f"?{parts.query}" if parts.query else "")
    elif parts.scheme or parts.netloc:
        return value
    if value.startswith("/") and not value.startswith(prefix(session_id, port)):
        return prefix(session_id, port) + value.lstrip("/")
    return value


def set_cookie_header(value: str) -> str | None:
    """The app's own cookies stay host-only on its origin; ours it cannot replace."""
    name = value.split("=", 1)[0].strip()
    if name == COOKIE or re.search(r";\s*domain\s*=", value, re.IGNORECASE):
        return None
    return value


class AppHandler(UpstreamRelay, websocket.WebSocketHandler):
    """One request of the session's app: HTTP relayed as it streams, or a websocket."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    relayed = "the session's app"

    def _authorize(self, session_id: str, port_text: str) -> tuple[ProviderClient,
                                                                   RenterSession, int]:
        apps: Apps = self.settings["walnut_apps"]
        # the host is the session's own origin (a page of session A cannot reach B's app
        # under A's origin with A's cookie), and the cookie is that session's credential
        expected = apps.credentials.get(session_id)
        cookie = self.get_cookie(COOKIE) or ""
        if apps.session_of_host(self.request.host) != session_id or not expected or \
                not secrets.compare_digest(cookie, expected):
            raise WalnutError("not signed in to this session's apps: open the app from "
                              "JupyterLab", status=403)
        port = check_port(port_text)
        client, s = running_session(apps.walnut, session_id)
        return client, s, port

    def _forward_headers(self, token: str) -> dict[str, str]:
        out = {k: v for k, v in self.request.headers.get_all() if k.lower() not in DROP_REQUEST}
        cookies = "; ".join(f"{m.key}={m.coded_value}" for m in self.cookies.values()
                            if m.key != COOKIE)  # the app's own cookies, never ours
        if cookies:
            out["Cookie"] = cookies
        out["Authorization"] = f"token {token}"
        return out

    def _refuse(self, status: int, message: str) -> None:
        self.clear()
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(message + "\n")

    async def get(self, session_id: str, port_text: str, path: str) -> None:
        try:
            client, s, port = self._authorize(session_id, port_text)
        except WalnutError as exc:
            self._refuse(exc.answer_status, exc.message)
            return
        url = (f"{client.base_url}{API}/sessions/{s.id}/proxy/{port}/{quote(path, safe='/')}"
               + (f"?{self.request.query}" if self.request.query else ""))
        if self.request.headers.get("Upgrade", "").lower() == "websocket" and \
                self.request.method == "GET":
            await self._websocket(client, s, url)
        else:
            await self._http(client, s, port, url)

    head = post = put = patch = delete = options = get

    async def _http(self, client: ProviderClient, s: RenterSession, port: int,
                    url: str) -> None:
        body = self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None
        if body is None and self.request.body:
            body = self.request.body

        def header(name: str, value: str) -> str | None:
            if name.lower() == "location":
                return location(value, s.id, port)
            if name.lower() == "set-cookie":
                return set_cookie_header(value)
            return value

        relay = ResponseRelay(self, header=header)
        request = relay.request(url, self.request.method,
                                self._forward_headers(s.access_token), body,
                                ssl_options=await client._ssl_options())
        if not await relay.fetch(request):
            self._refuse(502, "the provider did not answer for the session's app")

    async def _websocket(self, client: ProviderClient, s: RenterSession, url: str) -> None:
        requested = [p.strip() for p in
                     self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                     if p.strip()]
        try:
            self.upstream = await connect_websocket(
                url.replace("http", "ws", 1), self._forward_headers(s.access_token),
                subprotocols=requested, ssl_options=await client._ssl_options())
        except (httpclient.HTTPClientError, OSError, ProviderAPIError) as exc:
            code = getattr(exc, "code", 502)
            self._refuse(code if 400 <= code < 500 else 502,
                         "the session's websocket is unavailable")
            return
        self._subprotocol = self.upstream.selected_subprotocol
        self._pump: asyncio.Task | None = None
        await super().get()

    def check_origin(self, origin: str) -> bool:
        """Only pages of the session's own origin (the cookie is SameSite=Lax as well)."""
        apps: Apps = self.settings["walnut_apps"]
        return urlsplit(origin).netloc.lower() == self.request.host.lower() and \
            apps.session_of_host(self.request.host) is not None

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return getattr(self, "_subprotocol", None)

    def open(self, *args: str) -> None:
        self.start_relay()


def port_proxy_handlers(sid: str) -> list[tuple[str, type]]:
    return [
        (rf"/walnut/sessions/{sid}/proxy/{PORT}/(.*)", AppPageHandler),
        (rf"/walnut/sessions/{sid}/proxy/{PORT}", AppTicketHandler),
    ]
