"""A session's terminals, as JupyterLab's terminal widget reaches them through this server.

    GET|POST          /walnut/sessions/<sid>/api/terminals          list | start one
    GET|DELETE        /walnut/sessions/<sid>/api/terminals/<name>   one | end it
    websocket         /walnut/sessions/<sid>/terminals/websocket/<name>

So a TerminalConnection whose serverSettings baseUrl/wsUrl are `/walnut/sessions/<sid>/`
works unchanged. The browser authenticates to Jupyter as for Jupyter's own terminals (its
cookie or token, XSRF on REST writes, Jupyter's origin check on the websocket); this server
then calls the provider with the session's access token, which never reaches the browser.
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web, websocket

from ...common.errors import WalnutError
from ...common.gateway import ProviderAPIError, connect_websocket
from ..manager import RenterManager
from ..provider_client import ProviderClient
from ..store import RenterSession
from .handlers import WalnutHandler
from .ws_relay import UpstreamRelay

AUTH_RESOURCE = "terminals"
NAME = r"(\w+)"


def running_session(walnut: RenterManager, session_id: str) -> tuple[ProviderClient,
                                                                     RenterSession]:
    """The provider client and record of a running session of this renter (404/409)."""
    s = walnut.get(session_id)  # 404 when not ours
    if s.status != "running" or not s.access_token:
        raise WalnutError(f"session {session_id} is {s.status}", status=409)
    return walnut.client(s.provider_url), s


class TerminalsHandler(WalnutHandler):
    auth_resource = AUTH_RESOURCE
    relayed = "the session's terminal"

    async def _relay(self, session_id: str, method: str, path: str, body: Any = None) -> None:
        client, s = running_session(self.walnut, session_id)
        try:
            answer = await client.session_gateway(s.id, s.access_token).rest(method, path, body)
        except ProviderAPIError as exc:
            raise WalnutError(exc.message, status=exc.answer_status) from exc
        if answer is None:
            self.set_status(204)
            self.finish()
        else:
            self.finish(json.dumps(answer))

    @web.authenticated
    async def get(self, session_id: str, name: str | None = None) -> None:
        await self._relay(session_id, "GET", "api/terminals" + (f"/{name}" if name else ""))

    @web.authenticated
    async def post(self, session_id: str, name: str | None = None) -> None:
        if name is not None:
            raise web.HTTPError(405)
        await self._relay(session_id, "POST", "api/terminals", {})  # in the workspace

    @web.authenticated
    async def delete(self, session_id: str, name: str | None = None) -> None:
        if name is None:
            raise web.HTTPError(405)
        await self._relay(session_id, "DELETE", f"api/terminals/{name}")


class TerminalSocketHandler(UpstreamRelay, WebSocketMixin, websocket.WebSocketHandler,
                            JupyterHandler):
    """The terminal's websocket, bridged to the provider's (frames unchanged both ways)."""

    auth_resource = AUTH_RESOURCE

    def set_default_headers(self) -> None:
        """No page headers on a websocket (as Jupyter's kernel websocket)."""

    @property
    def walnut(self) -> RenterManager:
        return self.settings["walnut_manager"]

    @ws_authenticated
    async def get(self, session_id: str, name: str) -> None:
        if not await ensure_async(self.authorizer.is_authorized(
                self, self.current_user, "execute", AUTH_RESOURCE)):
            raise web.HTTPError(403)
        try:
            client, s = running_session(self.walnut, session_id)
        except WalnutError as exc:
            raise web.HTTPError(exc.answer_status, exc.message) from exc
        gateway = client.session_gateway(s.id, s.access_token)
        url = gateway.base_url.replace("http", "ws", 1) + f"/terminals/websocket/{name}"
        try:
            self.upstream = await connect_websocket(url, gateway.headers,
                                                    ssl_options=await gateway._ssl_options())
        except Exception as exc:  # refused (404: no such terminal) or unreachable
            code = getattr(exc, "code", 502)
            raise web.HTTPError(code if code in (403, 404, 409) else 502,
                                "the session's terminal is unavailable") from exc
        await super().get(session_id, name)

    def open(self, *args: str) -> None:
        super().open()  # Jupyter's ping loop
        self.start_relay()


def terminal_handlers(sid: str) -> list[tuple[str, type]]:
    return [
        (rf"/walnut/sessions/{sid}/api/terminals", TerminalsHandler),
        (rf"/walnut/sessions/{sid}/api/terminals/{NAME}", TerminalsHandler),
        (rf"/walnut/sessions/{sid}/terminals/websocket/{NAME}", TerminalSocketHandler),
    ]
