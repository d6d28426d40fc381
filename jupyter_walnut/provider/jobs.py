"""Batch jobs on the provider: run a renter's notebook or script inside one of its sessions
without the renter connected, report progress, and sign a digest of the results.

    POST   /api/v1/sessions/<sid>/jobs                  submit (signed; files in the body)
    GET    /api/v1/sessions/<sid>/jobs                  the session's jobs (signed)
    GET    /api/v1/sessions/<sid>/jobs/<jid>            progress, cost, digest (signed)
    DELETE /api/v1/sessions/<sid>/jobs/<jid>            cancel (signed)
    GET    /api/v1/sessions/<sid>/jobs/<jid>/results    results as .tar.gz (signed)

The provider drives each job through a control kernel of the session (so it works for
every runtime): it writes the files into the session's workspace, starts the runner
(walnut_gateway/jobs.py, copied in) and polls its progress file. On the end it packs the
results, keeps them outside the session (a stopped session's workspace is wiped), signs
their digest with the node key and, when asked, stops the session.

Payment while the renter is away: the renter sends a ladder of pre-signed cumulative
vouchers up to the job's budget; the provider releases the smallest one that covers the
metered cost as the job runs, so the session never falls behind on payment and the
provider is overpaid by at most one step of the ladder.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
import time
import weakref
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..common import archive as result_archive
from ..common import digest as result_digest
from ..common.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from ..common.numbers import MAX_SECONDS, optional_int, parse_int
from ..common.protocol import API, JOB_ID_PATTERN, token_auth
from ..common.remote_kernel import KernelError, RemoteKernel
from ..common.sqlite_store import SQLiteStore
from ..ledger.vouchers import parse_voucher_fields
from .app import SESSION_ID, BaseHandler
from .sessions import SessionError
from .settlement import PaymentError

if TYPE_CHECKING:
    from .node import ProviderNode

log = logging.getLogger("walnut.provider.jobs")

JOB_ID = f"({JOB_ID_PATTERN})"
MAX_JOB_BODY = 12 * 1024 * 1024  # under the HTTP server's 16 MiB cap; base64 inflates 4/3
MAX_RESULT_BYTES = 256 * 1024 * 1024
MAX_VOUCHERS = 1024
TERMINAL = ("succeeded", "failed", "cancelled")
CHUNK = 6 * 1024 * 1024
CONTROL_OUTPUT_BYTES = 4 * CHUNK  # a control cell's output held by the provider (base64 4/3)


class JobStore(SQLiteStore):
    """Jobs on disk (SQLite beside the provider's own store)."""

    schema = ("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, session_id TEXT,"
              " renter TEXT, status TEXT, data TEXT)")

    def put(self, job: dict) -> None:
        with self._db_locked():
            self._db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?)",
                             (job["id"], job["session_id"], job["renter"], job["status"],
                              json.dumps(job)))

    def get(self, job_id: str) -> dict | None:
        with self._db_locked():
            row = self._db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def for_session(self, session_id: str) -> list[dict]:
        with self._db_locked():
            rows = self._db.execute("SELECT data FROM jobs WHERE session_id = ? ORDER BY rowid",
                                    (session_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def unfinished(self) -> list[dict]:
        with self._db_locked():
            rows = self._db.execute("SELECT data FROM jobs WHERE status NOT IN "
                                    "('succeeded', 'failed', 'cancelled')").fetchall()
        return [json.loads(r[0]) for r in rows]


def _safe_path(name: object) -> str:
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise BadRequest(f"files: bad path {name!r}")
    p = PurePosixPath(name)
    if not p.parts or p.is_absolute() or ".." in p.parts or p.parts[0] in (".walnut", "outputs"):
        raise BadRequest(f"files: path {name!r} must be relative, inside the job, and not "
                         "under .walnut/ or outputs/")
    return p.as_posix()


def parse_submission(body: Any) -> dict:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    allowed = {"kind", "entry", "files", "attempt", "cell_timeout_s", "stop_session",
               "vouchers", "name"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field: {unknown[0]}")
    kind = body.get("kind")
    if kind not in ("notebook", "script"):
        raise BadRequest("kind: must be 'notebook' or 'script'")
    files = body.get("files")
    if not isinstance(files, dict) or not files:
        raise BadRequest("files: an object of path -> base64 content is required")
    decoded = {}
    for name, data in files.items():
        try:
            decoded[_safe_path(name)] = base64.b64decode(data, validate=True)
        # non-ASCII text is a ValueError, not a binascii.Error
        except (binascii.Error, TypeError, ValueError) as exc:
            raise BadRequest(f"files: {name!r} is not base64") from exc
    entry = body.get("entry")
    if not isinstance(entry, str) or entry not in decoded:
        raise BadRequest("entry: must name one of the files")
    attempt = optional_int(body, "attempt", 1, minimum=1, maximum=10**6)
    timeout = optional_int(body, "cell_timeout_s", minimum=1, maximum=MAX_SECONDS)
    vouchers = body.get("vouchers", [])
    if not isinstance(vouchers, list) or len(vouchers) > MAX_VOUCHERS:
        raise BadRequest(f"vouchers: at most {MAX_VOUCHERS} vouchers (amount_mist, "
                         "signature)")
    # kept as [amount, signature hex]: the job's own record, released by _pay
    vouchers = [[amount, signature.hex()] for amount, signature in
                (parse_voucher_fields(v, "vouchers: ") for v in vouchers)]
    stop_session = body.get("stop_session", True)
    if not isinstance(stop_session, bool):
        raise BadRequest("stop_session: must be true or false")
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise BadRequest("name: must be a string")
    return {"kind": kind, "entry": entry, "files": decoded, "attempt": attempt,
            "cell_timeout_s": timeout, "stop_session": stop_session,
            "vouchers": sorted(vouchers), "name": (name or entry)[:200]}


class JobService:
    def __init__(self, node: ProviderNode) -> None:
        self.node = node
        self.dir = node.state_dir / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = JobStore(self.dir / "jobs.sqlite")
        self.poll_interval_s = 0.3
        self._tasks: dict[str, asyncio.Task] = {}
        self._cancel: set[str] = set()
        for job in self.store.unfinished():  # their driver died with the last process
            self._finish(job, "failed", "the provider restarted during the job", True)

    # --- API -------------------------------------------------------------------------------

    def submit(self, session_id: str, renter: str, sub: dict) -> dict:
        rec = self.node.sessions.owned(session_id, renter)
        if rec.status != "running":
            raise Conflict(f"session is {rec.status}")
        busy = [j for j in self.store.for_session(session_id) if j["status"] not in TERMINAL]
        if busy:
            raise Conflict(f"session already runs job {busy[0]['id']}")
        job = {"id": "j-" + secrets.token_hex(8), "session_id": session_id, "renter": renter,
               "status": "starting", "kind": sub["kind"], "entry": sub["entry"],
               "name": sub["name"], "attempt": sub["attempt"],
               "cell_timeout_s": sub["cell_timeout_s"], "stop_session": sub["stop_session"],
               "vouchers": sub["vouchers"], "created_at": time.time(), "started_at": None,
               "ended_at": None, "cell": 0, "cells": 0, "error": "", "retryable": False,
               "metrics": {}, "digest": None, "outputs_digest": None, "signature": None,
               "result_bytes": 0, "input_bytes": sum(len(b) for b in sub["files"].values())}
        self.store.put(job)
        task = asyncio.ensure_future(self._drive(job["id"], sub["files"]))
        self._tasks[job["id"]] = task
        task.add_done_callback(lambda _: self._tasks.pop(job["id"], None))
        return job

    def owned(self, session_id: str, job_id: str, renter: str) -> dict:
        self.node.sessions.owned(session_id, renter)
        job = self.store.get(job_id)
        if job is None or job["session_id"] != session_id:
            raise NotFound(f"no job {job_id!r}")
        return job

    def public(self, job: dict) -> dict:
        out = {k: v for k, v in job.items() if k not in ("vouchers", "renter")}
        rec = self.node.sessions.store.get(job["session_id"])
        if rec is not None:
            out.update(cost_mist=rec.cost_mist, session_status=rec.status,
                       session_reason=rec.reason, paid_mist=rec.voucher_mist)
        end = job["ended_at"] or time.time()
        out["elapsed_s"] = round(end - job["started_at"], 3) if job["started_at"] else 0.0
        return out

    def cancel(self, job_id: str) -> None:
        self._cancel.add(job_id)

    def results_path(self, job_id: str) -> Path:
        return self.dir / job_id / "results.tar.gz"

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        self.store.close()

    # --- the driver ------------------------------------------------------------------------

    def _update(self, job_id: str, **changes: Any) -> dict:
        job = self.store.get(job_id)
        job.update(changes)
        self.store.put(job)
        return job

    def _finish(self, job: dict, status: str, error: str = "", retryable: bool = False
                ) -> None:
        self._update(job["id"], status=status, error=error, retryable=retryable,
                     ended_at=time.time())

    async def _drive(self, job_id: str, files: dict[str, bytes]) -> None:
        job = self.store.get(job_id)
        rec = self.node.sessions.store.get(job["session_id"])
        kernel = RemoteKernel(rec.gateway_url, token_auth(rec.gateway_token),
                              timeout=60)
        kernel.max_output_bytes = CONTROL_OUTPUT_BYTES  # renter code can print in it too
        jobdir = f"walnut-jobs/{job_id}"
        end = ("failed", "the provider shut down", True)
        try:
            await kernel.start()
            await self._upload(kernel, jobdir, job, files)
            self._update(job_id, status="running", started_at=time.time())
            final = await self._follow(kernel, jobdir, job_id)
            end = (final["status"], final["error"], final["retryable"])
            if final["collect"]:
                self._update(job_id, status="collecting")
                await self._collect(kernel, jobdir, job_id)
                self._sign(job_id, final["status"])
        except (KernelError, SessionError, OSError) as exc:
            rec = self.node.sessions.store.get(job["session_id"])
            end = (("failed", f"session {rec.status}: {rec.reason}", not _budget_end(rec.reason))
                   if rec.status != "running" else ("failed", str(exc), True))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must still end the job, with a clear state
            log.exception("job %s driver failed", job_id)
            end = ("failed", f"provider error: {exc}", True)
        finally:
            # the session stops before the job reads as ended: an ended job's cost is final
            try:
                await self._wrap_up(kernel, self.store.get(job_id))
            finally:
                self._finish(self.store.get(job_id), *end)

    async def _upload(self, kernel: RemoteKernel, jobdir: str, job: dict,
                      files: dict[str, bytes]) -> None:
        runner = resources.files("walnut_gateway").joinpath("jobs.py").read_bytes()
        meta = json.dumps({"id": job["id"], "kind": job["kind"], "entry": job["entry"],
                           "attempt": job["attempt"],
                           "cell_timeout_s": job["cell_timeout_s"]}).encode()
        await _run(kernel, _WRITER)
        for name, data in [*files.items(), (".walnut/job.json", meta),
                           (".walnut/runner.py", runner)]:
            for off in range(0, max(len(data), 1), CHUNK):
                chunk = base64.b64encode(data[off:off + CHUNK]).decode()
                await _run(kernel, f"_walnut_write({jobdir + '/' + name!r}, {chunk!r}, "
                                   f"{off > 0})")
        await _run(kernel, _STARTER + f"_walnut_start({job['id']!r}, {jobdir!r})")

    async def _follow(self, kernel: RemoteKernel, jobdir: str, job_id: str) -> dict:
        while True:
            out = await _run(kernel, f"_walnut_progress({job_id!r}, {jobdir!r})")
            state = json.loads(out.strip().splitlines()[-1])
            progress = state["progress"] or {}
            self._update(job_id, cell=progress.get("cell", 0), cells=progress.get("cells", 0),
                         metrics=progress.get("metrics") or {})
            rec = self.node.sessions.store.get(self.store.get(job_id)["session_id"])
            self._pay(self.store.get(job_id), rec)
            if rec.status != "running":
                return {"status": "failed", "error": f"session {rec.status}: {rec.reason}",
                        "retryable": not _budget_end(rec.reason), "collect": False}
            if not state["alive"]:
                st = progress.get("state", "running")
                if st == "running":  # the runner itself was killed
                    return {"status": "failed", "error": "the job runner died",
                            "retryable": True, "collect": True}
                return {"status": "cancelled" if job_id in self._cancel else st,
                        "error": progress.get("error", ""),
                        "retryable": bool(progress.get("retryable")), "collect": True}
            if job_id in self._cancel:
                await _run(kernel, f"_walnut_jobs[{job_id!r}].terminate()")
            await asyncio.sleep(self.poll_interval_s)  # polling a process in the session

    async def _collect(self, kernel: RemoteKernel, jobdir: str, job_id: str) -> None:
        size = int((await _run(kernel, _PACKER + f"_walnut_pack({jobdir!r})")).split()[-1])
        if size > MAX_RESULT_BYTES:
            raise KernelError(f"results are {size} bytes, over the {MAX_RESULT_BYTES} limit")
        data = bytearray()
        while len(data) < size:
            out = await _run(kernel, f"_walnut_read({jobdir!r}, {len(data)}, {CHUNK})")
            data += base64.b64decode(out.strip())
        self.results_path(job_id).parent.mkdir(parents=True, exist_ok=True)
        self.results_path(job_id).write_bytes(bytes(data))
        try:  # the renter's code made this archive: the same caps as the renter applies
            await asyncio.to_thread(result_archive.extract, self.results_path(job_id),
                                    self.dir / job_id / "results")
        except result_archive.ArchiveError as exc:
            raise KernelError(f"results refused: {exc}") from exc
        self._update(job_id, result_bytes=size)

    def _sign(self, job_id: str, status: str) -> None:
        job = self.store.get(job_id)
        results = self.dir / job_id / "results"
        d = result_digest.ResultDigest.of(results)
        sig = result_digest.sign(self.node.identity, job_id, job["session_id"], status, d)
        self._update(job_id, digest=d.digest, outputs_digest=d.outputs_digest, signature=sig)

    def _pay(self, job: dict, rec) -> None:
        """Release the smallest pre-signed voucher that covers the metered cost."""
        paid = rec.voucher_mist
        if not job["vouchers"] or rec.cost_mist <= paid:
            return
        covering = [v for v in job["vouchers"] if v[0] >= rec.cost_mist]
        amount, sig = covering[0] if covering else job["vouchers"][-1]
        if amount <= paid:
            return
        try:
            self.node.sessions.record_voucher(rec.id, job["renter"], amount, bytes.fromhex(sig))
        except (SessionError, PaymentError) as exc:
            log.info("job %s: voucher for %d MIST not taken: %s", job["id"], amount,
                     exc.message)

    async def _wrap_up(self, kernel: RemoteKernel, job: dict) -> None:
        await kernel.shutdown()
        rec = self.node.sessions.store.get(job["session_id"])
        if job["stop_session"] and rec.status == "running":
            rec = await self.node.sessions.stop(rec.id, reason=f"job {job['id']} {job['status']}")
        self._pay(job, self.node.sessions.store.get(rec.id))  # the final metered second


def _budget_end(reason: str) -> bool:
    return any(s in reason for s in ("maximum duration", "deposit is used up"))


async def _run(kernel: RemoteKernel, code: str) -> str:
    result = await kernel.execute(code, store_history=False, timeout=120)
    if result.status != "ok":
        err = result.error or {}
        raise KernelError(f"control kernel: {err.get('ename')}: {err.get('evalue')}")
    return result.stdout


_WRITER = """
import base64 as _b64, os as _os
def _walnut_write(path, data, append):
    _os.makedirs(_os.path.dirname(path), exist_ok=True)
    with open(path, "ab" if append else "wb") as fh:
        fh.write(_b64.b64decode(data))
"""

_STARTER = """
import json as _json, subprocess as _sp, sys as _sys
_walnut_jobs = globals().get("_walnut_jobs", {})
def _walnut_start(job_id, jobdir):
    log = open(_os.path.join(jobdir, ".walnut", "runner.log"), "wb")
    _walnut_jobs[job_id] = _sp.Popen([_sys.executable, _os.path.join(jobdir, ".walnut",
        "runner.py"), jobdir], stdout=log, stderr=_sp.STDOUT, stdin=_sp.DEVNULL)
def _walnut_progress(job_id, jobdir):
    path = _os.path.join(jobdir, ".walnut", "progress.json")
    try:
        with open(path) as fh:
            progress = _json.load(fh)
    except (OSError, ValueError):
        progress = None
    print(_json.dumps({"progress": progress, "alive": _walnut_jobs[job_id].poll() is None}))
"""

_PACKER = """
import tarfile as _tarfile
def _walnut_pack(jobdir):
    meta = _os.path.join(jobdir, ".walnut")
    path = _os.path.join(meta, "results.tar.gz")
    with _tarfile.open(path, "w:gz") as tar:
        tar.add(_os.path.join(jobdir, "outputs"), arcname="outputs")
        for name in ("executed.ipynb", "stdout.txt", "stderr.txt", "metrics.json"):
            if _os.path.exists(_os.path.join(meta, name)):
                tar.add(_os.path.join(meta, name), arcname=name)
    print(_os.path.getsize(path))
def _walnut_read(jobdir, offset, size):
    with open(_os.path.join(jobdir, ".walnut", "results.tar.gz"), "rb") as fh:
        fh.seek(offset)
        print(_b64.b64encode(fh.read(size)).decode())
"""

# --- HTTP handlers --------------------------------------------------------------------------

_services: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def service(node: ProviderNode) -> JobService:
    """The node's job service, made on first use (no change to the node's own start)."""
    svc = _services.get(node)
    if svc is None:
        svc = _services[node] = JobService(node)
    return svc


class JobsHandler(BaseHandler):
    def prepare(self) -> None:
        self._t0 = time.perf_counter()
        length = parse_int(self.request.headers.get("Content-Length") or "0", "Content-Length")
        if max(length, len(self.request.body or b"")) > MAX_JOB_BODY:
            raise PayloadTooLarge(f"job over {MAX_JOB_BODY} bytes: send fewer or smaller files")

    def post(self, session_id: str) -> None:
        renter, _ = self.renter()
        sub = parse_submission(self.json_body())
        svc = service(self.node)
        job = svc.submit(session_id, renter, sub)
        self.write_json(svc.public(job), status=201)

    def get(self, session_id: str) -> None:
        renter, _ = self.renter()
        self.node.sessions.owned(session_id, renter)
        svc = service(self.node)
        self.write_json({"jobs": [svc.public(j) for j in svc.store.for_session(session_id)]})


class JobHandler(BaseHandler):
    def get(self, session_id: str, job_id: str) -> None:
        renter, _ = self.renter()
        svc = service(self.node)
        self.write_json(svc.public(svc.owned(session_id, job_id, renter)))

    def delete(self, session_id: str, job_id: str) -> None:
        renter, _ = self.renter()
        svc = service(self.node)
        job = svc.owned(session_id, job_id, renter)
        if job["status"] not in TERMINAL:
            svc.cancel(job_id)
        self.write_json(svc.public(svc.store.get(job_id)))


class JobResultsHandler(BaseHandler):
    def get(self, session_id: str, job_id: str) -> None:
        renter, _ = self.renter()
        svc = service(self.node)
        job = svc.owned(session_id, job_id, renter)
        path = svc.results_path(job_id)
        if job["status"] not in TERMINAL or not path.exists():
            raise Conflict(f"job {job_id} has no results yet ({job['status']})")
        self.set_header("Content-Type", "application/gzip")
        self.finish(path.read_bytes())


def routes() -> list[tuple[str, type]]:
    base = rf"{API}/sessions/{SESSION_ID}/jobs"
    return [(base, JobsHandler), (rf"{base}/{JOB_ID}", JobHandler),
            (rf"{base}/{JOB_ID}/results", JobResultsHandler)]
