"""Relaying one HTTP answer into a tornado handler as it arrives (the port proxies of both
roles): the status and headers when the upstream's header block ends, then each body chunk
written and flushed, so a large download or an event stream is never held whole."""

from __future__ import annotations

from collections.abc import Callable

from tornado import httpclient, httputil, iostream, web

# per-hop headers, never relayed either way
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade"}
MAX_ANSWER = 64 << 30  # streamed, so only a bound on one answer
_client: httpclient.AsyncHTTPClient | None = None


def stream_client() -> httpclient.AsyncHTTPClient:
    """A client of its own: the shared one caps a body at 100 MB, streamed or not."""
    global _client
    if _client is None:
        _client = httpclient.AsyncHTTPClient(force_instance=True, max_body_size=MAX_ANSWER)
    return _client


class ResponseRelay:
    def __init__(self, handler: web.RequestHandler, drop: set[str] = HOP_BY_HOP,
                 header: Callable[[str, str], str | None] | None = None,
                 counted: Callable[[int], None] | None = None) -> None:
        """`header(name, value)` may rewrite a header's value (None drops it)."""
        self.handler = handler
        self.drop = drop
        self.header = header
        self.counted = counted
        self.started = False
        self._status = 0
        self._headers = httputil.HTTPHeaders()

    def request(self, url: str, method: str, headers: dict[str, str], body: bytes | None,
                **kwargs) -> httpclient.HTTPRequest:
        return httpclient.HTTPRequest(
            url, method=method, headers=headers, body=body, allow_nonstandard_methods=True,
            follow_redirects=False, decompress_response=False, connect_timeout=10,
            request_timeout=3600, header_callback=self.header_line,
            streaming_callback=self.chunk, **kwargs)

    async def fetch(self, request: httpclient.HTTPRequest) -> bool:
        """Relay the answer; False when nothing answered (no header block came back)."""
        try:
            resp = await stream_client().fetch(request, raise_error=False)
        except (OSError, iostream.StreamClosedError, httpclient.HTTPClientError):
            resp = None
        if not self.started:
            if resp is None or resp.code == 599:
                return False
            self.start(resp.code, resp.headers)
        try:
            self.handler.finish()
        except (RuntimeError, iostream.StreamClosedError):
            pass  # the caller left mid-answer
        return True

    def header_line(self, line: str) -> None:
        if line.startswith("HTTP/"):
            self._status = httputil.parse_response_start_line(line.strip()).code
            self._headers = httputil.HTTPHeaders()
        elif line.strip():
            self._headers.parse_line(line)
        elif self._status >= 200:  # the header block's end (1xx interim answers skipped)
            self.start(self._status, self._headers)

    def start(self, status: int, headers: httputil.HTTPHeaders) -> None:
        if self.started:
            return
        self.started = True
        h = self.handler
        h.clear()
        for name in ("Content-Type", "Server", "Date"):
            h.clear_header(name)
        h.set_status(status)
        for name, value in headers.get_all():
            if name.lower() in self.drop:
                continue
            if self.header is not None:
                value = self.header(name, value)
                if value is None:
                    continue
            h.add_header(name, value)

    def chunk(self, data: bytes) -> None:
        if not self.started:
            return
        if self.counted is not None:
            self.counted(len(data))
        try:
            self.handler.write(data)
            self.handler.flush()
        except (RuntimeError, iostream.StreamClosedError):
            pass
