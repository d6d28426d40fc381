"""Kernel websocket connection with Nagle's algorithm off.

Stock servers leave Nagle on for kernel websockets, so each small reply waits for the peer's
delayed ACK (about 40 ms per execute on loopback).
"""

from __future__ import annotations

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection


class NoDelayWebsocketConnection(ZMQChannelsWebsocketConnection):
    def connect(self):  # type: ignore[override]
        self.websocket_handler.set_nodelay(True)
        return super().connect()
