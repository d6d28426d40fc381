"""The session workspace's file API (`walnut/fs/...`) and the Contents API, mounted in app.py.

    GET    walnut/fs/stat/<path>              {"path","type","size","mtime","sha256"(files)}
    GET    walnut/fs/manifest/<dir>?since=T   {"files": [{"path","size","mtime","sha256"}],
                                               "truncated": bool}
    GET    walnut/fs/upload/<path>            {"received": N} of the partial upload
    PUT    walnut/fs/upload/<path>?offset=N   raw body, streamed, appended at N
    POST   walnut/fs/commit/<path>            {"size","sha256"}: checked, then moved to <path>
    GET    walnut/fs/download/<path>          raw bytes, `Range: bytes=N-` (206), X-Walnut-Sha256
    POST   walnut/fs/mkdir/<path>
    DELETE walnut/fs/file/<path>              a file or a folder

Partial uploads live in `<workspace>/.walnut-uploads/<sha256 of the path>`, opened relative
to that folder's descriptor without following symlinks, so nothing half-written is ever at
<path> and a symlink the kernel plants there cannot redirect a write.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import threading
from collections import OrderedDict
from typing import Any

from tornado import web

from . import contents
from .workspace import GATEWAY_OWN, UPLOADS_DIR, check_segments, rel, resolve, workspace_root

MAX_UPLOAD_BYTES = 1 << 40  # one PUT; the provider's proxy caps a request far lower
MAX_MANIFEST = 200_000
CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
MAX_RUNNING_HASHES = 256  # partial uploads whose hash so far is kept in memory


class HashCache:
    """sha256 of files by (device, inode, size, mtime_ns): a second manifest reads nothing."""

    def __init__(self, limit: int = 4 * MAX_MANIFEST) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[int, int, int, int], str] = OrderedDict()
        self.limit = limit

    @staticmethod
    def key(st: os.stat_result) -> tuple[int, int, int, int]:
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def get(self, st: os.stat_result) -> str | None:
        with self._lock:
            return self._items.get(self.key(st))

    def put(self, st: os.stat_result, digest: str) -> None:
        with self._lock:
            self._items[self.key(st)] = digest
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def of_fd(self, fd: int) -> str:
        st = os.fstat(fd)
        cached = self.get(st)
        if cached is not None:
            return cached
        digest = sha256_fd(fd)
        self.put(st, digest)
        return digest

    def of_path(self, os_path: str) -> str:
        fd = os.open(os_path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            return self.of_fd(fd)
        finally:
            os.close(fd)


def sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


def _in_thread(fn, *args):
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


class FsHandler(web.RequestHandler):
    """Token-checked JSON handler; errors are {"reason", "message"} like the gateway's."""

    SUPPORTED_METHODS = ("GET", "PUT", "POST", "DELETE")

    @property
    def root(self) -> str:
        return self.settings["walnut_workspace"]

    @property
    def hashes(self) -> HashCache:
        return self.settings["walnut_hashes"]

    def prepare(self) -> None:
        expected = self.settings.get("kg_auth_token") or ""
        scheme, _, given = self.request.headers.get("Authorization", "").partition(" ")
        if not expected or scheme.lower() != "token" or \
                not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise web.HTTPError(401, "missing or wrong token")

    def resolve(self, path: str, allow_root: bool = False) -> str:
        parts = check_segments(path)
        if parts and parts[0] in GATEWAY_OWN:
            raise web.HTTPError(400, "%s", f"path {path!r} refused: {parts[0]} is the "
                                "gateway's own")
        return resolve(self.root, path, allow_root=allow_root)

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args
        body = {"reason": self._reason, "message": message}
        body.update(getattr(exc, "extra", {}))
        for name, value in getattr(exc, "headers", {}).items():
            self.set_header(name, value)  # send_error cleared those set before
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def stat_model(self, os_path: str) -> dict[str, Any]:
        st = os.stat(os_path)
        model: dict[str, Any] = {"path": rel(self.root, os_path), "mtime": st.st_mtime}
        if stat.S_ISDIR(st.st_mode):
            model.update(type="directory", size=0)
        elif stat.S_ISREG(st.st_mode):
            model.update(type="file", size=st.st_size)
        else:
            raise web.HTTPError(400, "%s", f"{model['path']!r} is not a regular file")
        return model


class Conflict(web.HTTPError):
    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(409, "%s", message)
        self.extra = extra


def _missing(path: str) -> web.HTTPError:
    return web.HTTPError(404, "%s", f"no such file or folder: {path!r}")


class StatHandler(FsHandler):
    async def get(self, path: str) -> None:
        os_path = self.resolve(path, allow_root=True)
        if not os.path.exists(os_path):
            raise _missing(path)
        model = self.stat_model(os_path)
        if model["type"] == "file":
            # a symlink inside the workspace is hashed as what it points at (checked above)
            model["sha256"] = await _in_thread(self.hashes.of_path, os.path.realpath(os_path))
        self.write_json(model)


class ManifestHandler(FsHandler):
    async def get(self, path: str) -> None:
        since_arg = self.get_query_argument("since", None)
        try:
            since = float(since_arg) if since_arg is not None else None
        except ValueError:
            raise web.HTTPError(400, "since must be a number (seconds since the epoch)") \
                from None
        os_path = self.resolve(path, allow_root=True)
        if not os.path.isdir(os_path):
            raise _missing(path) if not os.path.exists(os_path) else \
                web.HTTPError(400, "%s", f"{path!r} is not a folder")
        files, truncated = await _in_thread(self._walk, os.path.realpath(os_path), since)
        self.write_json({"files": files, "truncated": truncated})

    def _walk(self, top: str, since: float | None) -> tuple[list[dict], bool]:
        out: list[dict] = []
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue  # vanished or unreadable: not part of the workspace's files
            for entry in entries:
                if folder == self.root and entry.name in GATEWAY_OWN:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue  # symlinks, sockets, fifos
                if len(out) >= MAX_MANIFEST:
                    return sorted(out, key=lambda f: f["path"]), True
                try:
                    st = entry.stat(follow_symlinks=False)
                    if since is not None and st.st_mtime <= since:
                        continue
                    digest = self.hashes.of_path(entry.path)
                except OSError:
                    continue
                out.append({"path": rel(self.root, entry.path), "size": st.st_size,
                            "mtime": st.st_mtime, "sha256": digest})
        return sorted(out, key=lambda f: f["path"]), False


class Uploads:
    """The folder of partial uploads and which of them a request is writing now."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.busy: set[str] = set()  # being committed
        self.writers: dict[str, UploadHandler] = {}  # being written, by partial's name
        # the sha256 of each partial's bytes so far, taken as they arrived, so a commit
        # need not read the file again: (hasher, the partial's HashCache.key)
        self.running: OrderedDict[str, tuple[Any, tuple[int, int, int, int]]] = OrderedDict()

    def keep_hash(self, name: str, hasher: Any, fd: int) -> None:
        self.running[name] = (hasher, HashCache.key(os.fstat(fd)))
        self.running.move_to_end(name)
        while len(self.running) > MAX_RUNNING_HASHES:
            self.running.popitem(last=False)

    def take_hash(self, name: str, st: os.stat_result) -> Any | None:
        """The running hash of partial `name`, forgotten here, if it is of exactly the
        bytes there now (same device, inode, size and mtime as when the last PUT ended)."""
        kept = self.running.pop(name, None)
        if kept is None or kept[1] != HashCache.key(st):
            return None
        return kept[0]

    @staticmethod
    def name(path: str) -> str:
        return hashlib.sha256(path.encode()).hexdigest()

    def dir_fd(self) -> int:
        folder = os.path.join(self.root, UPLOADS_DIR)
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        try:
            return os.open(folder, _OPEN_DIR)
        except OSError as exc:  # a symlink or a file planted in its place
            raise web.HTTPError(409, "%s", f"{UPLOADS_DIR} in the workspace is not the "
                                f"gateway's folder ({exc.strerror}); delete it") from None

    def received(self, name: str) -> int:
        fd = self.dir_fd()
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False).st_size
        except FileNotFoundError:
            return 0
        finally:
            os.close(fd)

    def open_partial(self, name: str, flags: int) -> int:
        fd = self.dir_fd()
        try:
            return os.open(name, flags | os.O_NOFOLLOW, 0o600, dir_fd=fd)
        finally:
            os.close(fd)

    def discard(self, name: str) -> None:
        self.running.pop(name, None)
        fd = self.dir_fd()
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)


@web.stream_request_body
class UploadHandler(FsHandler):
    _fd: int | None = None
    _name: str | None = None
    _offset = 0
    _written = 0
    _failure: web.HTTPError | None = None
    _hasher: Any = None  # of the partial's bytes [0, offset + written), when known

    @property
    def uploads(self) -> Uploads:
        return self.settings["walnut_uploads"]

    def prepare(self) -> None:
        super().prepare()
        if self.request.method != "PUT":
            self.resolve(self.path_args[0])
            return
        self.request.connection.set_max_body_size(MAX_UPLOAD_BYTES)
        try:
            self._open(self.path_args[0])
        except web.HTTPError as exc:
            # answered once the body is read: a proxy streaming it gets the answer instead
            # of a closed connection
            self._failure = exc

    def _open(self, path: str) -> None:
        self.resolve(path)
        offset_arg = self.get_query_argument("offset", "0")
        if not offset_arg.isdigit():
            raise web.HTTPError(400, "offset must be a whole number of bytes")
        offset = int(offset_arg)
        name = self.uploads.name(path)
        if name in self.uploads.busy:
            raise Conflict(f"{path!r} is being committed", received=self.uploads.received(name))
        earlier = self.uploads.writers.get(name)
        if earlier is not None:
            # a renter resuming after a cut its old request never saw (a silent network):
            # the new request takes over, the old one stops writing and is closed
            earlier.supersede()
        received = self.uploads.received(name)
        if offset > received:
            raise Conflict(f"offset {offset} is past the {received} bytes received",
                           received=received)
        self._fd = self.uploads.open_partial(name, os.O_WRONLY | os.O_CREAT)
        self._name = name
        self.uploads.writers[name] = self
        # a resume at the end of what arrived goes on hashing; anything else starts over
        kept = self.uploads.take_hash(name, os.fstat(self._fd))  # it changes from here
        self._hasher = hashlib.sha256() if offset == 0 else \
            kept if offset == received else None
        os.ftruncate(self._fd, offset)
        self._offset = offset

    def data_received(self, chunk: bytes) -> None:
        if self._fd is None or self._failure is not None:
            return
        view = memoryview(chunk)
        try:
            while view:
                n = os.pwrite(self._fd, view, self._offset + self._written)
                if self._hasher is not None:
                    self._hasher.update(view[:n])
                self._written += n
                view = view[n:]
        except OSError as exc:
            self._hasher = None
            status = 507 if exc.errno in (28, 122) else 500  # ENOSPC, EDQUOT
            self._failure = web.HTTPError(status, "%s", f"could not write the upload: "
                                          f"{exc.strerror}")

    def get(self, path: str) -> None:
        self.write_json({"received": self.uploads.received(self.uploads.name(path))})

    def put(self, path: str) -> None:
        if self._failure is not None:
            raise self._failure
        self.write_json({"received": self._offset + self._written})

    def _release(self) -> None:
        if self._fd is not None:
            if self._hasher is not None and self._name is not None \
                    and self.uploads.writers.get(self._name) is self:
                self.uploads.keep_hash(self._name, self._hasher, self._fd)
            self._hasher = None
            os.close(self._fd)
            self._fd = None
        if self._name is not None:
            if self.uploads.writers.get(self._name) is self:
                del self.uploads.writers[self._name]
            self._name = None

    def supersede(self) -> None:
        self._release()
        self.request.connection.close()

    def on_finish(self) -> None:
        self._release()

    def on_connection_close(self) -> None:
        self._release()  # a cut mid-body keeps what arrived
        super().on_connection_close()


class CommitHandler(FsHandler):
    async def post(self, path: str) -> None:
        target = self.resolve(path)
        try:
            body = json.loads(self.request.body or b"")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON {\"size\", \"sha256\"}") from None
        size = body.get("size") if isinstance(body, dict) else None
        digest = body.get("sha256") if isinstance(body, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise web.HTTPError(400, "size must be a whole number of bytes")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest.lower()):
            raise web.HTTPError(400, "sha256 must be 64 hex digits")
        uploads: Uploads = self.settings["walnut_uploads"]
        name = uploads.name(path)
        if name in uploads.busy or name in uploads.writers:
            raise Conflict(f"an upload to {path!r} is in progress")
        uploads.busy.add(name)
        try:
            await self._commit(uploads, name, path, target, size, digest.lower())
        finally:
            uploads.busy.discard(name)

    async def _commit(self, uploads: Uploads, name: str, path: str, target: str, size: int,
                      digest: str) -> None:
        try:
            fd = uploads.open_partial(name, os.O_RDONLY)
        except FileNotFoundError:
            raise _missing(f"upload of {path}") from None
        try:
            st = os.fstat(fd)
            running = uploads.take_hash(name, st)
            if st.st_size != size:
                actual = None
            elif running is not None:  # hashed as it arrived: nothing to read again
                actual = running.hexdigest()
            else:
                actual = await _in_thread(sha256_fd, fd)
        finally:
            os.close(fd)
        if actual != digest:
            uploads.discard(name)
            what = f"{st.st_size} bytes, not {size}" if actual is None else \
                f"sha256 {actual}, not {digest}"
            raise Conflict(f"the upload of {path!r} does not match: {what}; it was discarded")
        if os.path.isdir(target) and not os.path.islink(target):
            raise Conflict(f"{path!r} is a folder")
        parent = os.path.dirname(target)
        try:
            os.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise Conflict(f"a parent of {path!r} is a file") from None
        self.resolve(path)  # again: the parent folders exist now and must still be inside
        dir_fd = uploads.dir_fd()
        try:
            os.replace(name, target, src_dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        model = self.stat_model(target)
        model["sha256"] = digest
        landed = os.stat(target, follow_symlinks=False)
        if landed.st_ino == st.st_ino and landed.st_size == size:
            # the bytes just hashed: a stat, manifest or download after a push reads
            # nothing again (a pull of what was pushed, a sync's next look)
            self.hashes.put(landed, digest)
        self.write_json(model)


class DownloadHandler(FsHandler):
    async def get(self, path: str) -> None:
        os_path = self.resolve(path)
        try:
            fd = os.open(os_path, os.O_RDONLY)
        except FileNotFoundError:
            raise _missing(path) from None
        except IsADirectoryError:
            raise web.HTTPError(400, "%s", f"{path!r} is a folder") from None
        try:
            await self._send(fd, path)
        finally:
            os.close(fd)

    async def _send(self, fd: int, path: str) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise web.HTTPError(400, "%s", f"{path!r} is not a regular file")
        size = st.st_size
        start, end = 0, size - 1
        wanted = self.request.headers.get("Range")
        if wanted is not None:
            match = _RANGE.fullmatch(wanted.strip())
            start = int(match.group(1)) if match else size
            if match and match.group(2):
                end = min(end, int(match.group(2)))
            if start >= size or end < start:
                error = web.HTTPError(416, "%s", f"range {wanted!r} is not within the "
                                      f"file's {size} bytes")
                error.headers = {"Content-Range": f"bytes */{size}"}
                raise error
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.set_header("X-Walnut-Sha256", await _in_thread(self.hashes.of_fd, fd))
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Content-Length", str(max(0, end - start + 1)))
        self.request.connection.stream.set_nodelay(True)
        offset = start
        while offset <= end:
            chunk = os.pread(fd, min(CHUNK, end - offset + 1), offset)
            if not chunk:
                break  # the file shrank under us: the renter's sha256 check says so
            self.write(chunk)
            await self.flush()
            offset += len(chunk)
        self.finish()


class MkdirHandler(FsHandler):
    def post(self, path: str) -> None:
        os_path = self.resolve(path)
        try:
            os.makedirs(os_path, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise Conflict(f"{path!r} or one of its parents is a file") from None
        self.resolve(path)
        self.write_json(self.stat_model(os_path), status=201)


class DeleteHandler(FsHandler):
    def delete(self, path: str) -> None:
        os_path = self.resolve(path)
        if not os.path.lexists(os_path):
            raise _missing(path)
        if os.path.isdir(os_path) and not os.path.islink(os_path):
            shutil.rmtree(os_path)  # does not follow symlinks inside
        else:
            os.unlink(os_path)
        self.set_status(204)
        self.finish()


def handlers() -> list[tuple[str, type]]:
    fs = [
        (r"/walnut/fs/stat/?(.*)", StatHandler),
        (r"/walnut/fs/manifest/?(.*)", ManifestHandler),
        (r"/walnut/fs/upload/(.*)", UploadHandler),
        (r"/walnut/fs/commit/(.*)", CommitHandler),
        (r"/walnut/fs/download/(.*)", DownloadHandler),
        (r"/walnut/fs/mkdir/(.*)", MkdirHandler),
        (r"/walnut/fs/file/(.*)", DeleteHandler),
    ]
    return fs + contents.handlers()


def settings(parent) -> dict[str, Any]:
    """The web app settings the file handlers read."""
    root = workspace_root()
    manager = contents.WorkspaceContentsManager(parent=parent, root_dir=root, log=parent.log)
    return {"walnut_workspace": root, "walnut_hashes": HashCache(),
            "walnut_uploads": Uploads(root), "contents_manager": manager}
