"""The kernel gateway application of a session."""

from __future__ import annotations

from kernel_gateway.gatewayapp import KernelGatewayApp

from walnut_gateway import terminals

MAX_MESSAGE_SIZE = 256 * 1024 * 1024


class WalnutGatewayApp(KernelGatewayApp):
    name = "walnut-gateway"

    def init_webapp(self) -> None:
        super().init_webapp()
        # tornado's 10 MiB default would close the socket on one large output message
        self.web_app.settings["websocket_max_message_size"] = MAX_MESSAGE_SIZE
        terminals.mount(self)  # a shell in the session (issue #16)
        from . import journal  # outputs per execute request, kept on disk (issue #17)
        journal.mount(self)
