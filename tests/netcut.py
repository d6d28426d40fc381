"""A loopback TCP proxy a test controls: cut the network between two endpoints and restore it."""

from __future__ import annotations

import asyncio
import socket
import threading


class NetCut:
    """Forwards 127.0.0.1:<port> to a target, on its own event loop thread."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._conns: set[asyncio.StreamWriter] = set()
        self.open = True
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._call(self._listen())

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader, writer) -> None:
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
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
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
        self._call(_cut())

    def restore(self) -> None:
        async def _restore():
            self.open = True
        self._call(_restore())

    def close(self) -> None:
        self.cut()
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _stop(self) -> None:
        self.server.close()
