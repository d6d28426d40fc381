"""Kernel websocket connection with Nagle's algorithm off, and sane binary frames only.

Stock servers leave Nagle on for kernel websockets, so each small reply waits for the peer's
delayed ACK (about 40 ms per execute on loopback).

jupyter_server trusts the offset-table length at the start of a binary frame: a frame whose
first bytes claim 2**31 (legacy format) or 2**63 (v1 subprotocol) parts makes it build a
gigabyte format string or loop for ever, stalling the whole gateway. Such frames are dropped.
"""

from __future__ import annotations

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

V1 = "v1.kernel.websocket.jupyter.org"


def binary_frame_problem(message: bytes, v1: bool) -> str | None:
    """Why the offset table of a binary frame cannot be right, or None."""
    width = 8 if v1 else 4
    if len(message) < width:
        return "short binary frame"
    count = int.from_bytes(message[:width], "little" if v1 else "big", signed=not v1)
    if count < (2 if v1 else 1) or len(message) < width * (count + 1):
        return f"binary frame claims {count} parts in {len(message)} bytes"
    return None


class NoDelayWebsocketConnection(ZMQChannelsWebsocketConnection):
    def connect(self):  # type: ignore[override]
        self.websocket_handler.set_nodelay(True)
        return super().connect()

    def handle_incoming_message(self, incoming_msg) -> None:  # type: ignore[override]
        if isinstance(incoming_msg, bytes):
            problem = binary_frame_problem(incoming_msg, self.subprotocol == V1)
            if problem is not None:
                self.log.warning("Dropped a malformed kernel websocket frame: %s", problem)
                return
        super().handle_incoming_message(incoming_msg)
