"""A TCP relay from one address to another, on the provider's event loop.

A Docker session cannot reach the host's loopback, where the node's package cache listens, and
egress.py drops every new connection from a session bridge to the host. Each session gets its
own relay on its bridge's gateway address (the one host address its container can route to),
opened by a single exception in that bridge's INPUT chain; another session's bridge has no
such exception for it. Inside the container the name `PACKAGE_HOST` resolves to that address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

log = logging.getLogger("walnut.provider")

PACKAGE_HOST = "walnut-packages"  # the cache's name inside a Docker session (/etc/hosts)
_CHUNK = 1 << 16


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


class TcpRelay:
    """Listens on (host, port) and joins each connection to `target`: a Unix socket's path
    (the cache listens on no network address) or (host, port)."""

    def __init__(self, target: str | tuple[str, int]) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self._conns: set[asyncio.Task] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (a free one for 0)."""
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        return self.server.sockets[0].getsockname()[1]

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if isinstance(self.target, str):
            return await asyncio.open_unix_connection(self.target)
        return await asyncio.open_connection(*self.target)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            try:
                up_reader, up_writer = await self._connect()
            except OSError:
                return  # the cache is down: the client sees the connection close
            _nodelay(writer)
            _nodelay(up_writer)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
            if task is not None:
                self._conns.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            self.server = None
