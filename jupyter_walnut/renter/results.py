"""A session's results come home (issue #16): when a session ends, whoever ended it, the files
its provider saved (created or changed in the workspace) are fetched into
`walnut-results/<session id>/` beside the launch folder (else the Jupyter Server's root),
retried by the refresh loop while the provider keeps them; and `save_now` pulls the changed
files of a running session.

The provider is hostile: its manifest is checked name by name, its archive is read as a
stream and refused whole for any member that is not a regular file the manifest names at
that size with that sha256 (a '../' or absolute name, a link, a device, a second copy, more
bytes); nothing is written outside the session's folder, and nothing lands there before every
file arrived and matched. The session's JSON shows the outcome as `results`:
{state, path, files, bytes, kept_until, reason, left_out}.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import shutil
import tarfile
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..common.archive import FILE_TYPES
from ..common.errors import BadGateway, Conflict
from ..common.protocol import API, gateway_path, token_auth
from ..common.result_paths import HEX64, checked_path, is_session_dir
from ..common.signed_requests import sign_request
from .provider_client import ProviderAPIError, ProviderClient
from .store import ACTIVE, RenterSession

try:  # the workspace client (resumable, hash-checked pulls), where it is installed
    from .workspace import WorkspaceClient
except ImportError:  # without it, the contract's download route directly
    WorkspaceClient = None

if TYPE_CHECKING:
    from .manager import RenterManager

log = logging.getLogger("walnut.renter.results")

STATES = ("saved", "saving", "none", "failed", "expired", "deleted")
FINAL = ("saved", "none", "failed", "expired", "deleted", "refused")  # not fetched again
MAX_FILES = 200_000
RETRY_FOR_S = 48 * 3600  # a provider that keeps answering nothing: given up after this
CHUNK = 1 << 20


class ResultsRefused(BadGateway):
    """The provider's manifest or archive broke a rule; nothing was written."""


# --- the manifest ---------------------------------------------------------------------


def check_manifest(data: Any, max_bytes: int) -> dict:
    """The provider's results manifest, every field checked (or ResultsRefused)."""
    if not isinstance(data, dict) or data.get("state") not in STATES:
        raise ResultsRefused("the provider's results manifest is not one")
    files = data.get("files")
    if not isinstance(files, list) or len(files) > MAX_FILES:
        raise ResultsRefused("the provider's results manifest lists no files")
    seen: set[str] = set()
    total = 0
    for f in files:
        path = checked_path(f.get("path")) if isinstance(f, dict) else None
        if path is None:
            shown = repr(f.get("path") if isinstance(f, dict) else f)[:120]
            raise ResultsRefused(f"the provider's results name {shown}: a path outside the "
                                 "results folder")
        size, digest = f.get("size"), f.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or \
                not isinstance(digest, str) or not HEX64.match(digest):
            raise ResultsRefused(f"the provider's results give {path!r} no size or sha256")
        if path in seen:
            raise ResultsRefused(f"the provider's results name {path!r} twice")
        seen.add(path)
        total += size
    for path in seen:  # a file where another needs a folder: never both
        parts = path.split("/")
        if any("/".join(parts[:i]) in seen for i in range(1, len(parts))):
            raise ResultsRefused(f"the provider's results hold {path!r} inside a file")
    if total > max_bytes:
        raise ResultsRefused(f"the provider's results are {total} bytes, over the "
                             f"{max_bytes} bytes this renter takes")
    kept = data.get("kept_until")
    left = data.get("left_out")
    reason = data.get("reason")
    return {"state": data["state"], "files": [{k: f[k] for k in ("path", "size", "sha256")}
                                              for f in files],
            "bytes": total, "kept_until": kept if isinstance(kept, int | float) and
            not isinstance(kept, bool) else None,
            "reason": reason[:500] if isinstance(reason, str) else "",
            "left_out": [{"path": str(x.get("path"))[:300], "size": x.get("size")
                          if isinstance(x.get("size"), int) else 0,
                          "reason": str(x.get("reason"))[:200]}
                         for x in (left if isinstance(left, list) else [])[:1000]
                         if isinstance(x, dict)]}


# --- the archive ----------------------------------------------------------------------


def extract_checked(archive: Path, files: list[dict], target: Path) -> None:
    """Unpack the provider's `archive` into `target`: all of the manifest's `files` and
    nothing else, or nothing at all (ResultsRefused)."""
    staging = target.parent / f".{target.name}.{secrets.token_hex(4)}.partial"
    staging.mkdir(parents=True, mode=0o700)
    try:
        try:
            staged = _unpack(archive, {f["path"]: f for f in files}, staging)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise ResultsRefused(f"the provider's results are not a readable .tar.gz: "
                                 f"{exc}") from exc
        _merge(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(archive: Path, expected: dict[str, dict], staging: Path) -> list[tuple[str, Path]]:
    staged: dict[str, Path] = {}
    with tarfile.open(archive, mode="r|gz") as tar:  # a stream: one header at a time
        for member in tar:
            name = member.name
            if checked_path(name.rstrip("/") if member.isdir() else name) is None:
                raise ResultsRefused(f"{name[:100]!r}: a path outside the results folder")
            if member.isdir():
                continue  # folders come from the files' paths
            if member.type not in FILE_TYPES:
                kind = "a link" if member.issym() or member.islnk() else \
                    "a device or pipe" if member.isdev() or member.isfifo() else \
                    f"a member of type {member.type!r}"
                raise ResultsRefused(f"{name[:100]!r}: {kind}; results hold only files")
            want = expected.get(name)
            if want is None or is_session_dir(name):
                raise ResultsRefused(f"{name[:100]!r}: not a file the results manifest names")
            if name in staged:
                raise ResultsRefused(f"{name[:100]!r}: a member that appears twice")
            if member.size != want["size"]:
                raise ResultsRefused(f"{name[:100]!r}: {member.size} bytes, but the manifest "
                                     f"says {want['size']}")
            dest = staging / f"{len(staged):07d}"
            _write(tar.extractfile(member), dest, want)
            staged[name] = dest
    missing = sorted(set(expected) - set(staged))
    if missing:
        raise ResultsRefused(f"{missing[0][:100]!r}: in the manifest, not in the archive")
    return list(staged.items())


def _write(src, dest: Path, want: dict) -> None:
    digest, size = hashlib.sha256(), 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        while block := src.read(CHUNK):
            size += len(block)
            if size > want["size"]:
                raise ResultsRefused(f"{want['path'][:100]!r}: more bytes than the manifest "
                                     "says")
            digest.update(block)
            out.write(block)
    if size != want["size"] or digest.hexdigest() != want["sha256"]:
        raise ResultsRefused(f"{want['path'][:100]!r}: its bytes do not match the sha256 "
                             "of the manifest")


def _merge(staged: list[tuple[str, Path]], target: Path) -> None:
    """Move the checked files to their paths under `target`, never through a link."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    for rel, src in staged:
        dest = root.joinpath(*rel.split("/"))
        here = root
        for part in rel.split("/")[:-1]:
            here = here / part
            if here.is_symlink() or (here.exists() and not here.is_dir()):
                raise ResultsRefused(f"{rel[:100]!r}: {here} is not a folder of the results")
            here.mkdir(exist_ok=True)
        if dest.is_symlink() or dest.is_dir():
            raise ResultsRefused(f"{rel[:100]!r}: {dest} is a link or a folder")
        os.replace(src, dest)


# --- the renter's side of it ------------------------------------------------------------


class SessionResults:
    """Fetching, retrying and reporting the results of the manager's sessions."""

    def __init__(self, manager: RenterManager) -> None:
        self.manager = manager
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    # where they land

    def folder(self, s: RenterSession) -> Path:
        """walnut-results/<sid>/ beside the launch folder, else the configured or server
        root folder, else the current one."""
        base = s.extra.get("folder") or self.manager.results_root() or "."
        return Path(base).expanduser() / "walnut-results" / s.id

    def _record(self, session_id: str, **changes: Any) -> dict:
        s = self.manager.get(session_id)
        results = {**(s.extra.get("results") or {}), **changes}
        self.manager.store.update(session_id, extra={**s.extra, "results": results})
        return results

    # the end of a session

    def ended(self, session_id: str) -> None:
        """A session ended: fetch its results now (in the background) and until they came."""
        s = self.manager.get(session_id)
        if not s.access_token or s.extra.get("launch_failed"):
            return  # never ran: nothing to bring home
        if (s.extra.get("results") or {}).get("state") not in FINAL:
            self._record(session_id, state="pending", path=str(self.folder(s)), attempts=0,
                         next_try=0.0, reason="fetching the results from the provider")
        try:
            task = asyncio.get_running_loop().create_task(self.fetch(session_id))
        except RuntimeError:
            return  # no loop (a CLI's stop): the next refresh pass fetches them
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def retry_once(self) -> None:
        """Fetch what is still pending, each at its own back-off."""
        now = time.time()
        for s in self.manager.store.list(statuses=("stopped", "failed")):
            r = s.extra.get("results") or {}
            if r.get("state") in ("pending", "saving") and now >= r.get("next_try", 0):
                await self.fetch(s.id)

    async def fetch(self, session_id: str) -> dict:
        """One try at bringing the ended session's results home; its recorded outcome."""
        if session_id in self._busy:
            return self.manager.get(session_id).extra.get("results") or {}
        self._busy.add(session_id)
        try:
            return await self._fetch(session_id)
        finally:
            self._busy.discard(session_id)

    async def _fetch(self, session_id: str) -> dict:
        s = self.manager.get(session_id)
        r = s.extra.get("results") or {}
        if r.get("state") in FINAL:
            return r
        attempts = int(r.get("attempts", 0)) + 1
        client = self.manager.client(s.provider_url)
        max_bytes = self.manager.results_max_mb << 20
        try:
            manifest = check_manifest(await _signed_json(client, "GET", _path(s.id)),
                                      max_bytes)
            if manifest["state"] == "saving":
                return self._again(s, attempts, "the provider is still saving them")
            if manifest["state"] != "saved":
                return self._record(s.id, state=manifest["state"], files=0, bytes=0,
                                    reason=manifest["reason"],
                                    kept_until=manifest["kept_until"],
                                    left_out=manifest["left_out"], attempts=attempts)
            folder = self.folder(s)
            await self._download(client, s.id, manifest, folder)
        except ResultsRefused as exc:
            log.warning("results of %s refused: %s", s.id, exc.message)
            return self._record(s.id, state="refused", reason=exc.message, attempts=attempts,
                                files=0, bytes=0)
        except ProviderAPIError as exc:
            if exc.status in (0, 502, 503, 504) or exc.status >= 500:
                return self._again(s, attempts, f"the provider did not answer: {exc.message}")
            return self._record(s.id, state="failed", attempts=attempts,
                                reason=f"the provider refused them: {exc.message}")
        log.info("results of %s: %d files in %s", s.id, len(manifest["files"]), folder)
        return self._record(s.id, state="saved", path=str(folder),
                            files=len(manifest["files"]), bytes=manifest["bytes"],
                            kept_until=manifest["kept_until"], reason=manifest["reason"],
                            left_out=manifest["left_out"], attempts=attempts,
                            fetched_at=time.time())

    def _again(self, s: RenterSession, attempts: int, why: str) -> dict:
        """Tried again by the refresh loop (back-off up to 5 min), for RETRY_FOR_S at most
        or until the provider's stated grace period is over."""
        r = s.extra.get("results") or {}
        now = time.time()
        kept = r.get("kept_until")
        if now - (s.ended_at or now) > RETRY_FOR_S or (kept and now > kept):
            return self._record(s.id, state="failed", attempts=attempts,
                                reason=f"not fetched while the provider kept them ({why})")
        return self._record(s.id, state="pending", attempts=attempts, reason=why,
                            next_try=now + min(300.0, 2.0 * 2 ** min(attempts, 8)))

    async def _download(self, client: ProviderClient, session_id: str, manifest: dict,
                        folder: Path) -> None:
        files = manifest["files"]
        # a .tar.gz of these files: their bytes, 1.5 KiB of header and padding each, and
        # gzip's few bytes per 32 KiB of what does not compress
        limit = manifest["bytes"] + manifest["bytes"] // 256 + 1536 * (len(files) + 4) + \
            (1 << 20)
        folder.parent.mkdir(parents=True, exist_ok=True)
        part = folder.parent / f".{folder.name}.{secrets.token_hex(4)}.tar.gz.part"
        try:
            with open(part, "xb") as sink:
                headers = sign_request(client.key, "GET",
                                       client._path_prefix + _path(session_id) + "/archive",
                                       b"", audience=await client.audience())
                await client.download(_path(session_id) + "/archive", headers, sink, limit)
            await asyncio.to_thread(extract_checked, part, files, folder)
        finally:
            part.unlink(missing_ok=True)

    async def drop(self, session_id: str) -> dict:
        """Ask the provider to delete the session's kept results now."""
        s = self.manager.get(session_id)
        manifest = check_manifest(await _signed_json(self.manager.client(s.provider_url),
                                                     "DELETE", _path(s.id)),
                                  self.manager.results_max_mb << 20)
        return self._record(s.id, kept_until=None, provider_state=manifest["state"])

    # while it runs: "save results now"

    async def save_now(self, session_id: str) -> dict:
        """Pull the files created or changed in a running session's workspace into its
        results folder now, each checked against its sha256 (the workspace client's)."""
        s = self.manager.get(session_id)
        if s.status not in ACTIVE:
            return await self.fetch(session_id)
        if s.status != "running":
            raise Conflict(f"session {session_id} is {s.status}")
        client = self.manager.client(s.provider_url)
        since = s.created_at - 60  # the renter's clock against the provider's: some slack
        answer = await client.gateway(s.id, s.access_token, "GET",
                                      f"walnut/fs/manifest/?since={since!r}")
        listed = answer.get("files") if isinstance(answer, dict) else None
        if not isinstance(listed, list):
            raise ResultsRefused("the session's workspace listing is not one")
        wanted = [f for f in listed if isinstance(f, dict) and
                  checked_path(f.get("path")) and not is_session_dir(f["path"])]
        manifest = check_manifest({"state": "saved", "files": [
            {k: f.get(k) for k in ("path", "size", "sha256")} for f in wanted]},
            self.manager.results_max_mb << 20)
        folder = self.folder(s)
        workspace = None if WorkspaceClient is None else WorkspaceClient(
            client, s.id, s.access_token, max_bytes=max(1, self.manager.results_max_mb << 20))
        for f in manifest["files"]:
            dest = folder.joinpath(*f["path"].split("/"))
            if workspace is not None:
                await workspace.pull(f["path"], dest)
            else:
                await _pull(client, s, f, dest)
        return self._record(s.id, state="saved_now", path=str(folder),
                            files=len(manifest["files"]), bytes=manifest["bytes"],
                            saved_now_at=time.time(), reason="saved while it runs; the "
                            "session's end brings the rest")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _pull(client: ProviderClient, s: RenterSession, entry: dict, dest: Path) -> None:
    """One workspace file to `dest`, renamed into place once its sha256 matched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name[:200]}.{secrets.token_hex(4)}.part")
    digest = hashlib.sha256()
    try:
        with open(part, "xb") as out:
            class Sink:
                def write(self, chunk: bytes) -> None:
                    digest.update(chunk)
                    out.write(chunk)

            await client.download(f"{gateway_path(s.id)}/walnut/fs/download/"
                                  f"{quote(entry['path'])}", token_auth(s.access_token),
                                  Sink(), entry["size"])
        if digest.hexdigest() != entry["sha256"]:
            raise ResultsRefused(f"{entry['path'][:100]!r}: its bytes do not match its sha256")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def _path(session_id: str) -> str:
    return f"{API}/sessions/{quote(session_id)}/results"


async def _signed_json(client: ProviderClient, method: str, path: str) -> Any:
    return await client._call(method, path)
