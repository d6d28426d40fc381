"""Files in and out of a session's workspace (issue #16), over the provider's pinned proxy.

`WorkspaceClient` speaks the gateway's `walnut/fs/` API (docs/pages/workspace.md): pushes go
in chunks to a partial upload and are committed against their size and sha256; after a
network error the push asks how much arrived (`received`) and goes on from there, for up to
`retry_s` seconds without progress. Pulls stream into a temporary name, resume with a Range
request, and are renamed into place only once the file's sha256 matches what the gateway
stated. Every name the provider sends is checked (paths.py) before it touches the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...common.gateway import ProviderAPIError
from ..provider_client import ProviderClient
from . import http_pool, sync
from .paths import PathRefused, clean_remote, join_remote, local_target, relative_to, url_path
from .sync import TransferError, human_bytes

CHUNK = 64 * 2**20  # one PUT: a resume point every 64 MiB even if a cut loses the partial
PIECE = 1 << 20  # what is read, written and hashed at a time
SEND_WHOLE = 1 << 20  # files up to this size start at 0 without asking what arrived
RETRY_S = 60.0  # how long a transfer keeps trying without progress
MAX_TRANSFER_BYTES = 10 * 2**30  # the most one push or pull moves (the file browser's too)
MAX_MANIFEST_FILES = 200_000
MAX_JSON = 96 * 2**20  # a manifest of 200,000 files with long names
TRANSIENT = (0, 503, 504)  # unreachable, or the provider's proxy could not reach the gateway
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Progress:
    done: int  # bytes of this transfer so far (skipped files not counted)
    total: int  # bytes this transfer sends or receives
    file: int  # 1-based index of the file under way
    files: int  # files this transfer sends or receives
    path: str  # the file under way (workspace path)


ProgressCallback = Callable[[Progress], None]


@dataclass
class TransferResult:
    direction: str  # "push" or "pull"
    remote: str
    local: str
    files: int = 0  # files moved
    bytes: int = 0  # their bytes
    skipped: int = 0  # unchanged files not moved
    seconds: float = 0.0
    wire_bytes: int = 0  # bytes put on the wire or received, resends included
    resumed_at: list[int] = field(default_factory=list)  # offsets resumed from after errors

    def summary(self) -> str:
        verb = "pushed" if self.direction == "push" else "pulled"
        where = (f"{self.local} -> workspace:{self.remote or '/'}" if self.direction == "push"
                 else f"workspace:{self.remote or '/'} -> {self.local}")
        line = (f"{verb} {self.files} file{'s' if self.files != 1 else ''} "
                f"({human_bytes(self.bytes)}) {where} in {self.seconds:.1f} s")
        if self.skipped:
            line += f", skipped {self.skipped} unchanged"
        if self.resumed_at:
            line += f", resumed {len(self.resumed_at)}x after network errors"
        return line

    def public(self) -> dict:
        return {"direction": self.direction, "remote": self.remote, "local": self.local,
                "files": self.files, "bytes": self.bytes, "skipped": self.skipped,
                "seconds": round(self.seconds, 3), "resumed": len(self.resumed_at),
                "summary": self.summary()}


class _Retry:
    """Backing off while the provider is unreachable, for at most `window` seconds without
    progress; progress (`reset`) starts the window again."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.reset()

    def reset(self) -> None:
        self.since: float | None = None
        self.delay = 0.1

    async def wait(self, exc: ProviderAPIError) -> None:
        now = time.monotonic()
        self.since = now if self.since is None else self.since
        if now - self.since > self.window:
            raise TransferError(0, f"gave up after {self.window:.0f} s without progress: "
                                   f"{exc.message}") from exc
        await asyncio.sleep(self.delay)  # an unreachable peer: bounded by the window
        self.delay = min(self.delay * 2, 2.0)


@dataclass
class _Tally:
    """Progress across the files of one transfer."""

    total: int
    files: int
    callback: ProgressCallback | None
    done_before: int = 0  # bytes of the files finished
    index: int = 0
    path: str = ""

    def start(self, path: str) -> None:
        self.index += 1
        self.path = path

    def at(self, offset: int) -> None:
        if self.callback is not None:
            self.callback(Progress(self.done_before + offset, self.total, self.index,
                                   self.files, self.path))

    def finish(self, size: int) -> None:
        self.done_before += size
        self.at(0)


class WorkspaceClient:
    """A session's workspace, through `provider`'s pinned TLS and proxy, with the session's
    token. Paths are workspace-relative ('' is its root)."""

    def __init__(self, provider: ProviderClient, session_id: str, access_token: str, *,
                 chunk_size: int = CHUNK, retry_s: float = RETRY_S,
                 max_bytes: int = MAX_TRANSFER_BYTES, timeout: float = 300.0) -> None:
        self.gateway = provider.session_gateway(session_id, access_token)
        self.session_id = session_id
        self.chunk_size = chunk_size
        self.retry_s = retry_s
        self.max_bytes = max_bytes
        self.timeout = timeout

    # --- the JSON calls ---------------------------------------------------------------

    async def _json(self, method: str, route: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        return await self._raw(method, route, {"Content-Type": "application/json"},
                               limit=MAX_JSON, body=data if method in ("POST", "PUT") else None)

    async def _retrying(self, retry: _Retry, method: str, route: str, body: Any = None) -> Any:
        while True:
            try:
                return await self._json(method, route, body)
            except ProviderAPIError as exc:
                if exc.status not in TRANSIENT:
                    raise
                await retry.wait(exc)

    async def stat(self, path: str) -> dict | None:
        """The workspace entry at `path`, or None when there is none."""
        path = clean_remote(path, allow_root=True)
        try:
            answer = await self._retrying(_Retry(self.retry_s), "GET",
                                          f"walnut/fs/stat/{url_path(path)}")
        except ProviderAPIError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(answer, dict) or answer.get("type") not in ("file", "directory"):
            raise TransferError(502, f"the gateway's stat of {path!r} is not one")
        if answer["type"] == "file":
            _check_entry(answer, path)
        return answer

    async def manifest(self, directory: str) -> list[dict]:
        """Every file under `directory`: [{"path","size","sha256"}], each checked; paths
        are workspace paths inside `directory` (anything else is refused)."""
        directory = clean_remote(directory, allow_root=True)
        try:
            answer = await self._retrying(_Retry(self.retry_s), "GET",
                                          f"walnut/fs/manifest/{url_path(directory)}")
        except ProviderAPIError as exc:
            if exc.status == 404:
                return []
            raise
        files = answer.get("files") if isinstance(answer, dict) else None
        if not isinstance(files, list) or len(files) > MAX_MANIFEST_FILES:
            raise TransferError(502, "the gateway's manifest is not a list of files")
        if answer.get("truncated") is True:
            raise TransferError(413, f"workspace:{directory or '/'} holds more than "
                                     f"{MAX_MANIFEST_FILES:,} files; pull a subfolder")
        seen: set[str] = set()
        for entry in files:
            if not isinstance(entry, dict):
                raise TransferError(502, "the gateway's manifest is not a list of files")
            relative_to(directory, entry.get("path"))  # or PathRefused
            _check_entry(entry, entry["path"])
            if entry["path"] in seen:
                raise TransferError(502, f"the gateway's manifest names {entry['path']!r} "
                                         "twice")
            seen.add(entry["path"])
        return files

    # --- push -------------------------------------------------------------------------

    async def push(self, local: str | Path, dest: str = "",
                   progress: ProgressCallback | None = None,
                   extra_ignore: list[str] | None = None) -> TransferResult:
        """Send a file or a folder. A file goes to `dest` (a folder's path ending in '/',
        or an existing folder, gets the file's name inside); a folder's files go into
        `dest` (default: a folder of its own name), minus .gitignore/.walnutignore."""
        t0 = time.monotonic()
        source = Path(local).expanduser()
        if source.is_symlink() or not (source.is_file() or source.is_dir()):
            raise TransferError(400, f"{local}: no such file or folder (symlinks are not "
                                     "sent)")
        if source.is_dir():
            dest = clean_remote(dest if dest else source.resolve().name, allow_root=True)
            return await self.push_folder(sync.scan(source, extra_ignore), dest, progress)
        dest = await self._file_dest(dest, source.name)
        plan = sync.Plan(root=source.parent,
                         files=[sync.LocalFile(source.name, source, source.stat().st_size)])
        plan.check_cap(self.max_bytes)  # before anything is sent
        existing = await self.stat(dest)
        if existing is not None and existing["type"] == "directory":
            raise TransferError(409, f"workspace:{dest} is a folder")
        sending = await _changed(plan, {plan.files[0].rel: existing})
        return await self._send(plan, sending, {source.name: dest},
                                TransferResult("push", dest, str(source)), progress, t0)

    async def push_folder(self, plan: sync.Plan, dest: str = "",
                          progress: ProgressCallback | None = None) -> TransferResult:
        """A scanned folder (sync.scan) into `dest`: its size checked against the limit
        before anything is sent, then only the files the workspace lacks or holds other
        bytes of (by sha256 against the gateway's manifest)."""
        t0 = time.monotonic()
        dest = clean_remote(dest, allow_root=True)
        plan.check_cap(self.max_bytes)  # before anything is sent
        remote = {e["path"]: e for e in await self.manifest(dest)}
        sending = await _changed(plan, {f.rel: remote.get(join_remote(dest, f.rel))
                                        for f in plan.files})
        return await self._send(plan, sending,
                                {f.rel: join_remote(dest, f.rel) for f in sending},
                                TransferResult("push", dest, str(plan.root)), progress, t0)

    async def _send(self, plan: sync.Plan, sending: list[sync.LocalFile],
                    targets: dict[str, str], result: TransferResult,
                    progress: ProgressCallback | None, t0: float) -> TransferResult:
        result.skipped = len(plan.files) - len(sending)
        tally = _Tally(sum(f.size for f in sending), len(sending), progress)
        for f in sending:
            tally.start(targets[f.rel])
            await self._upload(f, targets[f.rel], tally, result)
            tally.finish(f.size)
            result.files += 1
            result.bytes += f.size
        result.seconds = time.monotonic() - t0
        return result

    async def _file_dest(self, dest: str, name: str) -> str:
        if not dest or dest.endswith("/"):
            return clean_remote(join_remote(dest.strip("/"), name))
        dest = clean_remote(dest)
        found = await self.stat(dest)
        if found is not None and found["type"] == "directory":
            return join_remote(dest, name)
        return dest

    async def _upload(self, f: sync.LocalFile, remote: str, tally: _Tally,
                      result: TransferResult) -> None:
        """One file: PUT chunks from what the gateway has received, then commit."""
        route = url_path(remote)
        # a file the workspace has no copy of its size is hashed while it is sent
        digest = None if f.sha256 else asyncio.ensure_future(
            asyncio.to_thread(sync.file_sha256, f.path))
        try:
            await self._upload_from(f, remote, route, tally, result, digest)
        finally:
            if digest is not None and not digest.done():
                digest.cancel()

    async def _upload_from(self, f: sync.LocalFile, remote: str, route: str, tally: _Tally,
                           result: TransferResult, digest: asyncio.Future | None) -> None:
        retry = _Retry(self.retry_s)
        # a small file is sent whole: resending a partial of it costs less than asking
        # what arrived (one round trip of three, most of a many-file sync)
        offset = 0 if f.size <= SEND_WHOLE else await self._received(retry, route)
        if offset > f.size:
            offset = 0  # someone else's partial: the PUT at 0 truncates it
        elif offset:
            result.resumed_at.append(offset)
        restarted = False
        while True:
            first = True
            while offset < f.size or first:
                first = False
                n = min(self.chunk_size, f.size - offset)
                try:
                    received = await self._put(f, route, offset, n, tally, result)
                except ProviderAPIError as exc:
                    # 409: the gateway has not yet seen the cut PUT end, or has fewer
                    # bytes than we thought: ask again what it has
                    if exc.status not in (*TRANSIENT, 409):
                        raise
                    await retry.wait(exc)
                    offset = min(await self._received(retry, route), f.size)
                    result.resumed_at.append(offset)
                    continue
                if received != offset + n:
                    raise TransferError(502, f"the gateway says it has {received} bytes of "
                                             f"{remote} after {offset + n} were sent")
                offset = received
                retry.reset()
            if digest is not None:
                f.sha256 = await digest
                if f.path.stat().st_size != f.size:
                    raise TransferError(409, f"{f.path} changed while being sent")
            try:
                done = await self._retrying(retry, "POST", f"walnut/fs/commit/{route}",
                                            {"size": f.size, "sha256": f.sha256})
            except ProviderAPIError as exc:
                if exc.status == 404 and retry.since is not None:
                    # a commit that went through before the answer was cut: see it there
                    found = await self.stat(remote)
                    if found is not None and _same(found, f):
                        return
                # 409: what arrived differs (an old partial of other bytes, or bytes changed
                # on the way); the gateway deleted it, so one fresh start from 0
                if exc.status != 409 or restarted:
                    raise TransferError(exc.status or 502,
                                        f"workspace:{remote}: {exc.message}") from exc
                restarted, offset = True, 0
                continue
            if not isinstance(done, dict) or done.get("sha256") != f.sha256 \
                    or done.get("size") != f.size:
                raise TransferError(502, f"workspace:{remote}: the gateway's commit does not "
                                         "match the file sent")
            return

    async def _received(self, retry: _Retry, route: str) -> int:
        answer = await self._retrying(retry, "GET", f"walnut/fs/upload/{route}")
        received = answer.get("received") if isinstance(answer, dict) else None
        if isinstance(received, bool) or not isinstance(received, int) or received < 0:
            raise TransferError(502, "the gateway's upload state is not a byte count")
        return received

    async def _put(self, f: sync.LocalFile, route: str, offset: int, n: int, tally: _Tally,
                   result: TransferResult) -> int:
        """PUT bytes [offset, offset+n) of `f`, streamed; the gateway's `received`."""

        async def pieces() -> AsyncIterator[bytes]:
            with open(f.path, "rb") as fh:  # page-cache reads of 1 MiB
                fh.seek(offset)
                sent = 0
                while sent < n:
                    piece = fh.read(min(PIECE, n - sent))
                    if not piece:
                        raise TransferError(409, f"{f.path} changed while being sent")
                    yield piece
                    sent += len(piece)
                    result.wire_bytes += len(piece)
                    tally.at(offset + sent)

        answer = await self._raw("PUT", f"walnut/fs/upload/{route}?offset={offset}",
                                 {"Content-Type": "application/octet-stream",
                                  "Content-Length": str(n)}, body=pieces())
        received = answer.get("received") if isinstance(answer, dict) else None
        if isinstance(received, bool) or not isinstance(received, int):
            raise TransferError(502, "the gateway's upload answer is not a byte count")
        return received

    async def _raw(self, method: str, route: str, headers: dict[str, str], *,
                   limit: int = 1 << 16, body: bytes | AsyncIterator[bytes] | None = None
                   ) -> Any:
        """One streamed exchange with the gateway; its JSON answer, at most `limit` bytes
        (or the error)."""
        capped = _Capped(limit)
        resp = await http_pool.exchange(
            method, f"{self.gateway.base_url}/{route}", {**self.gateway.headers, **headers},
            context=await self.gateway._ssl_options(), timeout=self.timeout, body=body,
            on_chunk=capped.feed)
        return _answer(resp, capped.body)

    # --- pull -------------------------------------------------------------------------

    async def pull(self, remote: str, local: str | Path = "",
                   progress: ProgressCallback | None = None) -> TransferResult:
        """Bring a file or folder home. A file lands at `local` (an existing folder gets
        the file's name inside; default: here); a folder's files land below `local`
        (default: a folder of the remote folder's name, here)."""
        t0 = time.monotonic()
        remote = clean_remote(remote, allow_root=True)
        found = await self.stat(remote)
        if found is None:
            raise TransferError(404, f"workspace:{remote or '/'}: no such file or folder")
        name = remote.rsplit("/", 1)[-1]
        if found["type"] == "directory":
            if not local and not remote:
                raise TransferError(400, "give a DEST folder to pull the whole workspace")
            root = Path(local or name).expanduser()
            entries = await self.manifest(remote)
            wanted = [(relative_to(remote, e["path"]), e) for e in entries]
        else:
            target = Path(local or ".").expanduser()
            if target.is_dir() and not target.is_symlink():
                root, rel = target, name
            else:
                root, rel = target.parent, target.name
            found = {**found, "path": remote}
            wanted = [(clean_remote(rel), found)]
        total = sum(e["size"] for _, e in wanted)
        if total > self.max_bytes:
            raise TransferError(413, f"workspace:{remote or '/'} is {human_bytes(total)}, over "
                                     f"the {human_bytes(self.max_bytes)} transfer limit")
        root.mkdir(parents=True, exist_ok=True)
        root = root.resolve()
        result = TransferResult("pull", remote, str(root if found["type"] == "directory"
                                                    else root / wanted[0][0]))
        todo = []
        for rel, entry in wanted:
            target = local_target(root, rel)  # or PathRefused: nothing written for it
            if target.exists() and target.stat().st_size == entry["size"] and \
                    await asyncio.to_thread(sync.file_sha256, target) == entry["sha256"]:
                result.skipped += 1
                continue
            todo.append((target, entry))
        tally = _Tally(sum(e["size"] for _, e in todo), len(todo), progress)
        for target, entry in todo:
            tally.start(entry["path"])
            await self._download(entry, target, tally, result)
            tally.finish(entry["size"])
            result.files += 1
            result.bytes += entry["size"]
        result.seconds = time.monotonic() - t0
        return result

    async def _download(self, entry: dict, target: Path, tally: _Tally,
                        result: TransferResult) -> None:
        """One file into a temporary name beside `target`, renamed once its bytes hash to
        what the manifest and the download both state."""
        tmp = target.with_name(f".{target.name[:200]}.walnut-{secrets.token_hex(4)}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        sink = _Sink(fd, entry, tally, result)
        retry = _Retry(self.retry_s)
        try:
            while True:
                try:
                    await self._get(entry, sink)
                except ProviderAPIError as exc:
                    if exc.status not in TRANSIENT:
                        raise TransferError(exc.status or 502,
                                            f"workspace:{entry['path']}: {exc.message}") \
                            from exc
                    await retry.wait(exc)
                    result.resumed_at.append(sink.have)
                    continue
                if sink.have < entry["size"]:  # the answer ended early: go on from there
                    retry.reset()
                    continue
                break
            if sink.hasher.hexdigest() != entry["sha256"]:
                raise TransferError(502, f"workspace:{entry['path']}: the bytes received do "
                                         "not match its sha256; nothing was written")
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, target)
        finally:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)

    async def _get(self, entry: dict, sink: _Sink) -> None:
        headers = {"Range": f"bytes={sink.have}-"} if sink.have else {}
        sink.begin()
        resp = await http_pool.exchange(
            "GET", f"{self.gateway.base_url}/walnut/fs/download/{url_path(entry['path'])}",
            {**self.gateway.headers, **headers}, context=await self.gateway._ssl_options(),
            timeout=self.timeout, on_answer=sink.answer, on_chunk=sink.feed)
        if sink.refused is not None:
            raise sink.refused
        if resp.status >= 300:
            _answer(resp, sink.error_body)  # raises with the gateway's message


class _Sink:
    """Where a download's bytes go: the temporary file and the running hash, checked
    against the response's status, Content-Range, hash header and the stated size."""

    def __init__(self, fd: int, entry: dict, tally: _Tally, result: TransferResult) -> None:
        self.fd, self.entry, self.tally, self.result = fd, entry, tally, result
        self.have = 0
        self.hasher = hashlib.sha256()
        self.refused: TransferError | None = None

    def begin(self) -> None:
        self.code = 0
        self.headers: dict[str, str] = {}
        self.error_body = b""
        self.writing = False

    def answer(self, answer: http_pool.Answer) -> None:
        self.code, self.headers = answer.status, answer.headers
        if self.code not in (200, 206):
            return
        path = self.entry["path"]
        stated = self.headers.get("x-walnut-sha256", "").lower()
        if stated != self.entry["sha256"]:
            self.refused = TransferError(502, f"workspace:{path}: the gateway's download "
                                              "hash differs from its manifest; refused")
            return
        if self.code == 200 and self.have:  # Range ignored: start over
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
            self.have, self.hasher = 0, hashlib.sha256()
        if self.code == 206 and not self.headers.get("content-range", "").startswith(
                f"bytes {self.have}-"):
            self.refused = TransferError(502, f"workspace:{path}: the gateway resumed at "
                                              "another offset; refused")
            return
        self.writing = True

    def feed(self, chunk: bytes) -> None:
        if self.refused is not None:
            raise self.refused  # ends the read
        if not self.writing:
            self.error_body = (self.error_body + chunk)[:1 << 16]
            return
        if self.have + len(chunk) > self.entry["size"]:
            self.refused = TransferError(502, f"workspace:{self.entry['path']}: the gateway "
                                              "sent more bytes than the file has; refused")
            raise self.refused
        os.write(self.fd, chunk)
        self.hasher.update(chunk)
        self.have += len(chunk)
        self.result.wire_bytes += len(chunk)
        self.tally.at(self.have)


class _Capped:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:  # raised through http_pool.exchange: ends the read
            raise TransferError(502, f"the gateway's answer is over {self.limit} bytes; "
                                     "refused")
        self.parts.append(chunk)


def _answer(resp: http_pool.Answer, body: bytes) -> Any:
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if resp.status >= 300:
        message = None
        if isinstance(data, dict):
            message = data.get("message")
            if message is None and isinstance(data.get("error"), dict):
                message = data["error"].get("message")
        text = str(message or resp.reason or "gateway error")[:500]
        raise ProviderAPIError(resp.status, " ".join(text.split()))
    if data is None:
        raise TransferError(502, "the gateway's answer is not JSON")
    return data


def _check_entry(entry: dict, path: str) -> None:
    size, digest = entry.get("size"), entry.get("sha256")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0 or size > 2**50:
        raise TransferError(502, f"the gateway states no valid size for {path!r}")
    if not isinstance(digest, str) or not HEX64.match(digest):
        raise TransferError(502, f"the gateway states no valid sha256 for {path!r}")


async def _changed(plan: sync.Plan, remote: dict[str, dict | None]) -> list[sync.LocalFile]:
    """The files of `plan` the workspace lacks or holds other bytes of; only those whose
    remote copy has their size are hashed first (the others while they are sent)."""
    same_size = [f for f in plan.files
                 if (remote.get(f.rel) or {}).get("size") == f.size]
    await asyncio.to_thread(sync.hash_files, same_size)
    return [f for f in plan.files if not _same(remote.get(f.rel), f)]


def _same(remote: dict | None, f: sync.LocalFile) -> bool:
    return remote is not None and remote.get("size") == f.size and \
        remote.get("sha256") == f.sha256


__all__ = ["MAX_TRANSFER_BYTES", "PathRefused", "Progress", "TransferError",
           "TransferResult", "WorkspaceClient"]
