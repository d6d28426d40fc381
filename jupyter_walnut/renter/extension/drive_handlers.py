"""A running session's workspace as a Jupyter drive (issue #16).

`/walnut/sessions/<sid>/api/contents/...` is the Contents API of the session's gateway,
reached through the provider's proxy with the session token from the renter's store (the
browser never sees it), every model checked by drive_models before JupyterLab gets it.
Uploads (`format: base64`, chunked or not) go onto the gateway's resumable walnut/fs
upload + commit routes at offsets this server tracks: a chunk retried after a network cut is
re-sent from its own start offset, so it is never appended twice, and nothing half-written
is ever at the path. `/walnut/sessions/<sid>/files/<path>` streams a file as an attachment
with a sandbox CSP, so a provider's HTML never renders on the Jupyter origin."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from tornado import httpclient, web

from ...common import responses
from ...common.errors import BadRequest, Conflict
from ...common.gateway import Gateway, ProviderAPIError, fetch
from ..store import RenterSession
from .drive_models import check_request_path, clean_checkpoints, clean_model
from .handlers import WalnutHandler

MAX_MODEL_BYTES = 64 * 1024 * 1024  # a notebook or file opened in place (base64 inflates)
UPLOAD_RETRY_SECONDS = 60.0  # how long a chunk is retried across a network cut
_QUERY = ("type", "format", "content", "hash")  # what Contents GET takes
_SHA = re.compile(r"[0-9a-f]{64}")


@dataclass
class _Upload:
    """One chunked upload as this server sent it on: where the last chunk started (to
    re-send it from there) and where it ended, with the content hash at both points."""

    chunk: int = 0
    start: int = 0
    start_hash: Any = field(default_factory=hashlib.sha256)
    end: int = 0
    end_hash: Any = field(default_factory=hashlib.sha256)


def _message(body: bytes, fallback: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return fallback
    if isinstance(data, dict):
        err = data.get("error")
        msg = err.get("message") if isinstance(err, dict) else data.get("message")
        if isinstance(msg, str) and msg:
            return msg[:500]
    return fallback


async def exchange(gw: Gateway, method: str, route: str, body: bytes | None = None,
                   content_type: str = "application/json", limit: int = MAX_MODEL_BYTES,
                   timeout: float = 120.0) -> tuple[int, bytes]:
    """One call to the session's gateway: (status, body at most `limit` bytes); an error
    status raises ProviderAPIError with the gateway's message (0: unreachable)."""
    if body is None and method in ("POST", "PUT", "PATCH"):
        body = b""
    cap = responses.BodyLimit(limit)
    request = httpclient.HTTPRequest(
        f"{gw.base_url}/{route}", method=method,
        headers={**gw.headers, "Content-Type": content_type}, body=body,
        request_timeout=timeout, connect_timeout=10, allow_nonstandard_methods=True,
        follow_redirects=False, streaming_callback=cap.feed,
        ssl_options=await gw._ssl_options())
    try:
        try:
            resp = await fetch(request)
        finally:
            cap.check()
    except responses.InvalidResponse as exc:
        raise ProviderAPIError(502, f"the session's answer is too big: {exc.message}") from exc
    if resp.code == 599:
        raise ProviderAPIError(0, f"session gateway unreachable: {resp.error}")
    if resp.code >= 300:
        raise ProviderAPIError(resp.code, _message(cap.body, resp.reason or "gateway error"))
    return resp.code, cap.body


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError as exc:
        raise ProviderAPIError(502, "the session's gateway sent something not JSON") from exc


class DriveHandler(WalnutHandler):
    def session_gateway(self, session_id: str) -> Gateway:
        s: RenterSession = self.walnut.get(session_id)
        if s.status != "running" or not s.access_token:
            raise Conflict(f"session {session_id} is {s.status}: its workspace is not open")
        return self.walnut.client(s.provider_url).session_gateway(session_id, s.access_token)


class ContentsHandler(DriveHandler):
    """The Contents API of one session's workspace (JupyterLab's Drive speaks it)."""

    @web.authenticated
    async def get(self, session_id: str, path: str | None) -> None:
        args = {k: self.get_query_argument(k) for k in _QUERY
                if self.get_query_argument(k, None) is not None}
        query = ("?" + urlencode(args)) if args else ""
        await self._relay(session_id, "GET", path, query=query)

    @web.authenticated
    async def post(self, session_id: str, path: str | None) -> None:
        body = self.body()
        for key in ("copy_from",):
            if key in body:
                body[key] = check_request_path(str(body[key]))
        await self._relay(session_id, "POST", path, body)

    @web.authenticated
    async def patch(self, session_id: str, path: str | None) -> None:
        body = self.body()
        if not isinstance(body.get("path"), str):
            raise BadRequest("path (the new name) is required")
        body["path"] = check_request_path(body["path"])
        await self._relay(session_id, "PATCH", path, body)

    @web.authenticated
    async def delete(self, session_id: str, path: str | None) -> None:
        await self._relay(session_id, "DELETE", path)

    @web.authenticated
    async def put(self, session_id: str, path: str | None) -> None:
        model = self.body()
        rel = check_request_path(path or "")
        if model.get("type") == "file" and model.get("format") == "base64":
            self.finish(json.dumps(await self._upload(session_id, rel, model)))
            return
        await self._relay(session_id, "PUT", path, model)

    async def _relay(self, session_id: str, method: str, path: str | None,
                     body: dict | None = None, query: str = "") -> None:
        rel = check_request_path(path or "")
        gw = self.session_gateway(session_id)
        data = None if body is None else json.dumps(body).encode()
        code, answer = await exchange(gw, method, f"api/contents/{quote(rel)}{query}", data)
        self.set_status(code)
        if code == 204 or not answer:
            self.finish()
            return
        value = _json(answer)
        if rel.endswith("/checkpoints") or "/checkpoints/" in rel:
            value = clean_checkpoints(value)
        else:
            value = clean_model(value)
        self.finish(json.dumps(value))

    # --- uploads ------------------------------------------------------------------------

    async def _upload(self, session_id: str, rel: str, model: dict) -> dict:
        if not rel:
            raise BadRequest("an upload needs a file name")
        try:
            data = base64.b64decode(model.get("content") or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise BadRequest("content is not base64") from None
        chunk = model.get("chunk")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int)
                                  or chunk == 0 or chunk < -1):
            raise BadRequest("chunk is 1, 2, ... then -1 for the last")
        gw = self.session_gateway(session_id)
        uploads: dict[tuple[str, str], _Upload] = self.settings.setdefault(
            "walnut_drive_uploads", {})
        key = (session_id, rel)
        state = self._next_chunk(uploads, key, chunk)
        start, hasher = state.start, state.start_hash.copy()
        hasher.update(data)
        await put_bytes(gw, rel, start, data)
        state.end, state.end_hash = start + len(data), hasher
        if chunk not in (None, -1):
            return _partial_model(rel, state.end)
        uploads.pop(key, None)
        return await commit(gw, rel, state.end, hasher.hexdigest())

    @staticmethod
    def _next_chunk(uploads: dict, key: tuple[str, str], chunk: int | None) -> _Upload:
        """The state this chunk starts from: a new upload for a whole file or chunk 1, the
        next chunk from the end of the last, the same chunk again from its own start."""
        if chunk is None or chunk == 1:
            uploads[key] = state = _Upload(chunk=1 if chunk == 1 else 0)
            return state
        state = uploads.get(key)
        if state is None:
            raise Conflict("no upload of this file is in progress: start again from chunk 1")
        if chunk == -1 or chunk == state.chunk + 1:  # the next chunk: starts where it ended
            state.chunk = chunk
            state.start, state.start_hash = state.end, state.end_hash.copy()
        elif chunk != state.chunk:  # chunk == state.chunk: a retry, from the same start
            raise Conflict(f"chunk {chunk} after chunk {state.chunk}: start again")
        return state


def _partial_model(rel: str, size: int) -> dict:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"name": rel.rsplit("/", 1)[-1], "path": rel, "type": "file", "format": None,
            "content": None, "size": size, "writable": True, "mimetype": None,
            "created": stamp, "last_modified": stamp}


async def _retrying(call, what: str):
    """`call()` again while the provider is unreachable, for UPLOAD_RETRY_SECONDS."""
    deadline = time.monotonic() + UPLOAD_RETRY_SECONDS
    delay = 0.25
    while True:
        try:
            return await call()
        except ProviderAPIError as exc:
            if exc.status != 0 or time.monotonic() + delay > deadline:
                raise ProviderAPIError(exc.status, f"{what}: {exc.message}") from exc
        await asyncio.sleep(delay)  # backing off a cut network, bounded by the deadline
        delay = min(delay * 2, 4.0)


async def put_bytes(gw: Gateway, rel: str, offset: int, data: bytes) -> None:
    """Write `data` at `offset` of the gateway's partial upload of `rel`; a retry rewrites
    from the same offset (the gateway truncates there first), never appends twice."""
    route = f"walnut/fs/upload/{quote(rel)}?offset={offset}"

    async def once() -> None:
        _, answer = await exchange(gw, "PUT", route, data, "application/octet-stream",
                                   limit=64 * 1024)
        value = _json(answer)
        received = value.get("received") if isinstance(value, dict) else None
        if received != offset + len(data):
            raise ProviderAPIError(502, f"the session stored {received!r} bytes of the "
                                        f"upload, not {offset + len(data)}")

    await _retrying(once, "upload")


async def commit(gw: Gateway, rel: str, size: int, sha256: str) -> dict:
    """Move the partial upload to `rel` once the gateway checked its size and hash; a
    commit whose answer was cut is confirmed by the file's stat instead."""
    body = json.dumps({"size": size, "sha256": sha256}).encode()
    tried = False

    async def once() -> None:
        nonlocal tried
        again, tried = tried, True
        try:
            await exchange(gw, "POST", f"walnut/fs/commit/{quote(rel)}", body, limit=64 * 1024)
        except ProviderAPIError as exc:
            if not again or exc.status == 0:
                raise
            _, answer = await exchange(gw, "GET", f"walnut/fs/stat/{quote(rel)}",
                                       limit=64 * 1024)
            stat = _json(answer)
            if not (isinstance(stat, dict) and stat.get("size") == size
                    and stat.get("sha256") == sha256):
                raise

    await _retrying(once, "upload commit")
    _, answer = await exchange(gw, "GET", f"api/contents/{quote(rel)}?content=0")
    return clean_model(_json(answer))


class FilesHandler(DriveHandler):
    """A workspace file as a download: attachment, octet-stream, nosniff, sandboxed."""

    @property
    def content_security_policy(self) -> str:
        return "sandbox; default-src 'none'; frame-ancestors 'none'"

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("X-Content-Type-Options", "nosniff")

    @web.authenticated
    async def get(self, session_id: str, path: str) -> None:
        rel = check_request_path(path)
        if not rel:
            raise BadRequest("name a file to download")
        gw = self.session_gateway(session_id)
        name = rel.rsplit("/", 1)[-1]
        ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "download"
        self.set_header("Content-Disposition",
                        f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}")
        self.set_header("Content-Type", "application/octet-stream")
        await self._stream(gw, rel)
        self.finish(set_content_type="application/octet-stream")

    async def _stream(self, gw: Gateway, rel: str) -> None:
        status: list[int] = []
        errors = responses.BodyLimit(64 * 1024)

        def header(line: str) -> None:
            if line.startswith("HTTP/"):
                status[:] = [int(line.split()[1])]
            elif status and status[0] < 300 and ":" in line:
                key, value = (p.strip() for p in line.split(":", 1))
                if key.lower() == "x-walnut-sha256" and _SHA.fullmatch(value):
                    self.set_header("X-Walnut-Sha256", value)
                elif key.lower() == "content-length" and value.isdigit():
                    self.set_header("Content-Length", value)

        def body(chunk: bytes) -> None:
            if status and status[0] < 300:
                self.write(chunk)
                self.flush()
            else:
                errors.feed(chunk)

        request = httpclient.HTTPRequest(
            f"{gw.base_url}/walnut/fs/download/{quote(rel)}", headers=gw.headers,
            request_timeout=3600, connect_timeout=10, follow_redirects=False,
            header_callback=header, streaming_callback=body,
            ssl_options=await gw._ssl_options())
        client = httpclient.AsyncHTTPClient(force_instance=True, max_body_size=1 << 62)
        try:
            resp = await client.fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError, responses.InvalidResponse) as exc:
            raise ProviderAPIError(0, f"session gateway unreachable: {exc}") from exc
        finally:
            client.close()
        if resp.code == 599:
            raise ProviderAPIError(0, f"session gateway unreachable: {resp.error}")
        if resp.code >= 300:
            self.clear_header("Content-Disposition")
            self.clear_header("Content-Length")
            raise ProviderAPIError(resp.code, _message(errors.body, resp.reason or "error"))


def drive_handlers(sid: str) -> list[tuple[str, type]]:
    return [(rf"/walnut/sessions/{sid}/api/contents(?:/(.*))?", ContentsHandler),
            (rf"/walnut/sessions/{sid}/files/(.+)", FilesHandler)]
