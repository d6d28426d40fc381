"""Terminals of a session: jupyter_server_terminals' handlers behind the gateway's token.

The REST API (`api/terminals`, `api/terminals/<name>`) and the websocket
(`terminals/websocket/<name>`) are jupyter_server_terminals' own, with kernel_gateway's
token check mixed in as it does for its kernel handlers, so they answer only the provider's
proxy. A terminal is a shell (bash, else sh) in the session's workspace with what a kernel
gets of the gateway's environment (PATH with the session env first, the whitelisted
variables): not a login shell, whose /etc/profile would reset PATH.
"""

from __future__ import annotations

import os
import shutil
import typing as t

from jupyter_server.utils import url_path_join
from jupyter_server_terminals import api_handlers, handlers
from jupyter_server_terminals.terminalmanager import TerminalManager
from kernel_gateway.mixins import CORSMixin, JSONErrorsMixin, TokenAuthorizationMixin
from tornado import web

if t.TYPE_CHECKING:
    from kernel_gateway.gatewayapp import KernelGatewayApp

# besides the whitelist: what a shell in a terminal expects to find
EXTENSION = "jupyter_server_terminals"
TERMINAL_VARS = ("PATH", "HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "SHELL", "TZ")


class SessionTerminalManager(TerminalManager):
    """Terminals whose environment is the kernels' one, not the gateway's whole env."""

    allowed_env: tuple[str, ...] = TERMINAL_VARS

    def make_term_env(self, height: int = 25, width: int = 80, winheight: int = 0,
                      winwidth: int = 0, **kwargs: t.Any) -> dict[str, str]:
        env = super().make_term_env(height, width, winheight, winwidth, **kwargs)
        keep = set(self.allowed_env) | {"TERM", "COLUMNS", "LINES", "TERMINADO_DIMENSIONS"}
        return {k: v for k, v in env.items() if k in keep}


class TerminalRootHandler(TokenAuthorizationMixin, CORSMixin, JSONErrorsMixin,
                          api_handlers.TerminalRootHandler):
    pass


class TerminalHandler(TokenAuthorizationMixin, CORSMixin, JSONErrorsMixin,
                      api_handlers.TerminalHandler):
    pass


class TermSocket(TokenAuthorizationMixin, handlers.TermSocket):
    def open(self, *args: t.Any, **kwargs: t.Any) -> None:
        self.set_nodelay(True)  # each keystroke is a small frame: no delayed-ACK stall
        super().open(*args, **kwargs)


def shell_command() -> list[str]:
    return [shutil.which("bash") or shutil.which("sh") or "/bin/sh"]


def mount(app: KernelGatewayApp, workspace: str | None = None) -> TerminalManager:
    """Add the terminal routes to the gateway's web app; returns their manager."""
    root = workspace or os.environ.get("WALNUT_WORKSPACE") or os.getcwd()
    manager = SessionTerminalManager(shell_command=shell_command(),
                                     term_settings={"cwd": root}, parent=app)
    manager.allowed_env = (*TERMINAL_VARS, *getattr(app, "env_process_whitelist", ()))
    manager.log = app.log
    settings = app.web_app.settings
    settings.update(terminal_manager=manager, terminals_available=True,
                    server_root_dir=root)
    # extension handlers find their app (for its log) under their name: the gateway is it
    settings.setdefault(EXTENSION, app)
    base = app.base_url
    ext = {"name": EXTENSION}  # the extension handlers' settings namespace
    routes = [
        web.url(url_path_join("/", base, r"/api/terminals"), TerminalRootHandler, ext),
        web.url(url_path_join("/", base, r"/api/terminals/(\w+)"), TerminalHandler, ext),
        web.url(url_path_join("/", base, r"/terminals/websocket/(\w+)"), TermSocket,
                {**ext, "term_manager": manager}),
    ]
    # ahead of the gateway's catch-all 404 (add_handlers would put them after it)
    router = app.web_app.wildcard_router
    router.rules[0:0] = [router.process_rule(rule) for rule in routes]
    return manager
