"""Nothing lost at the end (issue #16): before a session's gateway stops, for whatever reason,
the provider saves the files created or changed in its workspace since the session began and
keeps them for the renter for a stated grace period.

The renter fetches them (signed, results_http.py) from `/api/v1/sessions/<sid>/results`
(the manifest) and `.../results/archive` (the .tar.gz), or drops them early (DELETE).

The files come from the session's own gateway (`walnut/fs/manifest` and `walnut/fs/download`,
the workspace contract), which the renter's code controls: every name is checked, every file
is read up to the size its manifest gave and hashed, the whole save is capped in bytes
(`[results] max_mb`) and in time (`save_timeout_s`); past the deadline the session stops
anyway and the results say why they were not saved. The meter is off by then: the renter is
not billed for the save. States: saved | none (nothing changed) | failed | expired | deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import shutil
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tornado import httpclient

from ..common.protocol import token_auth
from ..common.result_paths import HEX64, checked_path, is_session_dir
from .config import ResultsPolicy

if TYPE_CHECKING:
    from .store import SessionRecord

log = logging.getLogger("walnut.provider.results")

MAX_MANIFEST_BYTES = 64 << 20  # 200,000 entries of the gateway's manifest, with room
KERNEL_STOP_S = 5.0  # each kernel's shutdown before the save, within the deadline


class _Refused(Exception):
    """One file left out; the message says why."""


# --- where results are kept ------------------------------------------------------------


class ResultStore:
    """`<state>/results/<sid>/`: manifest.json, and results.tar.gz while kept."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def dir(self, session_id: str) -> Path:
        return self.root / session_id

    def archive(self, session_id: str) -> Path:
        return self.dir(session_id) / "results.tar.gz"

    def read(self, session_id: str) -> dict | None:
        try:
            return json.loads((self.dir(session_id) / "manifest.json").read_text())
        except (OSError, ValueError):
            return None

    def write(self, session_id: str, manifest: dict) -> None:
        d = self.dir(session_id)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = d / "manifest.json.partial"
        tmp.write_text(json.dumps(manifest))
        tmp.replace(d / "manifest.json")  # never half a manifest

    def drop(self, session_id: str, state: str, reason: str) -> dict | None:
        """Delete the archive, keep the manifest saying why it is gone."""
        manifest = self.read(session_id)
        if manifest is None:
            return None
        self.archive(session_id).unlink(missing_ok=True)
        shutil.rmtree(self.dir(session_id) / "staging", ignore_errors=True)
        if manifest.get("state") == "saved":
            manifest.update(state=state, reason=reason)
            self.write(session_id, manifest)
        return manifest

    def expire_once(self, now: float | None = None) -> list[str]:
        """Delete results past their grace period; the ids expired."""
        now = time.time() if now is None else now
        gone = []
        for d in sorted(self.root.iterdir()) if self.root.exists() else []:
            manifest = self.read(d.name)
            if manifest is None or manifest.get("state") != "saved":
                continue
            if now >= float(manifest.get("kept_until") or 0):
                self.drop(d.name, "expired", "the grace period is over: the results were "
                                             "deleted")
                gone.append(d.name)
        return gone


# --- the save -------------------------------------------------------------------------


class ResultSaver:
    """Saves one ending session's workspace changes, bounded in bytes and time."""

    def __init__(self, store: ResultStore, policy: ResultsPolicy) -> None:
        self.store = store
        self.policy = policy

    async def save(self, rec: SessionRecord) -> dict:
        """The results' manifest, as recorded; never raises, never runs past the deadline
        (plus packing what arrived, which is the provider's own work)."""
        started = time.time()
        base = {"session_id": rec.id, "files": [], "left_out": [], "bytes": 0,
                "max_bytes": self.policy.max_bytes, "saved_at": started, "kept_until": None}
        if not self.policy.max_mb or not self.policy.keep_hours:
            return self._record(rec.id, {**base, "state": "none",
                                         "reason": "this node does not keep results"})
        if not rec.gateway_url:
            return self._record(rec.id, {**base, "state": "failed", "reason":
                                         "results not saved: the session never ran"})
        staging = self.store.dir(rec.id) / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True, mode=0o700)
        fetch = _Fetch(rec, self.policy, staging)
        try:
            await asyncio.wait_for(fetch.run(), self.policy.save_timeout_s)
        except TimeoutError:
            fetch.timed_out()
        except Exception as exc:  # the gateway's answer was not one: nothing more to fetch
            fetch.failure = f"results not saved: {exc}"
        manifest = {**base, **fetch.outcome()}
        if manifest["files"]:
            try:
                size = await asyncio.to_thread(_pack, staging, manifest["files"],
                                               self.store.archive(rec.id))
            except OSError as exc:
                log.error("session %s: packing its results failed: %s", rec.id, exc)
                manifest.update(state="failed", files=[], bytes=0,
                                reason="results not saved: the provider could not write them")
            else:
                manifest.update(archive_bytes=size,
                                kept_until=time.time() + self.policy.keep_hours * 3600)
        shutil.rmtree(staging, ignore_errors=True)
        return self._record(rec.id, manifest)

    def unsaved(self, rec: SessionRecord, reason: str) -> dict:
        """A session that ended without a gateway to save from."""
        return self._record(rec.id, {"session_id": rec.id, "state": "failed", "reason": reason,
                                     "files": [], "left_out": [], "bytes": 0,
                                     "max_bytes": self.policy.max_bytes,
                                     "saved_at": time.time(), "kept_until": None})

    def _record(self, session_id: str, manifest: dict) -> dict:
        try:
            self.store.write(session_id, manifest)
        except OSError as exc:
            log.error("session %s: results manifest not written: %s", session_id, exc)
        log.info("session %s results: %s (%d files, %d bytes)%s", session_id,
                 manifest["state"], len(manifest["files"]), manifest["bytes"],
                 f": {manifest['reason']}" if manifest.get("reason") else "")
        return manifest


class _Fetch:
    """The files of one session, from its gateway into `staging`."""

    def __init__(self, rec: SessionRecord, policy: ResultsPolicy, staging: Path) -> None:
        self.url = rec.gateway_url.rstrip("/")
        self.headers = token_auth(rec.gateway_token)
        self.since = rec.created_at
        self.policy = policy
        self.staging = staging
        self.files: list[dict] = []
        self.left_out: list[dict] = []
        self.pending: list[dict] = []  # chosen, not fetched yet
        self.listed = False
        self.truncated = False
        self.failure = ""
        self.http = httpclient.AsyncHTTPClient(
            force_instance=True, max_body_size=max(policy.max_bytes, MAX_MANIFEST_BYTES) + 1)

    async def run(self) -> None:
        try:
            await self._stop_kernels()
            chosen = self._choose(await self._manifest())
            self.listed = True
            self.pending = list(chosen)
            for entry in chosen:
                try:
                    await self._download(entry)
                    self.files.append({k: entry[k] for k in ("path", "size", "sha256")})
                except _Refused as exc:
                    self.left_out.append({"path": entry["path"], "size": entry["size"],
                                          "reason": str(exc)})
                self.pending.remove(entry)
        finally:
            self.http.close()

    def timed_out(self) -> None:
        why = f"not saved within the {self.policy.save_timeout_s} s the provider allows"
        if not self.listed:
            self.failure = ("results not saved: the session's workspace did not answer within "
                            f"{self.policy.save_timeout_s} s")
        for entry in self.pending:
            self.left_out.append({"path": entry["path"], "size": entry["size"], "reason": why})
        self.pending = []

    def outcome(self) -> dict:
        total = sum(f["size"] for f in self.files)
        if self.failure and not self.files:
            state, reason = "failed", self.failure
        elif self.files:
            state, reason = "saved", self.failure
        else:
            state = "none" if not self.left_out else "failed"
            reason = ("no file was created or changed in the workspace" if state == "none"
                      else "results not saved: every changed file was left out")
        if self.truncated and state != "failed":
            reason = (reason + "; " if reason else "") + "the workspace lists more files " \
                "than one manifest holds: some were not considered"
        return {"state": state, "reason": reason, "files": self.files,
                "left_out": self.left_out[:10_000], "bytes": total}

    # --- the gateway --------------------------------------------------------------

    async def _get(self, path: str, **kwargs: Any) -> httpclient.HTTPResponse:
        request = httpclient.HTTPRequest(self.url + "/" + path, headers=self.headers,
                                         connect_timeout=10,
                                         request_timeout=float(self.policy.save_timeout_s),
                                         follow_redirects=False, **kwargs)
        try:
            return await self.http.fetch(request, raise_error=False)
        except (OSError, ValueError, httpclient.HTTPClientError) as exc:
            raise ConnectionError(f"the session's gateway is not reachable ({exc})") from exc

    async def _stop_kernels(self) -> None:
        """The renter's code stops first: its files stay put while they are read, and it
        gets no free compute while the meter is off."""
        try:
            resp = await asyncio.wait_for(self._get("api/kernels"), KERNEL_STOP_S)
            kernels = json.loads(resp.body) if resp.code == 200 else []
            ids = [k["id"] for k in kernels if isinstance(k, dict) and
                   isinstance(k.get("id"), str) and re.fullmatch(r"[0-9a-f-]{1,64}", k["id"])]
        except (TimeoutError, ConnectionError, ValueError, TypeError):
            return  # the save itself says whether the gateway answers
        for kid in ids[:64]:
            request = httpclient.HTTPRequest(f"{self.url}/api/kernels/{kid}", method="DELETE",
                                             headers=self.headers, request_timeout=KERNEL_STOP_S)
            try:
                await self.http.fetch(request, raise_error=False)
            except (OSError, ValueError, httpclient.HTTPClientError):
                pass

    async def _manifest(self) -> list:
        resp = await self._get(f"walnut/fs/manifest/?since={self.since!r}")
        if resp.code != 200:
            raise ValueError(f"the session's workspace listing failed (HTTP {resp.code})")
        if len(resp.body) > MAX_MANIFEST_BYTES:
            raise ValueError("the session's workspace listing is too large")
        data = json.loads(resp.body)
        if not isinstance(data, dict) or not isinstance(data.get("files"), list):
            raise ValueError("the session's workspace listing is not one")
        self.truncated = data.get("truncated") is True
        return data["files"][:200_000]

    def _choose(self, listed: list) -> list[dict]:
        """Well-formed entries outside the session's machinery, newest first, while the cap
        allows; the others are left out, saying why."""
        entries, seen = [], set()
        for raw in listed:
            if not isinstance(raw, dict):
                continue
            path = checked_path(raw.get("path"))
            size, mtime, digest = raw.get("size"), raw.get("mtime"), raw.get("sha256")
            if path is None:
                self.left_out.append({"path": repr(raw.get("path"))[:200], "size": 0,
                                      "reason": "a name results may not have"})
                continue
            if path in seen or is_session_dir(path):
                continue
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or \
                    not isinstance(mtime, int | float) or not isinstance(digest, str) or \
                    not HEX64.match(digest):
                self.left_out.append({"path": path, "size": 0,
                                      "reason": "the workspace listed it without a size "
                                                "or hash"})
                continue
            seen.add(path)
            entries.append({"path": path, "size": size, "mtime": float(mtime),
                            "sha256": digest})
        entries.sort(key=lambda e: (-e["mtime"], e["path"]))
        room, chosen = self.policy.max_bytes, []
        for e in entries:
            if e["size"] > room:
                self.left_out.append({"path": e["path"], "size": e["size"], "reason":
                                      f"over the {self.policy.max_mb} MiB the provider keeps"})
                continue
            room -= e["size"]
            chosen.append(e)
        return chosen

    async def _download(self, entry: dict) -> None:
        dest = self.staging / f"{len(self.files):07d}"  # files[i] is staged as i
        digest, written, grew = hashlib.sha256(), 0, False
        out = open(dest, "wb")  # noqa: SIM115 - closed below, fed by the callback

        def feed(chunk: bytes) -> None:
            nonlocal written, grew
            written += len(chunk)
            if written > entry["size"]:
                grew = True
                raise OSError("more bytes than the workspace listed")  # ends the read
            digest.update(chunk)
            out.write(chunk)

        try:
            resp = await self._get("walnut/fs/download/" + quote(entry["path"]),
                                   streaming_callback=feed)
        except ConnectionError:
            if not grew:
                raise
            resp = None
        finally:
            out.close()
        if grew:
            raise _Refused("it grew while it was saved")
        if resp.code != 200:
            raise _Refused(f"the workspace did not serve it (HTTP {resp.code})")
        if written != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise _Refused("it changed while it was saved")


def _pack(staging: Path, files: list[dict], archive: Path) -> int:
    """The staged files as one .tar.gz under their checked names; its size."""
    partial = archive.with_name(archive.name + ".partial")
    now = int(time.time())
    with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
        for i, f in enumerate(files):
            info = tarfile.TarInfo(f["path"])
            info.size, info.mode, info.mtime = f["size"], 0o644, now
            with open(staging / f"{i:07d}", "rb") as fh:
                tar.addfile(info, fh)
    partial.replace(archive)
    return archive.stat().st_size
