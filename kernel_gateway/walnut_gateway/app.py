"""The kernel gateway application of a session."""

from __future__ import annotations

from jupyter_server.utils import url_path_join
from kernel_gateway.gatewayapp import KernelGatewayApp

from . import files, terminals

MAX_MESSAGE_SIZE = 256 * 1024 * 1024


class WalnutGatewayApp(KernelGatewayApp):
    name = "walnut-gateway"

    def init_webapp(self) -> None:
        super().init_webapp()
        # tornado's 10 MiB default would close the socket on one large output message
        self.web_app.settings["websocket_max_message_size"] = MAX_MESSAGE_SIZE
        # the workspace's file API (files.py); added rules match before the gateway's 404
        self.web_app.settings.update(files.settings(self))
        self.web_app.add_handlers(".*$", [
            (url_path_join("/", self.base_url, pattern), handler)
            for pattern, handler in files.handlers()])
        terminals.mount(self)  # a shell in the session (terminals.py, issue #16)
        from . import journal  # outputs per execute request, kept on disk (issue #17)
        journal.mount(self)
