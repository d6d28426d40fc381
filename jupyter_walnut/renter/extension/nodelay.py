"""Faster kernel websockets for the whole server, and no IOPub rate limit for Walnut kernels.

Jupyter Server leaves Nagle's algorithm on for kernel websockets, so each small reply waits
for a delayed ACK (~40 ms per execute on loopback); this turns it off for every kernel,
local ones included. Walnut kernels are exempt from the server's IOPub data-rate limit:
output already crossed the network at the network's pace, and dropping it silently is the
worst outcome (see docs/remote-kernels.md).
"""

from __future__ import annotations

from functools import cache


class NoDelayMixin:
    def connect(self):  # type: ignore[override]
        handler = getattr(self, "websocket_handler", None)
        if handler is not None and handler.ws_connection is not None:
            handler.set_nodelay(True)
        return super().connect()  # type: ignore[misc]

    def _limit_rate(self, channel, msg, msg_list):
        kernel_name = getattr(self.kernel_manager, "kernel_name", "") or ""
        if kernel_name.startswith("walnut-"):
            return False
        return super()._limit_rate(channel, msg, msg_list)  # type: ignore[misc]


@cache
def nodelay_class(base: type) -> type:
    if issubclass(base, NoDelayMixin):
        return base
    return type(f"NoDelay{base.__name__}", (NoDelayMixin, base), {})
