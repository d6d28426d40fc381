"""REST for files between this server and a session's workspace (issue #16), for the UI:

    POST /walnut/sessions/<sid>/push  {"path": local, "dest": workspace path}  -> 202 {"id", ...}
    POST /walnut/sessions/<sid>/pull  {"path": workspace path, "dest": local}  -> 202 {"id", ...}
    GET  /walnut/sessions/<sid>/transfers/<tid>  -> the transfer: state, progress, summary
    GET  /walnut/folder?folder=<dir> | ?folder_from_notebook=<nb>  -> what a launch would send

Local paths are relative to the server's root, as the file browser names them; the transfer
runs in the background (WorkspaceClient), its progress read by polling.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

from tornado import web

from ...common.errors import BadRequest, Conflict, NotFound
from ..store import ACTIVE
from ..workspace import MAX_TRANSFER_BYTES, Progress, WorkspaceClient
from ..workspace import sync as folder_sync
from ..workspace.paths import under_root
from .handlers import WalnutHandler, launch_folder

KEEP_S = 3600.0  # a finished transfer stays readable this long
_transfers: dict[str, dict] = {}


class TransferStartHandler(WalnutHandler):
    @web.authenticated
    async def post(self, session_id: str, direction: str) -> None:
        data = self.body()
        unknown = sorted(set(data) - {"path", "dest"})
        if unknown:
            raise BadRequest(f"unknown field: {unknown[0]}")
        session = self.walnut.get(session_id)
        if session.status not in ACTIVE:
            raise Conflict(f"session {session.id} is {session.status}")
        root = self.settings.get("server_root_dir", ".")
        path, dest = data.get("path"), data.get("dest", "")
        if not isinstance(path, str) or not isinstance(dest, str):
            raise BadRequest("path and dest must be strings")
        client = WorkspaceClient(self.walnut.client(session.provider_url), session.id,
                                 session.access_token, max_bytes=MAX_TRANSFER_BYTES)
        if direction == "push":
            local = under_root(root, path, "path")
            if not local.exists():
                raise NotFound(f"{path}: no such file or folder")
            work = lambda cb: client.push(local, dest, progress=cb)  # noqa: E731
        else:
            local = under_root(root, dest, "dest")
            work = lambda cb: client.pull(path, local, progress=cb)  # noqa: E731
        tid = "t-" + secrets.token_hex(8)
        record = {"id": tid, "session_id": session.id, "direction": direction, "path": path,
                  "dest": dest, "state": "running", "started_at": time.time(),
                  "progress": None, "result": None, "error": None}
        _forget_old()
        _transfers[tid] = record

        def seen(p: Progress) -> None:
            record["progress"] = {"done": p.done, "total": p.total, "file": p.file,
                                  "files": p.files, "path": p.path}

        async def run() -> None:
            try:
                result = await work(seen)
            except Exception as exc:  # the transfer's own failure, in words
                record.update(state="failed", error=getattr(exc, "message", None) or str(exc))
            else:
                record.update(state="done", result=result.public())
            record["ended_at"] = time.time()

        record["_task"] = asyncio.ensure_future(run())
        self.set_status(202)
        self.finish(json.dumps(public(record)))


class TransferHandler(WalnutHandler):
    @web.authenticated
    def get(self, session_id: str, tid: str) -> None:
        record = _transfers.get(tid)
        if record is None or record["session_id"] != session_id:
            raise NotFound(f"no transfer {tid!r} of session {session_id}")
        self.finish(json.dumps(public(record)))


def public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _forget_old() -> None:
    now = time.time()
    for tid in [t for t, r in _transfers.items()
                if r["state"] != "running" and now - r.get("ended_at", now) > KEEP_S]:
        _transfers.pop(tid, None)


class FolderPlanHandler(WalnutHandler):
    """What launching with a folder would send, before anything is paid: the files the
    ignore rules keep, their size, and the launch's cap (the launch form shows it)."""

    @web.authenticated
    async def get(self) -> None:
        data = {k: self.get_query_argument(k) for k in ("folder", "folder_from_notebook")
                if self.get_query_argument(k, None) is not None}
        path = launch_folder(self.settings.get("server_root_dir", "."), data)
        if path is None:
            raise BadRequest("give folder or folder_from_notebook")
        plan = await asyncio.to_thread(folder_sync.scan, path)
        cap = self.walnut.launch_folder_max_mb * 2**20
        root = under_root(self.settings.get("server_root_dir", "."), "", "folder")
        rel = path.relative_to(root).as_posix() if path != root else ""
        fits = plan.size <= cap
        self.finish(json.dumps({
            "folder": rel, "files": len(plan.files), "bytes": plan.size,
            "ignored": plan.ignored, "links": plan.links, "max_bytes": cap, "fits": fits,
            "text": f"{len(plan.files)} files, {folder_sync.human_bytes(plan.size)}"
                    + ("" if fits else f", over the {folder_sync.human_bytes(cap)} limit")}))


def workspace_handlers(sid: str) -> list[tuple[str, type]]:
    return [(r"/walnut/folder", FolderPlanHandler),
            (rf"/walnut/sessions/{sid}/(push|pull)", TransferStartHandler),
            (rf"/walnut/sessions/{sid}/transfers/(t-[0-9a-f]{{16}})", TransferHandler)]
