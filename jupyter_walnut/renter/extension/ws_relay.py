"""Both directions between a renter-side websocket and the session's one behind the provider
(a terminal, a web app's socket): frames pass unchanged, text or binary, and either end going
away closes the other. Shared by terminal_handlers.py and port_proxy.py."""

from __future__ import annotations

import asyncio

from tornado import websocket


class UpstreamRelay:
    """Mixin for a tornado WebSocketHandler whose `upstream` client connection was opened
    before the upgrade; call `start_relay()` from `open()`."""

    upstream: websocket.WebSocketClientConnection
    relayed = "the session's end"  # who went away, in the close reason
    _pump: asyncio.Task | None = None

    def start_relay(self) -> None:
        self.set_nodelay(True)  # type: ignore[attr-defined]
        self._pump = asyncio.ensure_future(self._from_upstream())

    async def _from_upstream(self) -> None:
        try:
            while True:
                msg = await self.upstream.read_message()
                if msg is None:
                    break
                await self.write_message(msg, binary=isinstance(msg, bytes))  # type: ignore[attr-defined]
        except websocket.WebSocketClosedError:
            pass
        finally:
            if self.ws_connection is not None:  # type: ignore[attr-defined]
                self.close(1000, f"{self.relayed} closed")  # type: ignore[attr-defined]

    async def on_message(self, message: str | bytes) -> None:
        try:
            await self.upstream.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            self.close(1011, f"{self.relayed} is gone")  # type: ignore[attr-defined]

    def on_close(self) -> None:
        upstream = getattr(self, "upstream", None)
        if upstream is not None:
            upstream.close()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
