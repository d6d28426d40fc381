"""A loopback TCP proxy a test controls: cut the network between two endpoints and restore it.

`cut()` is a dead link that says so: every connection is reset and new ones are refused.
`silence()` is a silent partition: bytes stop in both directions but no socket is closed
(no RST, no FIN), new connections are accepted and then hear nothing, and a side that gives
up on its connection meanwhile is told to the other side only once the network is back, as
a real partition drops the reset too. `restore()` heals either.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class NetCut:
    """Forwards 127.0.0.1:<port> to a target, on its own event loop thread."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._conns: set[asyncio.StreamWriter] = set()
        self.open = True
        self._flowing = self._call(self._event())  # cleared while the network is silent
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._call(self._listen())

    def relayed(self, url: str) -> str:
        """`url` (scheme, host, port, optional #pin) as reached through this relay."""
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    @staticmethod
    async def _event() -> asyncio.Event:
        event = asyncio.Event()
        event.set()
        return event

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader, writer) -> None:
        await self._flowing.wait()  # silent: accepted by the kernel, then nothing
        if not self.open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        for w in (writer, up_writer):
            w.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                            socket.TCP_NODELAY, 1)
            self._conns.add(w)

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    await self._flowing.wait()  # silent: hold the bytes, as a dead route does
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                await self._flowing.wait()  # a close in the silence reaches the peer after it
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._conns.discard(writer)
        self._conns.discard(up_writer)

    def cut(self) -> None:
        """Drop every connection and refuse new ones, like a dead link."""
        async def _cut():
            self.open = False
            for w in list(self._conns):
                w.transport.abort()
            self._flowing.set()  # nothing is held: every connection is gone
        self._call(_cut())

    def silence(self) -> None:
        """A silent partition: nothing passes, nothing is closed, nobody is told."""
        async def _silence():
            self._flowing.clear()
        self._call(_silence())

    def restore(self) -> None:
        async def _restore():
            self.open = True
            self._flowing.set()
        self._call(_restore())

    def close(self) -> None:
        self.cut()
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _stop(self) -> None:
        self.server.close()
