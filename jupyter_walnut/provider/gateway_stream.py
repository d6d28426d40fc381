"""The gateway proxy's two streamed routes: workspace uploads and downloads (issue #16).

    GET|PUT  /api/v1/sessions/<id>/gateway/walnut/fs/upload/<path>    request body streamed
    GET      /api/v1/sessions/<id>/gateway/walnut/fs/download/<path>  response body streamed

Every other gateway call is buffered (app.GatewayProxyHandler, bodies under the API's cap).
An upload's body goes to the gateway chunk by chunk as it arrives (tornado's
stream_request_body feeding the client's body_producer through a small queue, so a slow
gateway slows the renter instead of filling the provider's memory), up to UPLOAD_CAP bytes a
request; a renter cut mid-body cuts the gateway's request too and the gateway keeps what
arrived. A download's body is written to the renter as the gateway sends it, each chunk
flushed before the next is read; a gateway cut mid-body closes the renter's connection, so
the renter sees a short body (Content-Length) and resumes with a Range.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tornado import httpclient, httputil, iostream, web

from ..common.errors import BadGateway, PayloadTooLarge
from ..common.numbers import parse_int
from .app import GatewayProxyHandler, gateway_url
from .proxy import forward_headers, session_token_from

UPLOAD_CAP = 1 << 30  # bytes in one PUT; a larger file goes in several (?offset=N)
MAX_DOWNLOAD = 1 << 44  # the provider holds no download in memory: only a sanity bound
TRANSFER_TIMEOUT_S = 6 * 3600
_QUEUED_CHUNKS = 8
_CUT = object()  # the renter's connection closed mid-body
_RELAYED_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges",
                    "X-Walnut-Sha256", "Location")


class RenterCut(Exception):
    """The renter's upload connection closed mid-body: raised into the gateway's request."""


class RenterGone(Exception):
    """The renter closed a download: raised from the streaming callback to stop reading
    the gateway (tornado logs whatever such a callback raises; this one is routine)."""


class _RoutineCuts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], RenterGone))


logging.getLogger("tornado.application").addFilter(_RoutineCuts())


@web.stream_request_body
class GatewayUploadHandler(GatewayProxyHandler):
    SUPPORTED_METHODS = ("GET", "PUT")
    _chunks: asyncio.Queue | None = None
    _fetch: asyncio.Future | None = None

    def prepare(self) -> None:
        self._t0 = time.perf_counter()
        if self.request.method != "PUT":
            return
        session_id = self.path_args[0]
        handle = self.node.sessions.authorize_gateway(
            session_id, session_token_from(self.request.headers))
        length = self.request.headers.get("Content-Length")
        if length is not None and parse_int(length, "Content-Length") > UPLOAD_CAP:
            raise PayloadTooLarge(f"an upload request is at most {UPLOAD_CAP} bytes: send "
                                  "the rest in another PUT with ?offset=")
        self.request.connection.set_max_body_size(UPLOAD_CAP)
        self.request.connection.stream.set_nodelay(True)
        headers = forward_headers(self.request.headers,
                                  self.node.sessions.store.get(session_id).gateway_token)
        if length is not None:
            headers["Content-Length"] = length  # else the client sends it chunked
        self._chunks = asyncio.Queue(maxsize=_QUEUED_CHUNKS)
        request = httpclient.HTTPRequest(
            gateway_url(handle, self.request), method="PUT", headers=headers,
            body_producer=self._produce, request_timeout=TRANSFER_TIMEOUT_S,
            connect_timeout=20, follow_redirects=False, decompress_response=False)
        self._fetch = asyncio.ensure_future(
            httpclient.AsyncHTTPClient().fetch(request, raise_error=False))
        self._fetch.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _produce(self, write) -> None:
        assert self._chunks is not None
        while True:
            chunk = await self._chunks.get()
            if chunk is None:
                return
            if chunk is _CUT:
                raise RenterCut("the renter's connection closed mid-body")
            self.node.metrics.proxy_bytes.labels("to_gateway").inc(len(chunk))
            await write(chunk)

    async def _enqueue(self, item: bytes | None) -> None:
        """Queue a chunk for the gateway, waiting while it is behind, unless its request
        already ended (then nobody reads the queue and the answer says why)."""
        assert self._chunks is not None and self._fetch is not None
        if self._fetch.done():
            return
        if not self._chunks.full():
            self._chunks.put_nowait(item)
            return
        put = asyncio.ensure_future(self._chunks.put(item))
        await asyncio.wait([put, self._fetch], return_when=asyncio.FIRST_COMPLETED)
        put.cancel()

    async def data_received(self, chunk: bytes) -> None:
        if self._chunks is not None:
            await self._enqueue(chunk)

    async def put(self, session_id: str, path: str) -> None:
        assert self._fetch is not None
        await self._enqueue(None)
        try:
            resp = await self._fetch
        except (OSError, RenterCut, httpclient.HTTPClientError) as exc:
            raise BadGateway("session gateway unreachable") from exc
        if resp.code == 599:
            raise BadGateway("session gateway unreachable during the upload")
        self.node.metrics.proxy_bytes.labels("to_renter").inc(len(resp.body or b""))
        self.set_status(resp.code)
        self.clear_header("Content-Type")
        if "Content-Type" in resp.headers:
            self.set_header("Content-Type", resp.headers["Content-Type"])
        self.finish(resp.body or b"")

    def on_connection_close(self) -> None:
        if self._chunks is not None:
            while not self._chunks.empty():
                self._chunks.get_nowait()
            self._chunks.put_nowait(_CUT)
        super().on_connection_close()


class GatewayDownloadHandler(GatewayProxyHandler):
    SUPPORTED_METHODS = ("GET",)
    _sent_headers = False

    async def get(self, session_id: str, path: str) -> None:
        handle = self.node.sessions.authorize_gateway(
            session_id, session_token_from(self.request.headers))
        rec = self.node.sessions.store.get(session_id)
        self.request.connection.stream.set_nodelay(True)
        self._status: int | None = None
        self._upstream_headers = httputil.HTTPHeaders()
        request = httpclient.HTTPRequest(
            gateway_url(handle, self.request), method="GET",
            headers=forward_headers(self.request.headers, rec.gateway_token),
            header_callback=self._on_header, streaming_callback=self._on_chunk,
            request_timeout=TRANSFER_TIMEOUT_S, connect_timeout=20, follow_redirects=False,
            decompress_response=False)
        client = httpclient.AsyncHTTPClient(force_instance=True, max_body_size=MAX_DOWNLOAD)
        try:
            code = (await client.fetch(request, raise_error=False)).code
        except (OSError, httpclient.HTTPClientError):  # either side cut the stream
            code = 599
        finally:
            client.close()
        if code != 599 and self._status is not None:
            self._start()  # an empty body: the headers are still to send
            self.finish()
        elif not self._sent_headers:
            raise BadGateway("session gateway unreachable")
        else:
            # cut mid-body: a short body the renter notices by its Content-Length; it
            # resumes with a Range
            self.request.connection.stream.close()
            self._finished = True
            self.on_finish()

    def _on_header(self, line: str) -> None:
        if self._status is None and line.startswith("HTTP/"):
            self._status = httputil.parse_response_start_line(line.strip()).code
        elif line.strip():
            self._upstream_headers.parse_line(line)

    def _start(self) -> None:
        if self._sent_headers:
            return
        self._sent_headers = True
        self.set_status(self._status or 502)
        self.clear_header("Content-Type")
        for name in _RELAYED_HEADERS:
            if name in self._upstream_headers:
                self.set_header(name, self._upstream_headers[name])

    def _on_chunk(self, chunk: bytes) -> asyncio.Future:
        self._start()
        self.node.metrics.proxy_bytes.labels("to_renter").inc(len(chunk))
        self.write(chunk)
        return asyncio.ensure_future(self._flush())  # the next chunk is read once this left

    async def _flush(self) -> None:
        try:
            await self.flush()
        except iostream.StreamClosedError:
            raise RenterGone() from None


def routes(session_id: str, api: str) -> list[tuple[str, type]]:
    prefix = rf"{api}/sessions/{session_id}/gateway/"
    return [(prefix + r"(walnut/fs/upload/.*)", GatewayUploadHandler),
            (prefix + r"(walnut/fs/download/.*)", GatewayDownloadHandler)]
